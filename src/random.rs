//! Random identifiers and secrets from the operating system's CSPRNG.

/// RFC 4648 base32 alphabet (used for access key ids, which AWS writes in upper case).
pub const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Base64 alphabet without padding.
pub const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `len` characters drawn uniformly from `alphabet`, whose size must be a power of two (so that
/// masking a random byte introduces no bias).
pub fn string(alphabet: &[u8], len: usize) -> Result<String, getrandom::Error> {
    debug_assert!(alphabet.len().is_power_of_two() && alphabet.len() <= 256);
    let mask = alphabet.len() - 1;
    let mut bytes = vec![0_u8; len];
    getrandom::fill(&mut bytes)?;
    Ok(bytes
        .into_iter()
        .map(|b| char::from(alphabet[usize::from(b) & mask]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_have_the_length_and_alphabet_asked_for() {
        let s = string(BASE32, 100).expect("os rng");
        assert_eq!(s.len(), 100);
        assert!(s.bytes().all(|b| BASE32.contains(&b)));
        assert_ne!(string(BASE64, 40).ok(), string(BASE64, 40).ok());
    }
}

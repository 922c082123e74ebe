//! Any `x-auth-token` value: verification never panics and never accepts a token that was not
//! signed with the secret (the fuzzer does not know it).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stsgate::auth::Verifier;
use stsgate::config::AuthConfig;
use stsgate::secret::Secret;

fn verifier() -> &'static (Verifier, tokio::runtime::Runtime) {
    static V: OnceLock<(Verifier, tokio::runtime::Runtime)> = OnceLock::new();
    V.get_or_init(|| {
        let secret = Secret::new("fuzz-secret-that-the-input-cannot-know-0123456789");
        let verifier = Verifier::new(&secret, &AuthConfig::default()).expect("verifier");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        (verifier, runtime)
    })
}

fuzz_target!(|token: &str| {
    let (verifier, runtime) = verifier();
    let result = runtime.block_on(verifier.verify(token));
    assert!(result.is_err(), "a token the fuzzer forged was accepted: {token:?}");
});

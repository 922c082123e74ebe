//! Who asked for a credential: the principal both fronts hand to the gateway, its limits and its
//! audit log.

/// Who asked.
#[derive(Clone, Copy, Debug)]
pub enum Requester<'a> {
    /// A dock, by gateway serial number.
    Device(&'a str),
    /// Pilot 2, by token subject.
    Token(&'a str),
}

// === impl Requester ===

impl Requester<'_> {
    /// The front such a requester comes through (a metrics label).
    pub const fn front(self) -> &'static str {
        match self {
            Self::Device(_) => "mqtt",
            Self::Token(_) => "http",
        }
    }
}

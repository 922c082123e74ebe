//! The vocabulary every layer shares — workspace ids, scopes and the prefix template, the
//! provider kinds, the readiness flag — at the bottom of the house: this module imports nothing
//! of the service above `protocol` (wire enums) and `std`, so any module may use it and none of
//! its users pulls the rest of the service in.

mod device;
mod provider;
mod readiness;
mod requester;
mod scope;

pub use device::{DeviceKey, MAX_DEVICE_KEY_LEN, Principal};
pub use provider::{ProviderKind, UnknownProvider};
pub use readiness::Readiness;
pub use requester::Requester;
pub use scope::{
    MAX_WORKSPACE_LEN, PrefixError, PrefixTemplate, Scope, WorkspaceError, WorkspaceId,
};

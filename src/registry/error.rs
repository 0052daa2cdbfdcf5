//! The registry's errors: typed variants callers (the API) match on.

use crate::ipam::IpamError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists {detail}")]
    AlreadyExists {
        kind: &'static str,
        name: String,
        detail: String,
    },
    /// An object the request names does not exist (yet), or holds no addresses yet (a pending
    /// VIP, `detail` says why); the same request may succeed once it does. gRPC
    /// FAILED_PRECONDITION, reason `REFERENCE_NOT_FOUND`.
    #[error("{kind} {name} {detail}")]
    ReferenceNotFound {
        kind: &'static str,
        name: String,
        detail: String,
    },
    /// The object is used by another object (`user`, e.g. "pod default/web-0"), which must let go
    /// of it first. gRPC FAILED_PRECONDITION, reason `IN_USE`.
    #[error("{kind} {name} is in use by {user}")]
    InUse {
        kind: &'static str,
        name: String,
        user: String,
    },
    /// An address or MAC the request asks for belongs to another owner. gRPC FAILED_PRECONDITION,
    /// reason `ADDRESS_TAKEN`.
    #[error("{0}")]
    AddressTaken(String),
    /// Any other state that makes the request impossible as it stands. gRPC FAILED_PRECONDITION,
    /// reason `FAILED_PRECONDITION`.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// The request carried a revision (`field`) that is no longer the object's: someone changed
    /// it since the caller read it. Nothing changed. gRPC ABORTED (read again, then retry).
    #[error(
        "{field}: {object} is at revision {current}, not {expected} as read: it changed since; read it again and retry"
    )]
    Aborted {
        field: String,
        object: String,
        expected: u64,
        current: u64,
    },
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
    pub fn reference_not_found(kind: &'static str, name: &str) -> RegistryError {
        RegistryError::ReferenceNotFound {
            kind,
            name: name.to_string(),
            detail: "does not exist".into(),
        }
    }

    /// The named object exists but holds no addresses yet (`why`): answered like a missing one.
    pub fn reference_not_ready(kind: &'static str, name: &str, why: &str) -> RegistryError {
        RegistryError::ReferenceNotFound {
            kind,
            name: name.to_string(),
            detail: format!("has no addresses yet ({why})"),
        }
    }

    pub fn not_found(kind: &'static str, name: &str) -> RegistryError {
        RegistryError::NotFound {
            kind,
            name: name.to_string(),
        }
    }

    /// Maps an allocation refusal to what the caller did wrong.
    pub fn from_ipam(error: IpamError, subnet: &str) -> RegistryError {
        match &error {
            IpamError::SubnetFull { .. } => RegistryError::Exhausted(format!("subnet {subnet}: {error}")),
            IpamError::AddressInUse { .. } | IpamError::MacInUse { .. } | IpamError::OwnerHasDifferentAllocation => {
                RegistryError::AddressTaken(format!("subnet {subnet}: {error}"))
            }
            IpamError::InvalidMac { .. } => RegistryError::InvalidArgument {
                field: "mac_address".into(),
                message: error.to_string(),
            },
            _ => RegistryError::InvalidArgument {
                field: error.field().into(),
                message: format!("subnet {subnet}: {error}"),
            },
        }
    }

    /// Maps a refused subnet definition.
    pub fn from_ipam_subnet(error: IpamError) -> RegistryError {
        RegistryError::InvalidArgument {
            field: error.field().into(),
            message: error.to_string(),
        }
    }
}

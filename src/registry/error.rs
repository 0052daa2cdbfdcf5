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
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    Exhausted(String),
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RegistryError {
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
                RegistryError::FailedPrecondition(format!("subnet {subnet}: {error}"))
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

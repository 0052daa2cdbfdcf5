//! The one table from errors to gRPC status codes, and field violations for malformed input.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::registry::RegistryError;
use crate::store::StoreError;

/// Collects everything wrong with a request, so one answer names every bad field.
#[derive(Debug, Default)]
pub struct Violations {
    items: Vec<(String, String)>,
}

impl Violations {
    pub fn new() -> Violations {
        Violations::default()
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.items.push((field.into(), description.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// `Ok(())` when nothing was wrong, else INVALID_ARGUMENT with google.rpc.BadRequest details.
    pub fn into_result(self) -> Result<(), Status> {
        if self.items.is_empty() {
            return Ok(());
        }
        let message = self
            .items
            .iter()
            .map(|(field, description)| format!("{field}: {description}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut details = ErrorDetails::new();
        for (field, description) in &self.items {
            details.add_bad_request_violation(field.clone(), description.clone());
        }
        Err(Status::with_error_details(Code::InvalidArgument, message, details))
    }
}

/// The `google.rpc.ErrorInfo` domain of every reason this API gives.
pub const ERROR_DOMAIN: &str = "ovnvip.v1";

/// A FAILED_PRECONDITION whose `google.rpc.ErrorInfo` reason tells a client what kind it is
/// (AIP-193): `REFERENCE_NOT_FOUND` may succeed later, `IN_USE` and `ADDRESS_TAKEN` need another
/// object to let go first.
fn failed_precondition(reason: &str, message: String) -> Status {
    let details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
    Status::with_error_details(Code::FailedPrecondition, message, details)
}

impl From<RegistryError> for Status {
    fn from(error: RegistryError) -> Status {
        let message = error.to_string();
        match error {
            RegistryError::NotFound { .. } => Status::not_found(message),
            RegistryError::AlreadyExists { .. } => Status::already_exists(message),
            RegistryError::ReferenceNotFound { .. } => failed_precondition("REFERENCE_NOT_FOUND", message),
            RegistryError::InUse { .. } => failed_precondition("IN_USE", message),
            RegistryError::AddressTaken(_) => failed_precondition("ADDRESS_TAKEN", message),
            RegistryError::FailedPrecondition(_) => failed_precondition("FAILED_PRECONDITION", message),
            RegistryError::InvalidArgument {
                field,
                message: description,
            } => {
                let mut violations = Violations::new();
                violations.add(field, description);
                violations
                    .into_result()
                    .err()
                    .unwrap_or_else(|| Status::invalid_argument(message))
            }
            RegistryError::Exhausted(_) => Status::resource_exhausted(message),
            RegistryError::Corrupt(_) => Status::internal(message),
            // Lost or unreadable records cannot be fixed by retrying; a store that cannot write
            // or flush right now may recover.
            RegistryError::Store(StoreError::Corrupt(_)) => Status::data_loss(message),
            RegistryError::Store(
                StoreError::Encode(_) | StoreError::NewerVersion { .. } | StoreError::Migration { .. },
            ) => Status::internal(message),
            RegistryError::Store(StoreError::Sled(_) | StoreError::FlusherGone | StoreError::ClusterCommit(_)) => {
                Status::unavailable(message)
            }
        }
    }
}

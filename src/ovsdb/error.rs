//! The errors of the OVSDB layer. Callers match on the variants: a transaction error carries
//! OVSDB's own `error` and `details`, a schema mismatch names the table or column.

use std::time::Duration;

/// One failed operation of a `transact`, as OVSDB reported it (RFC 7047 §4.1.3).
#[derive(Debug, Clone, PartialEq)]
pub struct TransactionError {
    /// Index of the failed operation; equal to the number of operations for a commit-time failure.
    pub index: usize,
    /// OVSDB's error string, e.g. `constraint violation` or `referential integrity violation`.
    pub error: String,
    /// OVSDB's `details`, when it gave any.
    pub details: Option<String>,
}

impl std::fmt::Display for TransactionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "operation {}: {}", self.index, self.error)?;
        if let Some(details) = &self.details {
            write!(f, ": {details}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OvsdbError {
    #[error("invalid OVSDB remote {remote:?}: {reason}")]
    InvalidRemote { remote: String, reason: String },
    #[error("cannot connect to {remote}: {source}")]
    Connect {
        remote: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("I/O error on OVSDB connection: {0}")]
    Io(#[from] std::io::Error),
    /// The connection closed while the request was in flight: it may or may not have taken effect.
    #[error("OVSDB connection closed")]
    Disconnected,
    /// The connection had closed before the request could be sent: it certainly took no effect.
    #[error("OVSDB connection closed before the request was sent")]
    NotSent,
    #[error("OVSDB connection lost: {0}")]
    ConnectionLost(String),
    #[error("OVSDB protocol error: {0}")]
    Protocol(String),
    #[error("OVSDB server refused {method}: {error}")]
    Rpc { method: String, error: String },
    #[error("OVSDB transaction failed: {0}")]
    Transaction(TransactionError),
    #[error("OVSDB schema mismatch: {0}")]
    SchemaMismatch(String),
    #[error("OVSDB request timed out after {0:?}")]
    Timeout(Duration),
    #[error("OVSDB server is not the cluster leader")]
    NotLeader,
    #[error("OVSDB client is shut down")]
    Shutdown,
}

impl OvsdbError {}

//! Which daemon writes NB: exactly one, the holder of the OVSDB lock [`LOCK_NAME`] on NB
//! (RFC 7047 §4.1.8). Every NB transaction the holder sends starts with an `assert` of that lock
//! (§5.2.10), so a daemon that lost it (paused, partitioned, stolen) has its writes refused by
//! the server. A daemon without the lock is a standby: it writes nothing to NB, reports
//! `NOT_SERVING` for the overall gRPC health service and `ovn_vipd_active 0`, serves reads, and
//! answers mutating calls with `UNAVAILABLE` (and the active's address in the response metadata
//! key [`ACTIVE_METADATA_KEY`] when it is known). See ARCHITECTURE.md, "One active daemon".

/// The OVSDB lock on NB that makes a daemon active (`ovn-northd` uses `ovn_northd` the same way).
pub const LOCK_NAME: &str = "ovn_vipd";

/// gRPC response metadata key naming the active daemon's address, on `UNAVAILABLE` answers of a
/// standby, when the standby knows it.
pub const ACTIVE_METADATA_KEY: &str = "ovn-vipd-active";

/// The daemon's part, published by the sync controller through a `tokio::sync::watch` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// NB not reached yet (or the connection, and with it the lock, was lost): nothing is written
    /// to NB; the API accepts changes into the local store as during any NB outage.
    #[default]
    Unknown,
    /// Holds the lock: the only daemon writing NB.
    Active,
    /// Connected to NB, another session holds the lock: writes nothing, refuses mutations.
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

/// A receiver of the daemon's role (for the API and the metrics).
pub type RoleWatch = tokio::sync::watch::Receiver<Role>;

/// Clustered mode: the gRPC address of the active daemon as the cluster database's `Active` row
/// names it (`None` when unknown: standalone, or no row yet). Process-wide: one daemon per process.
static ACTIVE_ADDRESS: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);

/// Records the active daemon's address (the mirror of the cluster database calls it).
pub fn set_active_address(address: Option<String>) {
    match ACTIVE_ADDRESS.write() {
        Ok(mut guard) => *guard = address,
        Err(poisoned) => *poisoned.into_inner() = address,
    }
}

/// The active daemon's address, when known (for the `ovn-vipd-active` metadata of a standby).
pub fn active_address() -> Option<String> {
    match ACTIVE_ADDRESS.read() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

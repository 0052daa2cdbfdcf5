//! # ovn-vipd
//!
//! Reserves IP addresses (VIPs) for OVN networks and keeps the OVN Northbound database in line
//! with them.
//!
//! # Layout
//! - [`ipam`]: address and MAC allocation; pure logic, no I/O.
//! - [`model`]: domain types (subnets, VIPs, pods, switch-LB rules).
//! - [`store`]: the durable sled store; the only module that knows keys and encodings.
//! - [`registry`]: the single writer of desired state: IPAM + in-memory maps + store, changed
//!   together, acknowledged only when durable.
//! - [`ovsdb`]: the RFC 7047 client (framing, data model, connection, cache, reconnecting
//!   client). The only module that speaks JSON-RPC.
//! - [`nb`]: typed OVN Northbound rows and the tables and columns the daemon depends on.
//! - [`api`]: the gRPC API (tonic): request validation, the one error-to-status table, the
//!   services over the registry, listeners with reflection and health. The only module that knows
//!   protobuf types on the server side.
//! - [`reconcile`]: the NB sync: desired rows computed from the registry, diffed against the NB
//!   cache, the difference sent; status written back.
//! - [`client`]: how `vipctl` and `ovn-vipd-cni` reach the daemons (unix/TCP, TLS/mTLS, a list
//!   of daemons with failover on `UNAVAILABLE`).
//! - [`cli`]: `vipctl`, the command-line client of the API (Kube-OVN manifests, tables).
//! - [`config`]: the daemon's settings from flags, `OVN_VIPD_*` variables and a TOML file.
//! - [`telemetry`]: logging, Prometheus metrics, the gRPC span/metrics layer, systemd notify.
//! - [`check`]: `ovn-vipd check`: store, IPAM and NB compared, and what is safe repaired.
//! - [`cni`]: `ovn-vipd-cni`, the CNI plugin: binds pods through the API and builds their veth
//!   and OVS port.
//! - [`cluster`]: clustered mode: the `OVN_VIPD` cluster database as the shared store (lock,
//!   epoch fencing, group commit) and each daemon's sled replica of it.
//! - [`daemon`]: wiring for the `ovn-vipd` binary: open the store, connect, shut down.
//!
//! Binaries in `src/bin/` only parse flags, set up tracing and call into this crate.

// No unwrap()/expect() outside tests: a panic in a daemon or a plugin is an outage (clippy denies both).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod check;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod cni;
pub mod config;
pub mod daemon;
pub mod ipam;
pub mod model;
pub mod nb;
pub mod ovsdb;
pub mod reconcile;
pub mod registry;
pub mod role;
pub mod store;
pub mod telemetry;

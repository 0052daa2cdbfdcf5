//! # ovn-vipd
//!
//! Reserves IP addresses (VIPs) for OVN networks and keeps the OVN Northbound database in line
//! with them.
//!
//! # Layout
//! - [`ovsdb`]: the RFC 7047 client (framing, data model, connection, cache, reconnecting
//!   client). The only module that speaks JSON-RPC.
//! - [`nb`]: typed OVN Northbound rows and the tables and columns the daemon depends on.
//! - [`daemon`]: wiring for the `ovn-vipd` binary: connect, keep the cache in sync, shut down.
//!
//! Binaries in `src/bin/` only parse flags, set up tracing and call into this crate.

pub mod daemon;
pub mod nb;
pub mod ovsdb;

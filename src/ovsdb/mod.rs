//! An RFC 7047 OVSDB client: the only module that speaks JSON-RPC.
//!
//! - [`codec`] frames concatenated JSON values on a byte stream;
//! - [`value`], [`schema`] and [`operation`] are the data model, schemas and `transact` operations;
//! - [`remote`] parses OVN remotes and opens unix, TCP and TLS transports;
//! - [`connection`] is one session: request/reply matching, `echo` both ways, notifications;
//! - [`row`] is a row: sorted `(column, value)` pairs, column names interned;
//! - [`cache`] replicates monitored tables from `update2`/`update3`;
//! - [`client`] is the long-lived client: leader-aware reconnects, monitor resumption, events.
//!
//! It knows nothing of OVN: typed NB rows live in `crate::nb`.

pub mod cache;
pub mod client;
pub mod codec;
pub mod connection;
pub mod error;
pub mod operation;
pub mod remote;
pub mod row;
pub mod schema;
pub mod value;

pub use cache::{Cache, IndexSpec, RowChange};
pub use client::{Backoff, Client, ClientConfig, ClientEvent, ConnectionState, ReplicaSeed, ReplicaUpdate};
pub use connection::{Connection, ConnectionOptions, Notification, Notifications};
pub use error::{OvsdbError, TransactionError};
pub use operation::{Condition, Function, Mutation, Mutator, Operation, OperationResult, Row, WaitUntil};
pub use remote::{Remote, TlsFiles};
pub use row::Column;
pub use schema::{ColumnType, DatabaseSchema};
pub use value::{Atom, AtomMap, AtomSet, Value};

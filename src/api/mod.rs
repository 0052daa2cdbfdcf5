//! The gRPC API (tonic): the only module that knows protobuf types. Requests are validated and
//! converted to domain types at the boundary (`convert`), served by the registry, and errors are
//! mapped to status codes in one place (`error`).

pub mod convert;
pub mod error;
pub mod paging;
pub mod proto;
pub mod server;
mod services;
pub mod update;
mod watch;

pub use crate::config::Listen;
pub use server::{serve, ServeOptions};

//! The wire protocol: envelope, ids, reason codes and request bodies. Serde only: no I/O.

pub mod codes;
mod envelope;
pub mod ids;
mod requests;
pub mod strict_json;
pub mod trace;

pub use codes::Code;
pub use envelope::{Data, Envelope, Failure};
pub use requests::{ActionBody, PreflightBody};

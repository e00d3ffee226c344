//! The wire protocol: envelope, ids and reason codes. Serde only: no I/O.

pub mod codes;
mod envelope;
pub mod ids;

pub use codes::Code;
pub use envelope::{Envelope, Failure};

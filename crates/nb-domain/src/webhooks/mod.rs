//! Webhooks (Standard Webhooks): endpoints an account registers, the events of its
//! generations delivered to them from a durable outbox, signed with the endpoint's secret.
//!
//! The outbox row of an event is written by the repository in the same transaction as the
//! generation's outcome; any instance's deliverer takes due rows under a lease, signs and
//! sends them ([`service`]), and records each attempt. Delivery is at least once: a receiver
//! deduplicates by `webhook-id`.

pub mod address;
pub mod model;
pub mod ports;
pub mod service;
pub mod signing;

pub use address::*;
pub use model::*;
pub use ports::*;
pub use service::*;
pub use signing::*;

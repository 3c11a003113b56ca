//! Asynchronous generations: a job is committed before its submitter is answered, then run by
//! any instance's workers, which take it from the shared queue under a lease ([`model`],
//! [`ports`], [`service`]).
//!
//! A job's generation row exists from the submission on (`queued`, then `running`, then
//! `succeeded`, `failed` or `canceled`); the job row beside it holds what running it needs
//! and who holds it. Finishing a job — the generation's outcome, its usage, its reservation
//! settled, the job row removed — is one transaction that commits only while the worker
//! still holds the lease: a job taken again after its lease ran out is finished by exactly
//! one worker, and its image is counted once.

pub mod model;
pub mod ports;
pub mod service;

pub use model::*;
pub use ports::*;
pub use service::*;

//! What every generating route does around its work, native and OpenAI alike: the per-minute
//! limits ([`throttle`]), `Idempotency-Key` ([`idempotency`]), dry runs ([`dry_run`]), `Prefer: respond-async` ([`prefer`]), and
//! counting and timing the outcome ([`outcome`]). Each route parses its own request and shapes its own answer; this
//! is the flow they share, so neither borrows from the other.

pub mod dry_run;
pub mod idempotency;
pub mod outcome;
pub mod prefer;
pub mod throttle;

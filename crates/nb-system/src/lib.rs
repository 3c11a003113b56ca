//! Adapters of the process itself: what the domain's ports need from this machine and this
//! process rather than from a server — the clock, ids, randomness, password hashing (bcrypt,
//! CPU work on the blocking pool), and per-minute limits counted in this process's memory
//! (one instance: SQLite, or `NB_RATE_LIMITS=memory`).
//!
//! They are one crate because they share a property the other adapters do not: no network
//! and no configuration beyond a number or two, so every other crate's tests can use the
//! real ones.

mod machine;
mod memory_rate_limiter;
mod password;
mod sealer;

pub use machine::{OsRandom, SystemClock, UuidV7Ids};
pub use memory_rate_limiter::{MAX_SUBJECTS_PER_COUNTER, MemoryRateLimiter};
pub use password::{BCRYPT_COSTS, BcryptPasswordHasher, DEFAULT_BCRYPT_COST};
pub use sealer::XChaChaSealer;

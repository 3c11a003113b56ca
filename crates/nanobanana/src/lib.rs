//! NanoBanana's composition root: the only crate that knows every other. It reads the typed
//! configuration ([`config`]), builds each adapter from its settings and wires them into the
//! domain's services ([`wiring`]), runs the work the server does on its own
//! ([`background`]), sets up logging ([`telemetry`]), and binds, serves and shuts down
//! ([`startup`]). The `nanobanana` binary is `main.rs`; the integration tests of the real
//! binary live in `tests/`.

pub mod background;
pub mod config;
pub mod error;
pub mod startup;
pub mod telemetry;
pub mod wiring;

//! NanoBanana's inbound HTTP adapter: an actix-web app that parses requests into domain
//! values, calls the domain's services, and maps their answers and errors to HTTP — the
//! native API, the OpenAI-compatible surface, the console's assets and the OpenAPI
//! document.
//!
//! It knows the domain only: services and ports arrive as trait objects in [`AppState`],
//! built by the composition root (the `nanobanana` crate). An adapter's failure reaches it
//! as a domain error, mapped to HTTP in [`error`] and nowhere else.
//!
//! Inside this crate, code imports a name from the module that defines it: the module graph
//! has no cycles (`crates/nanobanana/tests/architecture.rs` checks).

pub mod app;
pub mod body_budget;
pub mod client_address;
pub mod console;
pub mod error;
pub mod extract;
pub mod generation_flow;
pub mod headers;
pub mod metrics;
pub mod middleware;
pub mod money;
pub mod openai;
pub mod openapi;
pub mod routes;
pub mod settings;
pub mod state;
pub mod tokens;
pub mod views;

pub use actix_web::dev::Server;
pub use app::{configure_app, serve};
pub use state::AppState;

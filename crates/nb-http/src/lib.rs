//! NanoBanana's HTTP face: an actix-web app that parses requests, calls the domain services
//! and maps their results to JSON. Wiring of adapters to ports happens in [`startup`].

pub mod auth;
pub mod background;
pub mod body_timeout;
pub mod config;
pub mod console;
pub mod error;
pub mod idempotency;
pub mod json;
pub mod metrics;
pub mod openai;
pub mod quota_headers;
pub mod rate_limit;
pub mod request_context;
pub mod routes;
pub mod security_headers;
pub mod startup;
pub mod state;
pub mod system;
pub mod telemetry;

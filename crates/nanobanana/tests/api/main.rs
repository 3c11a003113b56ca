//! End-to-end tests of the HTTP API: real sockets, real databases (PostgreSQL and SQLite).

#![allow(clippy::unwrap_used)] // Tests fail loudly by design.

mod accounts;
mod api_keys;
mod catalog;
mod conversation;
mod errors;
mod fake_google;
mod fallbacks;
mod generate;
mod hardening;
mod helpers;
mod jobs;
mod money;
mod openai;
mod openapi;
mod operations;
mod records;
mod spend_control;
mod upstream_keys;
mod vertex;
mod webhooks;

//! End-to-end tests of the HTTP API: real sockets, real databases (PostgreSQL and SQLite).

mod accounts;
mod api_keys;
mod errors;
mod helpers;

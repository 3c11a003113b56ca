//! What wraps every request: its id, span, log line and metrics, and the idle timeout on its
//! body ([`request_context`], [`body_timeout`]); the security headers on every answer
//! ([`security_headers`]).

pub mod body_timeout;
pub mod request_context;
pub mod security_headers;

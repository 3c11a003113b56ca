//! Extractors: what a handler receives already checked — the caller ([`credentials`]), a
//! JSON body ([`json`]), a page of a listing ([`query`]).

pub mod credentials;
pub mod json;
pub mod query;

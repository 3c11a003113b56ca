//! How a setting outside what is accepted is reported, by every adapter's settings and by
//! the domain's own: the field it is in (within its section) and why. The configuration then
//! names it as the operator wrote it (its environment variable, or its key in the file).

/// One setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} {reason}")]
pub struct InvalidSetting {
    /// The field, as its section names it (`attempt_timeout_seconds`).
    pub key: &'static str,
    /// What is accepted (`must be at least 1`).
    pub reason: String,
}

impl InvalidSetting {
    pub fn new(key: &'static str, reason: impl Into<String>) -> Self {
        Self {
            key,
            reason: reason.into(),
        }
    }
}

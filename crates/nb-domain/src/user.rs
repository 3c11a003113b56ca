//! Accounts: who a user is and how they prove it.

use std::fmt;

use time::OffsetDateTime;
use uuid::Uuid;

/// A user's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub Uuid);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The longest address SMTP can carry (RFC 5321 path limit less the brackets).
const MAX_EMAIL_LENGTH: usize = 254;

/// A syntactically valid, normalised (trimmed, lower-case) email address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("email must be a valid address such as name@example.com")]
pub struct InvalidEmail;

/// The one normal form of an email as typed: trimmed and lower-cased. Two spellings of an
/// address are the same account exactly when their normal forms are equal.
pub fn normalise_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

impl EmailAddress {
    /// Normalises `raw` (see [`normalise_email`]), then checks it against RFC 5322's address
    /// syntax.
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        let normalised = normalise_email(raw);
        // A domain without a dot (`a@localhost`) is legal syntax but never a deliverable
        // address for a public service, so it is refused with the rest.
        let has_dotted_domain = normalised
            .rsplit_once('@')
            .is_some_and(|(_, domain)| domain.contains('.') && !domain.ends_with('.'));
        if normalised.len() > MAX_EMAIL_LENGTH
            || !has_dotted_domain
            || !email_address::EmailAddress::is_valid(&normalised)
        {
            return Err(InvalidEmail);
        }
        Ok(Self(normalised))
    }

    /// Rebuilds an address read back from storage, where it was stored already normalised.
    pub fn from_trusted(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const MIN_PASSWORD_CHARS: usize = 8;
pub const MAX_PASSWORD_CHARS: usize = 128;

/// A plaintext password. Its `Debug` never shows the text.
#[derive(Clone)]
pub struct Password(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password must be between {MIN_PASSWORD_CHARS} and {MAX_PASSWORD_CHARS} characters long")]
pub struct InvalidPassword;

impl Password {
    /// A password chosen at registration: 8 to 128 characters (Unicode scalar values).
    pub fn parse_new(raw: String) -> Result<Self, InvalidPassword> {
        let chars = raw.chars().count();
        if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
            Ok(Self(raw))
        } else {
            Err(InvalidPassword)
        }
    }

    /// A password typed at login: not checked against the policy, because a wrong password
    /// of any shape is simply a failed login.
    pub fn attempt(raw: String) -> Self {
        Self(raw)
    }

    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

/// A password hash in the hasher's own self-describing format (bcrypt's `$2b$...`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    pub fn new(encoded: String) -> Self {
        Self(encoded)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

/// A registered user, as shown to that user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: EmailAddress,
    pub created_at: OffsetDateTime,
}

/// A user with the hash their password is checked against.
#[derive(Debug, Clone)]
pub struct UserCredentials {
    pub user: User,
    pub password_hash: PasswordHash,
}

/// What registration asks a repository to store.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub user: User,
    pub password_hash: PasswordHash,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        let email = EmailAddress::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "ada.lovelace@example.com");
    }

    #[test]
    fn malformed_emails_are_refused() {
        for raw in [
            "",
            "   ",
            "no-at-sign",
            "a@",
            "@example.com",
            "a@b@c.com",
            "a b@c.com",
            "a@localhost",
        ] {
            assert_eq!(EmailAddress::parse(raw), Err(InvalidEmail), "{raw:?}");
        }
        let too_long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(EmailAddress::parse(&too_long), Err(InvalidEmail));
    }

    #[test]
    fn password_length_is_counted_in_characters() {
        assert!(Password::parse_new("1234567".into()).is_err());
        assert!(Password::parse_new("12345678".into()).is_ok());
        assert!(Password::parse_new("é".repeat(128)).is_ok());
        assert!(Password::parse_new("é".repeat(129)).is_err());
    }

    #[test]
    fn password_debug_never_shows_the_text() {
        let password = Password::parse_new("correct horse battery".into()).unwrap();
        assert!(!format!("{password:?}").contains("horse"));
        let hash = PasswordHash::new("$2b$12$abcdefghijklmnopqrstuv".into());
        assert!(!format!("{hash:?}").contains("abcdef"));
    }
}

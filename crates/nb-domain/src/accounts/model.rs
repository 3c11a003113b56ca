//! Accounts: who a user is and how they prove it.

use std::fmt;

use time::OffsetDateTime;
use uuid::Uuid;

use unicode_security::MixedScript;
use unicode_security::confusable_detection::skeleton;

use crate::text::has_hidden_characters;

/// A user's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub Uuid);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The longest address SMTP can carry (RFC 5321 path limit less the brackets), in bytes.
const MAX_EMAIL_LENGTH: usize = 254;

/// A syntactically valid email address in its one normal form (see [`EmailAddress::parse`]):
/// two spellings of an address are one account exactly when their normal forms are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("email must be a valid address such as name@example.com")]
pub struct InvalidEmail;

/// Top-level domains that no mailbox can be at (RFC 2606, RFC 6761): refused at
/// registration. The second-level `example.com`, `.net` and `.org` stay allowed (tests and
/// demos use them); tombstones of erased accounts live under `.invalid`, so no one can
/// register one.
pub const RESERVED_TOP_LEVEL_DOMAINS: [&str; 4] = ["invalid", "test", "example", "localhost"];

impl EmailAddress {
    /// Trims `raw`, refuses control and invisible characters (zero-width, bidirectional),
    /// normalises it to Unicode NFKC, lower-cases the local part, writes the domain in its
    /// ASCII (IDNA) form, and checks the result: at most 254 bytes, RFC 5322 syntax, a dotted
    /// domain. A quoted local part (`"<b>x</b>"@example.com`) is refused, and so is a local
    /// part or a domain label that mixes scripts (a Cyrillic `а` in a Latin name: UTS #39's
    /// single-script test, digits and punctuation being common to every script). Anything too
    /// long to be an address is refused before any of that work.
    pub fn parse(raw: &str) -> Result<Self, InvalidEmail> {
        use unicode_normalization::UnicodeNormalization;
        let trimmed = raw.trim();
        // NFKC can expand a character into several; four times the limit is ample room.
        if trimmed.len() > 4 * MAX_EMAIL_LENGTH || has_hidden_characters(trimmed) {
            return Err(InvalidEmail);
        }
        let composed: String = trimmed.nfkc().collect();
        let (local, domain) = composed.rsplit_once('@').ok_or(InvalidEmail)?;
        let (unicode_domain, _) = idna::domain_to_unicode(domain);
        let mixes_scripts = !local.is_single_script()
            || unicode_domain
                .split('.')
                .any(|label| !label.is_single_script());
        if local.starts_with('"') || mixes_scripts {
            return Err(InvalidEmail);
        }
        let domain = idna::domain_to_ascii(domain).map_err(|_| InvalidEmail)?;
        let normalised = format!("{}@{domain}", local.to_lowercase());
        // A domain without a dot (`a@localhost`) is legal syntax but never a deliverable
        // address for a public service, so it is refused with the rest.
        let has_dotted_domain = domain.contains('.') && !domain.ends_with('.');
        if normalised.len() > MAX_EMAIL_LENGTH
            || !has_dotted_domain
            || has_hidden_characters(&normalised)
            || !email_address::EmailAddress::is_valid(&normalised)
        {
            return Err(InvalidEmail);
        }
        Ok(Self(normalised))
    }

    /// Whether its top-level domain is one no mailbox can be at (see
    /// [`RESERVED_TOP_LEVEL_DOMAINS`]).
    pub fn is_at_a_reserved_domain(&self) -> bool {
        let top_level = self.0.rsplit('.').next().unwrap_or_default();
        RESERVED_TOP_LEVEL_DOMAINS.contains(&top_level)
    }

    /// What the address looks like (UTS #39's confusable skeleton of its Unicode form): two
    /// addresses that a person reading them cannot tell apart have the same skeleton
    /// (`admın@` with a dotless ı, and `admin@`).
    pub fn skeleton(&self) -> String {
        let (local, domain) = self.0.rsplit_once('@').unwrap_or((&self.0, ""));
        let (domain, _) = idna::domain_to_unicode(domain);
        skeleton(&format!("{local}@{domain}")).collect()
    }

    /// What an erased account's email becomes: an address at `.invalid`, which no one can
    /// register (see [`RESERVED_TOP_LEVEL_DOMAINS`]), unique by the account and a fresh
    /// `nonce` (so not even an address registered before that rule can be in its way).
    pub fn tombstone(user: UserId, nonce: Uuid) -> Self {
        Self(format!("deleted-{user}-{}@deleted.invalid", nonce.simple()))
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
    /// Set by an operator: the account's tokens and keys are refused.
    pub disabled: bool,
}

/// A signed-in session: what an access token stands for. Ending it (logout, a password
/// change) ends the token, before its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub Uuid);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
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
    /// The account's quotas (the deployment's defaults for new accounts).
    pub limits: crate::quota::model::PeriodLimits,
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
    fn invisible_characters_are_refused_and_unicode_is_normalised() {
        for hidden in [
            "\u{200b}alice@example.com",
            "ali\u{200d}ce@example.com",
            "alice@exam\u{202e}ple.com",
            "alice\u{feff}@example.com",
        ] {
            assert_eq!(EmailAddress::parse(hidden), Err(InvalidEmail), "{hidden:?}");
        }
        // Fullwidth letters are NFKC-equal to ASCII ones: one account.
        assert_eq!(
            EmailAddress::parse("ａｌｉｃｅ@example.com")
                .unwrap()
                .as_str(),
            "alice@example.com"
        );
        // Internationalised domains compare in their ASCII form, whatever their case.
        let idn = EmailAddress::parse("bob@BÜCHER.example").unwrap();
        assert_eq!(idn.as_str(), "bob@xn--bcher-kva.example");
        assert_eq!(
            EmailAddress::parse("bob@xn--bcher-kva.example").unwrap(),
            idn
        );
    }

    #[test]
    fn very_long_input_is_refused_at_once() {
        assert_eq!(
            EmailAddress::parse(&format!("{}@example.com", "a".repeat(65_000))),
            Err(InvalidEmail)
        );
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

    #[test]
    fn quoted_local_parts_and_mixed_scripts_are_refused() {
        for refused in [
            "\"<b>x</b>\"@example.com",
            "\"ada\"@example.com",
            // A Cyrillic а (U+0430) in a Latin name, in the local part and in a domain label.
            "\u{430}da@example.com",
            "ada@ex\u{430}mple.com",
        ] {
            assert_eq!(EmailAddress::parse(refused), Err(InvalidEmail), "{refused}");
        }
        // One script each is fine, whatever the script; digits and punctuation go with any.
        for accepted in [
            "ada.lovelace+news_1@example.com",
            "\u{430}\u{434}\u{430}@\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}",
            "jos\u{e9}@b\u{fc}cher.de",
        ] {
            assert!(EmailAddress::parse(accepted).is_ok(), "{accepted}");
        }
    }

    #[test]
    fn reserved_top_level_domains_are_known_and_example_com_is_not_one() {
        let at = |email: &str| {
            EmailAddress::parse(email)
                .unwrap()
                .is_at_a_reserved_domain()
        };
        for reserved in [
            "x@deleted.invalid",
            "x@foo.test",
            "x@site.example",
            "x@my.localhost",
        ] {
            assert!(at(reserved), "{reserved}");
        }
        for allowed in [
            "x@example.com",
            "x@example.net",
            "x@example.org",
            "x@test.com",
        ] {
            assert!(!at(allowed), "{allowed}");
        }
    }

    #[test]
    fn look_alikes_share_a_skeleton() {
        let skeleton = |email: &str| EmailAddress::parse(email).unwrap().skeleton();
        // A dotless ı (U+0131) reads as an i.
        assert_eq!(
            skeleton("adm\u{131}n@example.com"),
            skeleton("admin@example.com")
        );
        assert_eq!(skeleton("rn@example.com"), skeleton("m@example.com"));
        assert_ne!(
            skeleton("admin2@example.com"),
            skeleton("admin@example.com")
        );
    }
}

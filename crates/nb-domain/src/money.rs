//! Money: what an image cost, kept exactly. An amount is a whole number of nano-dollars
//! (10⁻⁹ USD): a price of $0.001 per million tokens is one nano-dollar per token, so every
//! token price Google publishes (cents per million tokens) multiplies into whole units, and
//! sums never round. Amounts are shown as dollars with 6 decimals (`"0.067200"`), rounded
//! half up once, at the edge; they are never a float in storage or in a sum.

use std::fmt;

/// An amount of US dollars, in nano-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Usd(i64);

/// Nano-dollars in a dollar.
const NANOS_PER_USD: i64 = 1_000_000_000;
/// Nano-dollars in a micro-dollar (the last shown decimal).
const NANOS_PER_MICRO: i64 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUsd {
    #[error("must be an amount of US dollars, e.g. 50 or \"12.50\"")]
    NotAnAmount,
    #[error("must not be negative")]
    Negative,
    #[error("has more than 9 decimals")]
    TooPrecise,
    #[error("is too large")]
    TooLarge,
}

impl Usd {
    pub const ZERO: Self = Self(0);

    pub const fn from_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// A decimal string of dollars (`"0.067"`, `"12"`, `"1.5e-3"` is refused): at most 9
    /// decimals, not negative.
    pub fn parse(raw: &str) -> Result<Self, InvalidUsd> {
        let raw = raw.trim();
        if raw.starts_with('-') {
            return Err(InvalidUsd::Negative);
        }
        let (whole, fraction) = raw.split_once('.').unwrap_or((raw, ""));
        let digits = |text: &str| text.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
            return Err(InvalidUsd::NotAnAmount);
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > 9 {
            return Err(InvalidUsd::TooPrecise);
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| InvalidUsd::TooLarge)?
        };
        let fraction_nanos: i64 = format!("{fraction:0<9}")
            .parse()
            .map_err(|_| InvalidUsd::NotAnAmount)?;
        whole
            .checked_mul(NANOS_PER_USD)
            .and_then(|nanos| nanos.checked_add(fraction_nanos))
            .map(Self)
            .ok_or(InvalidUsd::TooLarge)
    }

    /// A JSON or TOML number of dollars: read through its shortest decimal spelling, so
    /// `0.067` is exactly 67,000,000 nano-dollars (never the binary float's neighbour).
    pub fn from_number(dollars: f64) -> Result<Self, InvalidUsd> {
        if !dollars.is_finite() {
            return Err(InvalidUsd::NotAnAmount);
        }
        if dollars < 0.0 {
            return Err(InvalidUsd::Negative);
        }
        let spelled = format!("{dollars}");
        if spelled.contains('e') {
            // Rust prints plain decimals for every finite f64 with `{}`; keep the guard.
            return Err(InvalidUsd::NotAnAmount);
        }
        Self::parse(&spelled)
    }

    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    pub fn saturating_add(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }

    pub fn saturating_mul(self, times: u64) -> Self {
        Self(
            self.0
                .saturating_mul(i64::try_from(times).unwrap_or(i64::MAX)),
        )
    }

    /// Dollars as a float, for a Prometheus counter only (never stored or summed here).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / NANOS_PER_USD as f64
    }
}

impl std::iter::Sum for Usd {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Self::saturating_add)
    }
}

/// Dollars with 6 decimals, rounded half up (away from zero): `"0.067200"`.
impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let nanos = self.0.unsigned_abs();
        let micros = (nanos + (NANOS_PER_MICRO as u64) / 2) / NANOS_PER_MICRO as u64;
        write!(f, "{sign}{}.{:06}", micros / 1_000_000, micros % 1_000_000)
    }
}

/// A price per token, in nano-dollars (a price per million tokens of $0.001 is 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct TokenPrice(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTokenPrice {
    #[error("must be dollars per million tokens, not negative, in steps of $0.001")]
    Unrepresentable,
}

impl TokenPrice {
    /// From dollars per million tokens (as Google's price list writes them): exact to
    /// $0.001 per million tokens, else refused (never silently rounded).
    pub fn per_million_tokens(dollars: f64) -> Result<Self, InvalidTokenPrice> {
        let per_million =
            Usd::from_number(dollars).map_err(|_| InvalidTokenPrice::Unrepresentable)?;
        if per_million.nanos() % 1_000_000 != 0 {
            return Err(InvalidTokenPrice::Unrepresentable);
        }
        Ok(Self(per_million.nanos() / 1_000_000))
    }

    /// What `tokens` cost at this price.
    pub fn times(self, tokens: u64) -> Usd {
        Usd(self
            .0
            .saturating_mul(i64::try_from(tokens).unwrap_or(i64::MAX)))
    }

    /// Dollars per million tokens, for display (`60.0`).
    pub fn per_million_usd(self) -> Usd {
        Usd(self.0.saturating_mul(1_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_shown_with_six_decimals_rounded_half_up() {
        assert_eq!(Usd::from_nanos(67_200_000).to_string(), "0.067200");
        assert_eq!(Usd::from_nanos(0).to_string(), "0.000000");
        assert_eq!(Usd::from_nanos(499).to_string(), "0.000000");
        assert_eq!(Usd::from_nanos(500).to_string(), "0.000001");
        assert_eq!(Usd::from_nanos(12_345_678_900).to_string(), "12.345679");
        assert_eq!(Usd::from_nanos(-1_500).to_string(), "-0.000002");
    }

    #[test]
    fn decimal_strings_and_numbers_are_read_exactly() {
        assert_eq!(Usd::parse("0.067"), Ok(Usd::from_nanos(67_000_000)));
        assert_eq!(Usd::parse("50"), Ok(Usd::from_nanos(50_000_000_000)));
        assert_eq!(Usd::parse("12.50"), Ok(Usd::from_nanos(12_500_000_000)));
        assert_eq!(Usd::parse(".5"), Ok(Usd::from_nanos(500_000_000)));
        assert_eq!(Usd::parse("0.000000001"), Ok(Usd::from_nanos(1)));
        assert_eq!(Usd::parse("0.0000000001"), Err(InvalidUsd::TooPrecise));
        assert_eq!(Usd::parse("-1"), Err(InvalidUsd::Negative));
        for bad in ["", ".", "1e3", "1,5", "abc", "1.2.3", " "] {
            assert_eq!(Usd::parse(bad), Err(InvalidUsd::NotAnAmount), "{bad:?}");
        }
        assert_eq!(Usd::parse("99999999999"), Err(InvalidUsd::TooLarge));
        assert_eq!(Usd::from_number(0.067), Ok(Usd::from_nanos(67_000_000)));
        // A float that is not a short decimal is refused, never rounded.
        assert_eq!(Usd::from_number(0.1 + 0.2), Err(InvalidUsd::TooPrecise));
        assert_eq!(Usd::from_number(f64::NAN), Err(InvalidUsd::NotAnAmount));
        assert_eq!(Usd::from_number(-0.5), Err(InvalidUsd::Negative));
    }

    #[test]
    fn token_prices_are_exact_to_a_tenth_of_a_cent_per_million() {
        let sixty = TokenPrice::per_million_tokens(60.0).unwrap();
        assert_eq!(sixty.times(1120), Usd::from_nanos(67_200_000));
        let half = TokenPrice::per_million_tokens(0.5).unwrap();
        assert_eq!(half.times(7), Usd::from_nanos(3_500));
        assert_eq!(
            TokenPrice::per_million_tokens(0.075).unwrap().times(1),
            Usd::from_nanos(75)
        );
        assert!(TokenPrice::per_million_tokens(0.0001).is_err());
        assert!(TokenPrice::per_million_tokens(-1.0).is_err());
        assert_eq!(sixty.per_million_usd().to_string(), "60.000000");
    }
}

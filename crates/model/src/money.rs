//! Exact money and measure values: [`Amount`] (元, 2 decimal places), [`Quantity`] and
//! [`UnitPrice`] (up to 8 decimal places), and the one rounding rule every amount goes through.
//!
//! Everything is `rust_decimal`; the crate forbids float arithmetic.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, Neg, Sub};
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Why a decimal value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecimalError {
    /// The text is not a plain decimal number (`-1234.56`; no exponent, no spaces, no grouping).
    #[error("`{text}` is not a plain decimal number such as 1234.56")]
    NotADecimal {
        /// The refused text.
        text: String,
    },
    /// More fractional digits than the value allows.
    #[error("`{text}` has more than {max} decimal places")]
    TooManyDecimalPlaces {
        /// The refused text.
        text: String,
        /// Decimal places allowed.
        max: u32,
    },
    /// The magnitude is beyond what an invoice can carry.
    #[error(
        "`{text}` is out of range (at most {max_integer_digits} digits before the decimal point)"
    )]
    OutOfRange {
        /// The refused text.
        text: String,
        /// Integer digits allowed.
        max_integer_digits: u32,
    },
    /// A negative value where only zero or more is allowed.
    #[error("`{text}` must not be negative")]
    Negative {
        /// The refused text.
        text: String,
    },
}

/// Rounds to fen (2 decimal places), half away from zero.
///
/// This is the only rounding rule for money in Fapiao: every computed amount and tax goes
/// through it (issue "foundation": "rounding half away from zero").
#[must_use]
pub fn round_fen(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Rounds a derived unit price to [`UnitPrice::MAX_DECIMAL_PLACES`] places, half away from zero.
#[must_use]
pub fn round_unit_price(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(
        UnitPrice::MAX_DECIMAL_PLACES,
        RoundingStrategy::MidpointAwayFromZero,
    )
}

/// Parses the strict decimal grammar `-?[0-9]+(\.[0-9]+)?`, checking scale and magnitude.
fn parse_decimal(
    text: &str,
    max_dp: u32,
    max_integer_digits: u32,
) -> Result<Decimal, DecimalError> {
    let not_decimal = || DecimalError::NotADecimal {
        text: text.to_owned(),
    };
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int_part) || frac_part.is_some_and(|f| !all_digits(f)) {
        return Err(not_decimal());
    }
    // Trailing zeros do not count as decimal places: "12.500" is 12.5.
    let significant_dp = frac_part.map_or(0, |f| f.trim_end_matches('0').len());
    if significant_dp > max_dp as usize {
        return Err(DecimalError::TooManyDecimalPlaces {
            text: text.to_owned(),
            max: max_dp,
        });
    }
    let int_digits = int_part.trim_start_matches('0').len();
    if int_digits > max_integer_digits as usize {
        return Err(DecimalError::OutOfRange {
            text: text.to_owned(),
            max_integer_digits,
        });
    }
    let value = Decimal::from_str(text).map_err(|_| not_decimal())?;
    Ok(value.normalize())
}

/// A sum of money in 元, exact to the fen (2 decimal places); may be negative (discount lines,
/// red invoices).
///
/// At most [`Amount::MAX_INTEGER_DIGITS`] digits before the decimal point, which is far beyond
/// any single invoice and keeps every sum and product inside `Decimal`'s 28 digits.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Amount(Decimal);

impl Amount {
    /// Digits allowed before the decimal point.
    pub const MAX_INTEGER_DIGITS: u32 = 13;
    /// Zero 元.
    pub const ZERO: Self = Self(Decimal::ZERO);

    /// Parses `1234.5`, `1234.50` or `-0.01`.
    ///
    /// # Errors
    /// [`DecimalError`] when the text is not a plain decimal, has more than 2 decimal places, or
    /// is out of range.
    pub fn parse(text: &str) -> Result<Self, DecimalError> {
        parse_decimal(text, 2, Self::MAX_INTEGER_DIGITS).map(Self::from_exact)
    }

    /// Rounds any decimal to the fen with [`round_fen`].
    #[must_use]
    pub fn from_rounded(value: Decimal) -> Self {
        Self::from_exact(round_fen(value))
    }

    /// The value; always scaled to exactly 2 decimal places.
    #[must_use]
    pub fn value(self) -> Decimal {
        self.0
    }

    /// Whether the amount is below zero.
    #[must_use]
    pub fn is_negative(self) -> bool {
        self.0.is_sign_negative() && !self.0.is_zero()
    }

    /// Whether the amount is zero.
    #[must_use]
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// The absolute value.
    #[must_use]
    pub fn abs(self) -> Self {
        Self(self.0.abs())
    }

    /// Whether the magnitude fits [`Amount::MAX_INTEGER_DIGITS`] (sums can outgrow it).
    #[must_use]
    pub fn in_range(self) -> bool {
        self.0.abs() < Decimal::from(10_u64.pow(Self::MAX_INTEGER_DIGITS))
    }

    fn from_exact(value: Decimal) -> Self {
        let mut v = value;
        v.rescale(2);
        // -0.00 prints as "-0.00"; money has no negative zero.
        if v.is_zero() {
            v.set_sign_positive(true);
        }
        Self(v)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2}", self.0)
    }
}

impl FromStr for Amount {
    type Err = DecimalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Amount {
    type Error = DecimalError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Amount> for String {
    fn from(a: Amount) -> Self {
        a.to_string()
    }
}

impl Add for Amount {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self::from_exact(self.0 + rhs.0)
    }
}

impl Sub for Amount {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self::from_exact(self.0 - rhs.0)
    }
}

impl Neg for Amount {
    type Output = Self;
    fn neg(self) -> Self {
        Self::from_exact(-self.0)
    }
}

impl Sum for Amount {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Self> for Amount {
    fn sum<I: Iterator<Item = &'a Self>>(iter: I) -> Self {
        iter.copied().sum()
    }
}

macro_rules! measure {
    ($(#[$doc:meta])* $name:ident, allow_negative = $neg:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Decimal);

        impl $name {
            /// Decimal places allowed.
            pub const MAX_DECIMAL_PLACES: u32 = 8;
            /// Digits allowed before the decimal point.
            pub const MAX_INTEGER_DIGITS: u32 = 12;

            /// Parses a plain decimal such as `2`, `0.5` or `15841.58415842`.
            ///
            /// # Errors
            /// [`DecimalError`] when the text is not a plain decimal, has more than 8 decimal
            /// places, is out of range, or is negative where that is not allowed.
            pub fn parse(text: &str) -> Result<Self, DecimalError> {
                let v = parse_decimal(text, Self::MAX_DECIMAL_PLACES, Self::MAX_INTEGER_DIGITS)?;
                if !$neg && v.is_sign_negative() && !v.is_zero() {
                    return Err(DecimalError::Negative { text: text.to_owned() });
                }
                Ok(Self(v))
            }

            /// Builds one from a computed decimal, rounding to 8 places (half away from zero).
            ///
            /// # Errors
            /// [`DecimalError`] when the value is out of range or negative where that is not allowed.
            pub fn from_decimal(value: Decimal) -> Result<Self, DecimalError> {
                Self::parse(&round_unit_price(value).normalize().to_string())
            }

            /// The value, normalised (no trailing zeros).
            #[must_use]
            pub fn value(self) -> Decimal {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = DecimalError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = DecimalError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> Self {
                v.to_string()
            }
        }
    };
}

measure!(
    /// A quantity (数量), up to 8 decimal places; negative only on red invoice lines.
    Quantity,
    allow_negative = true
);

measure!(
    /// A unit price (单价), up to 8 decimal places, never negative.
    UnitPrice,
    allow_negative = false
);

impl Neg for Quantity {
    type Output = Self;
    fn neg(self) -> Self {
        Self(-self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_to_two_places_and_print_them() {
        assert_eq!(Amount::parse("12").unwrap().to_string(), "12.00");
        assert_eq!(Amount::parse("12.5").unwrap().to_string(), "12.50");
        assert_eq!(Amount::parse("-0.01").unwrap().to_string(), "-0.01");
        assert_eq!(Amount::parse("12.500").unwrap().to_string(), "12.50");
        assert_eq!(Amount::parse("-0").unwrap().to_string(), "0.00");
    }

    #[test]
    fn amounts_refuse_extra_places_exponents_and_junk() {
        assert!(matches!(
            Amount::parse("1.005"),
            Err(DecimalError::TooManyDecimalPlaces { .. })
        ));
        for bad in [
            "", "1e3", " 1", "1,000", "+1", "1.", ".5", "--1", "0x10", "１２",
        ] {
            assert!(
                matches!(Amount::parse(bad), Err(DecimalError::NotADecimal { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            Amount::parse("99999999999999"),
            Err(DecimalError::OutOfRange { .. })
        ));
        assert!(Amount::parse("9999999999999.99").is_ok());
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(round_fen(d("0.005")), d("0.01"));
        assert_eq!(round_fen(d("-0.005")), d("-0.01"));
        assert_eq!(round_fen(d("0.0049999")), d("0.00"));
        assert_eq!(round_fen(d("2.675")), d("2.68"));
    }

    #[test]
    fn unit_prices_allow_eight_places_and_no_sign() {
        assert_eq!(
            UnitPrice::parse("15841.58415842").unwrap().to_string(),
            "15841.58415842"
        );
        assert_eq!(UnitPrice::parse("2.00000000").unwrap().to_string(), "2");
        assert!(matches!(
            UnitPrice::parse("0.000000001"),
            Err(DecimalError::TooManyDecimalPlaces { .. })
        ));
        assert!(matches!(
            UnitPrice::parse("-1"),
            Err(DecimalError::Negative { .. })
        ));
        assert_eq!(Quantity::parse("-3").unwrap().to_string(), "-3");
    }

    #[test]
    fn serde_goes_through_the_parser() {
        let a: Amount = serde_json::from_str("\"1.10\"").unwrap();
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"1.10\"");
        assert!(serde_json::from_str::<Amount>("\"1.101\"").is_err());
        assert!(serde_json::from_str::<UnitPrice>("\"-2\"").is_err());
    }
}

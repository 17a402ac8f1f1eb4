//! [`TaxRate`] (税率/征收率) and the tax arithmetic that uses it.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Amount, Quantity, UnitPrice, round_fen};

/// A legal VAT rate or levy rate (税率/征收率), or one of the two zero-tax kinds that print
/// differently from 0 %.
///
/// The rates are the statutory ones: 13 %, 9 %, 6 % (税率), 5 %, 3 %, 1 % and 0.5 % (征收率 for
/// simplified collection), and 0 % (零税率, e.g. exports). 免税 (tax-exempt) and 不征税
/// (non-taxable) also compute a zero tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TaxRate {
    /// 13 %.
    Thirteen,
    /// 9 %.
    Nine,
    /// 6 %.
    Six,
    /// 5 %.
    Five,
    /// 3 %.
    Three,
    /// 1 %.
    One,
    /// 0.5 %.
    HalfPercent,
    /// 0 % (零税率).
    Zero,
    /// 免税: tax-exempt; zero tax, printed 免税.
    Exempt,
    /// 不征税: outside the scope of VAT; zero tax, printed 不征税.
    NonTaxable,
}

/// A rate that is not one of the legal ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not a legal VAT rate: use 13%, 9%, 6%, 5%, 3%, 1%, 0.5%, 0%, exempt (免税) or non_taxable (不征税)"
)]
pub struct TaxRateError {
    /// The refused text.
    pub text: String,
}

const PERCENT_RATES: [(TaxRate, &str); 8] = [
    (TaxRate::Thirteen, "13"),
    (TaxRate::Nine, "9"),
    (TaxRate::Six, "6"),
    (TaxRate::Five, "5"),
    (TaxRate::Three, "3"),
    (TaxRate::One, "1"),
    (TaxRate::HalfPercent, "0.5"),
    (TaxRate::Zero, "0"),
];

impl TaxRate {
    /// Every rate, in the order above.
    pub const ALL: [Self; 10] = [
        Self::Thirteen,
        Self::Nine,
        Self::Six,
        Self::Five,
        Self::Three,
        Self::One,
        Self::HalfPercent,
        Self::Zero,
        Self::Exempt,
        Self::NonTaxable,
    ];

    /// Parses `13%`, the fraction form `0.13` (as in the 数电票 XML), `exempt`/`免税` or
    /// `non_taxable`/`不征税`.
    ///
    /// # Errors
    /// [`TaxRateError`] for anything else.
    pub fn parse(text: &str) -> Result<Self, TaxRateError> {
        let err = || TaxRateError {
            text: text.to_owned(),
        };
        match text {
            "exempt" | "免税" => return Ok(Self::Exempt),
            "non_taxable" | "不征税" => return Ok(Self::NonTaxable),
            _ => {}
        }
        let ratio = if let Some(pct) = text.strip_suffix('%') {
            strict_decimal(pct).ok_or_else(err)? / Decimal::ONE_HUNDRED
        } else {
            strict_decimal(text).ok_or_else(err)?
        };
        Self::ALL
            .into_iter()
            .find(|r| r.is_percent() && r.ratio() == ratio)
            .ok_or_else(err)
    }

    /// The rate as a fraction (0.13 for 13 %); zero for the zero-tax kinds.
    #[must_use]
    pub fn ratio(self) -> Decimal {
        match PERCENT_RATES.iter().find(|(r, _)| *r == self) {
            Some((_, pct)) => {
                Decimal::from_str(pct).expect("the percent table holds plain decimals")
                    / Decimal::ONE_HUNDRED
            }
            None => Decimal::ZERO,
        }
    }

    /// Whether this is a numeric rate (as opposed to 免税 or 不征税).
    #[must_use]
    pub fn is_percent(self) -> bool {
        !matches!(self, Self::Exempt | Self::NonTaxable)
    }

    /// The stable wire form: `13%` … `0%`, `exempt`, `non_taxable`.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::Thirteen => "13%",
            Self::Nine => "9%",
            Self::Six => "6%",
            Self::Five => "5%",
            Self::Three => "3%",
            Self::One => "1%",
            Self::HalfPercent => "0.5%",
            Self::Zero => "0%",
            Self::Exempt => "exempt",
            Self::NonTaxable => "non_taxable",
        }
    }

    /// Tax on a tax-exclusive amount: `round(amount × r, 2)`.
    #[must_use]
    pub fn tax_on_exclusive(self, amount: Amount) -> Amount {
        Amount::from_rounded(amount.value() * self.ratio())
    }

    /// Splits a tax-inclusive amount A into (exclusive, tax): exclusive = `round(A / (1 + r), 2)`,
    /// tax = A − exclusive, so the two always add back to A to the fen.
    #[must_use]
    pub fn split_inclusive(self, inclusive: Amount) -> (Amount, Amount) {
        let exclusive = Amount::from_rounded(inclusive.value() / (Decimal::ONE + self.ratio()));
        (exclusive, inclusive - exclusive)
    }

    /// The tax-exclusive unit price matching a tax-inclusive one: `price / (1 + r)`, to 8 places.
    #[must_use]
    pub fn exclusive_unit_price(self, inclusive: UnitPrice) -> UnitPrice {
        UnitPrice::from_decimal(inclusive.value() / (Decimal::ONE + self.ratio()))
            .expect("dividing a valid unit price by 1 + r stays in range and non-negative")
    }
}

/// Whether quantity × unit price equals the line amount within ±0.01 元 (the tolerance the
/// issuing rules allow for rounding of the unit price).
///
/// Returns `None` when the product does not fit a decimal (absurd inputs).
#[must_use]
pub fn quantity_price_matches(
    quantity: Quantity,
    price: UnitPrice,
    amount: Amount,
) -> Option<bool> {
    let product = quantity.value().checked_mul(price.value())?;
    Some((round_fen(product) - amount.value()).abs() <= Decimal::new(1, 2))
}

fn strict_decimal(text: &str) -> Option<Decimal> {
    let ok = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|&b| b == b'.').count() <= 1
        && !text.starts_with('.')
        && !text.ends_with('.');
    ok.then(|| Decimal::from_str(text).ok()).flatten()
}

impl fmt::Display for TaxRate {
    /// As printed on the invoice: `13%`, `0.5%`, `免税`, `不征税`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exempt => f.write_str("免税"),
            Self::NonTaxable => f.write_str("不征税"),
            other => f.write_str(other.code()),
        }
    }
}

impl FromStr for TaxRate {
    type Err = TaxRateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TaxRate {
    type Error = TaxRateError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TaxRate> for String {
    fn from(r: TaxRate) -> Self {
        r.code().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(s: &str) -> Amount {
        Amount::parse(s).unwrap()
    }

    #[test]
    fn every_legal_rate_parses_in_each_form() {
        assert_eq!(TaxRate::parse("13%").unwrap(), TaxRate::Thirteen);
        assert_eq!(TaxRate::parse("0.13").unwrap(), TaxRate::Thirteen);
        assert_eq!(TaxRate::parse("0.130000").unwrap(), TaxRate::Thirteen);
        assert_eq!(TaxRate::parse("0.5%").unwrap(), TaxRate::HalfPercent);
        assert_eq!(TaxRate::parse("0.005").unwrap(), TaxRate::HalfPercent);
        assert_eq!(TaxRate::parse("免税").unwrap(), TaxRate::Exempt);
        assert_eq!(TaxRate::parse("non_taxable").unwrap(), TaxRate::NonTaxable);
        for r in TaxRate::ALL {
            assert_eq!(TaxRate::parse(r.code()).unwrap(), r);
            assert_eq!(TaxRate::parse(&r.to_string()).unwrap(), r);
        }
    }

    #[test]
    fn illegal_rates_are_refused() {
        for bad in [
            "17%", "0.17", "11%", "13", "-13%", "13 %", "", "%", "0.1300.1",
        ] {
            assert!(TaxRate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_print_as_the_invoice_prints_them() {
        assert_eq!(TaxRate::Thirteen.to_string(), "13%");
        assert_eq!(TaxRate::HalfPercent.to_string(), "0.5%");
        assert_eq!(TaxRate::Exempt.to_string(), "免税");
        assert_eq!(TaxRate::NonTaxable.to_string(), "不征税");
    }

    #[test]
    fn inclusive_amounts_split_without_losing_a_fen() {
        let (excl, tax) = TaxRate::Thirteen.split_inclusive(amount("113.00"));
        assert_eq!(
            (excl.to_string(), tax.to_string()),
            ("100.00".into(), "13.00".into())
        );
        // 100 / 1.06 = 94.3396… -> 94.34, tax 5.66
        let (excl, tax) = TaxRate::Six.split_inclusive(amount("100.00"));
        assert_eq!(
            (excl.to_string(), tax.to_string()),
            ("94.34".into(), "5.66".into())
        );
        let (excl, tax) = TaxRate::Exempt.split_inclusive(amount("100.00"));
        assert_eq!((excl, tax), (amount("100.00"), Amount::ZERO));
    }

    #[test]
    fn tax_on_exclusive_rounds_half_away_from_zero() {
        // 0.50 × 0.13 = 0.065 -> 0.07; the negative mirror -> -0.07
        assert_eq!(
            TaxRate::Thirteen.tax_on_exclusive(amount("0.50")),
            amount("0.07")
        );
        assert_eq!(
            TaxRate::Thirteen.tax_on_exclusive(amount("-0.50")),
            amount("-0.07")
        );
        assert_eq!(
            TaxRate::NonTaxable.tax_on_exclusive(amount("99.99")),
            Amount::ZERO
        );
    }

    #[test]
    fn quantity_times_price_tolerates_one_fen() {
        let q = Quantity::parse("3").unwrap();
        let p = UnitPrice::parse("33.333333").unwrap();
        assert_eq!(quantity_price_matches(q, p, amount("100.00")), Some(true));
        assert_eq!(quantity_price_matches(q, p, amount("99.99")), Some(true));
        assert_eq!(quantity_price_matches(q, p, amount("99.98")), Some(false));
    }
}

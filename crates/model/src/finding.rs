//! Validation findings: every problem with an order, each with the field path, a stable code
//! and a message. Validation collects all of them instead of stopping at the first.

use std::fmt;

use serde::Serialize;

/// One problem found in an input, e.g. `items[2].tax_rate` / `invalid_tax_rate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Path of the offending field (`buyer.taxpayer_id`, `items[2].amount`); empty for the
    /// whole document.
    pub path: String,
    /// Stable machine-readable code.
    pub code: FindingCode,
    /// Human-readable explanation (English, may quote the value).
    pub message: String,
}

impl Finding {
    /// Creates a finding.
    pub fn new(path: impl Into<String>, code: FindingCode, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(document)"
        } else {
            &self.path
        };
        write!(f, "{path}: {} — {}", self.code.as_str(), self.message)
    }
}

macro_rules! finding_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal,)*) => {
        /// Stable codes of validation findings. Clients may branch on them; they never change
        /// meaning once published.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum FindingCode {
            $($(#[$doc])* $variant,)*
        }

        impl FindingCode {
            /// Every code, for registries and documentation checks.
            pub const ALL: &'static [Self] = &[$(Self::$variant,)*];

            /// The snake_case code.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }
        }
    };
}

finding_codes! {
    /// The document is not valid JSON or does not have the expected shape.
    MalformedDocument = "malformed_document",
    /// A field that is not part of the format.
    UnknownField = "unknown_field",
    /// A required field is missing or empty.
    Required = "required",
    /// A field that must not be given in this context.
    NotAllowed = "not_allowed",
    /// A text field is too long or contains control characters.
    InvalidText = "invalid_text",
    /// A value is not one of the allowed choices.
    InvalidChoice = "invalid_choice",
    /// A decimal written as a JSON number with a fraction (precision may already be lost).
    DecimalMustBeString = "decimal_must_be_string",
    /// Not a plain decimal number.
    InvalidDecimal = "invalid_decimal",
    /// More decimal places than allowed.
    TooManyDecimalPlaces = "too_many_decimal_places",
    /// Beyond the allowed magnitude.
    OutOfRange = "out_of_range",
    /// Must be greater than zero.
    MustBePositive = "must_be_positive",
    /// Must be less than zero.
    MustBeNegative = "must_be_negative",
    /// Taxpayer id of the wrong length.
    TaxpayerIdLength = "taxpayer_id_length",
    /// Taxpayer id with a character outside its alphabet.
    TaxpayerIdCharacter = "taxpayer_id_character",
    /// USCC whose positions 3–8 are not a division code.
    TaxpayerIdDivisionCode = "taxpayer_id_division_code",
    /// USCC whose check character does not match GB 32100.
    TaxpayerIdCheckCharacter = "taxpayer_id_check_character",
    /// Citizen identity number malformed or with a wrong check character.
    InvalidPersonalId = "invalid_personal_id",
    /// Not a 19-digit tax classification code.
    InvalidTaxCode = "invalid_tax_code",
    /// A tax classification code missing from the catalog.
    UnknownTaxCode = "unknown_tax_code",
    /// A character an invoice cannot carry (direction controls, emoji, invisible format
    /// characters, private use); the message names it.
    UnsupportedCharacter = "unsupported_character",
    /// A group code (汇总项) of the catalog: invoices need one of the leaf codes under it.
    GroupTaxCode = "group_tax_code",
    /// A rate the line's tax code does not allow (or none where the code lists several).
    RateNotAllowed = "rate_not_allowed",
    /// Not a legal VAT rate.
    InvalidTaxRate = "invalid_tax_rate",
    /// Quantity and unit price must be given together.
    QuantityWithoutPrice = "quantity_without_price",
    /// Quantity × unit price differs from the amount by more than 0.01.
    QuantityPriceMismatch = "quantity_price_mismatch",
    /// A discount line that does not follow a normal line.
    DiscountWithoutLine = "discount_without_line",
    /// A discount line with another rate or code than the line it discounts.
    DiscountMismatch = "discount_mismatch",
    /// A discount larger than the line it discounts.
    DiscountExceedsLine = "discount_exceeds_line",
    /// Stated totals disagree with the computed ones.
    TotalsMismatch = "totals_mismatch",
    /// A field required on a special VAT invoice (增值税专用发票).
    RequiredForSpecialInvoice = "required_for_special_invoice",
    /// Too many or too few lines.
    LineCount = "line_count",
}

/// All findings of one validation; never empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
pub struct ValidationErrors {
    findings: Vec<Finding>,
}

impl ValidationErrors {
    /// Wraps findings; `None` when there are none.
    #[must_use]
    pub fn from_findings(findings: Vec<Finding>) -> Option<Self> {
        (!findings.is_empty()).then_some(Self { findings })
    }

    /// The findings, in document order.
    #[must_use]
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Whether some finding has this path and code.
    #[must_use]
    pub fn has(&self, path: &str, code: FindingCode) -> bool {
        self.findings
            .iter()
            .any(|f| f.path == path && f.code == code)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} validation finding(s)", self.findings.len())?;
        for finding in &self.findings {
            write!(f, "\n  {finding}")?;
        }
        Ok(())
    }
}

impl Serialize for FindingCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

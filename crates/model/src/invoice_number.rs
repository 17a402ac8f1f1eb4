//! [`InvoiceNumber`] (发票号码): the 20-digit 数电票 number, and [`ProvinceCode`].
//!
//! Structure (国家税务总局公告 on 全面数字化的电子发票; research note `shudianpiao-format.md`
//! §3.5): `YY` last two digits of the issue year · `PP` province code (GB/T 2260, plus the
//! 计划单列市 codes) · `C` issuing channel · 15-digit sequence.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::Date;

/// A 20-digit 数电票 invoice number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InvoiceNumber {
    value: String,
}

/// Why an invoice number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvoiceNumberError {
    /// Not exactly 20 ASCII digits.
    #[error("must be exactly 20 digits")]
    Format,
    /// Digits 3–4 are not a province code.
    #[error("digits 3-4 (`{code}`) are not a province code")]
    Province {
        /// The two digits found.
        code: String,
    },
    /// Digits 1–2 differ from the issue year.
    #[error("digits 1-2 (`{found:02}`) must be the issue year's last two digits ({expected:02})")]
    YearMismatch {
        /// Last two digits of the issue year.
        expected: u8,
        /// Digits found.
        found: u8,
    },
    /// A component given to [`InvoiceNumber::new`] is out of range.
    #[error("{field} is out of range")]
    Component {
        /// The component.
        field: &'static str,
    },
}

impl InvoiceNumber {
    /// Largest 15-digit sequence number.
    pub const MAX_SEQUENCE: u64 = 999_999_999_999_999;

    /// Parses a 20-digit number and checks its province code.
    ///
    /// # Errors
    /// [`InvoiceNumberError::Format`] or [`InvoiceNumberError::Province`].
    pub fn parse(text: &str) -> Result<Self, InvoiceNumberError> {
        if text.len() != 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvoiceNumberError::Format);
        }
        ProvinceCode::parse(&text[2..4])?;
        Ok(Self {
            value: text.to_owned(),
        })
    }

    /// Builds a number from its parts.
    ///
    /// # Errors
    /// [`InvoiceNumberError::Component`] if the year is not 0–99, the channel not 0–9 or the
    /// sequence beyond 15 digits.
    pub fn new(
        year: u8,
        province: ProvinceCode,
        channel: u8,
        sequence: u64,
    ) -> Result<Self, InvoiceNumberError> {
        if year > 99 {
            return Err(InvoiceNumberError::Component { field: "year" });
        }
        if channel > 9 {
            return Err(InvoiceNumberError::Component { field: "channel" });
        }
        if sequence > Self::MAX_SEQUENCE {
            return Err(InvoiceNumberError::Component { field: "sequence" });
        }
        Ok(Self {
            value: format!("{year:02}{:02}{channel}{sequence:015}", province.code()),
        })
    }

    /// Last two digits of the issue year.
    #[must_use]
    pub fn year(&self) -> u8 {
        self.value[..2].parse().expect("checked digits")
    }

    /// The issuing province.
    #[must_use]
    pub fn province(&self) -> ProvinceCode {
        ProvinceCode::parse(&self.value[2..4]).expect("checked at parse")
    }

    /// The issuing channel digit (开具渠道).
    #[must_use]
    pub fn channel(&self) -> u8 {
        self.value.as_bytes()[4] - b'0'
    }

    /// The 15-digit sequence number.
    #[must_use]
    pub fn sequence(&self) -> u64 {
        self.value[5..].parse().expect("checked digits")
    }

    /// Checks that the number's year digits match the issue date.
    ///
    /// # Errors
    /// [`InvoiceNumberError::YearMismatch`].
    pub fn check_issue_year(&self, issued_on: Date) -> Result<(), InvoiceNumberError> {
        let expected =
            u8::try_from(issued_on.year().rem_euclid(100)).expect("rem_euclid(100) < 100");
        if self.year() != expected {
            return Err(InvoiceNumberError::YearMismatch {
                expected,
                found: self.year(),
            });
        }
        Ok(())
    }

    /// The number's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for InvoiceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl FromStr for InvoiceNumber {
    type Err = InvoiceNumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for InvoiceNumber {
    type Error = InvoiceNumberError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<InvoiceNumber> for String {
    fn from(n: InvoiceNumber) -> Self {
        n.value
    }
}

/// A province-level code as used in invoice numbers: the GB/T 2260 codes of the provinces,
/// autonomous regions and municipalities, plus the 计划单列市 codes 91–95.
///
/// The 91–95 mapping is inferred from real numbers (95 深圳 confirmed by a red/blue pair; the
/// others unconfirmed, research note §3.5) and kept here so it is easy to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProvinceCode(u8);

const PROVINCES: [(u8, &str); 36] = [
    (11, "北京市"),
    (12, "天津市"),
    (13, "河北省"),
    (14, "山西省"),
    (15, "内蒙古自治区"),
    (21, "辽宁省"),
    (22, "吉林省"),
    (23, "黑龙江省"),
    (31, "上海市"),
    (32, "江苏省"),
    (33, "浙江省"),
    (34, "安徽省"),
    (35, "福建省"),
    (36, "江西省"),
    (37, "山东省"),
    (41, "河南省"),
    (42, "湖北省"),
    (43, "湖南省"),
    (44, "广东省"),
    (45, "广西壮族自治区"),
    (46, "海南省"),
    (50, "重庆市"),
    (51, "四川省"),
    (52, "贵州省"),
    (53, "云南省"),
    (54, "西藏自治区"),
    (61, "陕西省"),
    (62, "甘肃省"),
    (63, "青海省"),
    (64, "宁夏回族自治区"),
    (65, "新疆维吾尔自治区"),
    (91, "大连市"),
    (92, "青岛市"),
    (93, "宁波市"),
    (94, "厦门市"),
    (95, "深圳市"),
];

impl ProvinceCode {
    /// Parses two digits.
    ///
    /// # Errors
    /// [`InvoiceNumberError::Province`] when the digits are not a known code.
    pub fn parse(text: &str) -> Result<Self, InvoiceNumberError> {
        let err = || InvoiceNumberError::Province {
            code: text.to_owned(),
        };
        if text.len() != 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let code: u8 = text.parse().map_err(|_| err())?;
        PROVINCES
            .iter()
            .any(|(c, _)| *c == code)
            .then_some(Self(code))
            .ok_or_else(err)
    }

    /// The numeric code.
    #[must_use]
    pub fn code(self) -> u8 {
        self.0
    }

    /// The province's name, e.g. 上海市.
    #[must_use]
    pub fn name(self) -> &'static str {
        PROVINCES
            .iter()
            .find(|(c, _)| *c == self.0)
            .map_or("", |(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::date;

    use super::*;

    #[test]
    fn parts_are_read_back() {
        let n = InvoiceNumber::parse("26312000000012345678").unwrap();
        assert_eq!(
            (n.year(), n.province().code(), n.channel(), n.sequence()),
            (26, 31, 2, 12_345_678)
        );
        assert_eq!(n.province().name(), "上海市");
        let built =
            InvoiceNumber::new(26, ProvinceCode::parse("31").unwrap(), 2, 12_345_678).unwrap();
        assert_eq!(built, n);
    }

    #[test]
    fn malformed_numbers_are_refused() {
        assert_eq!(
            InvoiceNumber::parse("2631200000001234567"),
            Err(InvoiceNumberError::Format)
        );
        assert_eq!(
            InvoiceNumber::parse("2631200000001234567X"),
            Err(InvoiceNumberError::Format)
        );
        assert!(matches!(
            InvoiceNumber::parse("26992000000012345678"),
            Err(InvoiceNumberError::Province { .. })
        ));
        assert!(matches!(
            InvoiceNumber::parse("26712000000012345678"),
            Err(InvoiceNumberError::Province { .. })
        ));
    }

    #[test]
    fn year_must_match_the_issue_date() {
        let n = InvoiceNumber::parse("26312000000012345678").unwrap();
        assert!(n.check_issue_year(date!(2026 - 11 - 20)).is_ok());
        assert_eq!(
            n.check_issue_year(date!(2027 - 01 - 01)),
            Err(InvoiceNumberError::YearMismatch {
                expected: 27,
                found: 26
            })
        );
    }
}

//! [`TaxClassificationCode`] (商品和服务税收分类编码) and the [`TaxCatalog`] that gives each
//! code its short name (简称) and default rate.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::tax_rate::TaxRate;

/// A 19-digit tax classification code. The first digit is the 篇 (1 goods, 2 labour,
/// 3 services, 4 intangibles, 5 immovables, 6 not a sale).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaxClassificationCode {
    value: String,
}

/// A tax classification code that is not 19 digits starting 1–6.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a tax classification code (19 digits, first digit 1-6)")]
pub struct TaxClassificationCodeError {
    /// The refused text.
    pub text: String,
}

impl TaxClassificationCode {
    /// Parses a 19-digit code.
    ///
    /// # Errors
    /// [`TaxClassificationCodeError`] when the text is not 19 digits starting 1–6.
    pub fn parse(text: &str) -> Result<Self, TaxClassificationCodeError> {
        let ok = text.len() == 19
            && text.bytes().all(|b| b.is_ascii_digit())
            && (b'1'..=b'6').contains(&text.as_bytes()[0]);
        if !ok {
            return Err(TaxClassificationCodeError {
                text: text.to_owned(),
            });
        }
        Ok(Self {
            value: text.to_owned(),
        })
    }

    /// The code's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for TaxClassificationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl FromStr for TaxClassificationCode {
    type Err = TaxClassificationCodeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TaxClassificationCode {
    type Error = TaxClassificationCodeError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TaxClassificationCode> for String {
    fn from(c: TaxClassificationCode) -> Self {
        c.value
    }
}

/// One row of the tax classification table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// The code.
    pub code: TaxClassificationCode,
    /// 商品和服务分类简称, printed as `*简称*` before the item name.
    pub short_name: String,
    /// Rate used when an order line gives none.
    pub default_rate: TaxRate,
    /// The code's goods or service name.
    pub name: String,
}

/// The tax classification table: code → short name and default rate.
#[derive(Debug, Clone, Default)]
pub struct TaxCatalog {
    entries: BTreeMap<TaxClassificationCode, CatalogEntry>,
}

/// A malformed catalog file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tax catalog line {line}: {message}")]
pub struct CatalogError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

const BUILTIN_CSV: &str = include_str!("../data/tax-codes.csv");
const HEADER: [&str; 4] = ["code", "short_name", "default_rate", "name"];

impl TaxCatalog {
    /// The curated table shipped with Fapiao (`crates/model/data/tax-codes.csv`): the codes
    /// used by the examples and tests. Load the official table with [`TaxCatalog::parse_csv`].
    #[must_use]
    pub fn builtin() -> Self {
        Self::parse_csv(BUILTIN_CSV)
            .expect("the bundled tax-codes.csv is valid (checked by a test)")
    }

    /// Parses a catalog in the CSV format of `crates/model/data/README.md`
    /// (`code,short_name,default_rate,name` with a header line; RFC 4180 quoting).
    ///
    /// # Errors
    /// [`CatalogError`] naming the first bad line.
    pub fn parse_csv(text: &str) -> Result<Self, CatalogError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut entries = BTreeMap::new();
        let mut lines = text.lines().enumerate();
        let header = lines.next().map(|(_, h)| split_csv_line(h));
        let header_ok = matches!(&header, Some(Ok(h)) if h.iter().map(String::as_str).eq(HEADER));
        if !header_ok {
            return Err(CatalogError {
                line: 1,
                message: format!("header must be `{}`", HEADER.join(",")),
            });
        }
        for (i, line) in lines {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let err = |message: String| CatalogError { line: n, message };
            let fields = split_csv_line(line).map_err(err)?;
            let [code, short_name, rate, name] = <[String; 4]>::try_from(fields)
                .map_err(|f| err(format!("expected 4 fields, found {}", f.len())))?;
            let code = TaxClassificationCode::parse(code.trim()).map_err(|e| err(e.to_string()))?;
            let default_rate = TaxRate::parse(rate.trim()).map_err(|e| err(e.to_string()))?;
            let short_name = short_name.trim().to_owned();
            if short_name.is_empty() || short_name.contains('*') {
                return Err(err("short_name must be non-empty and contain no `*`".into()));
            }
            let entry = CatalogEntry {
                code: code.clone(),
                short_name,
                default_rate,
                name: name.trim().to_owned(),
            };
            if entries.insert(code.clone(), entry).is_some() {
                return Err(err(format!("code {code} appears twice")));
            }
        }
        Ok(Self { entries })
    }

    /// Looks a code up.
    #[must_use]
    pub fn get(&self, code: &TaxClassificationCode) -> Option<&CatalogEntry> {
        self.entries.get(code)
    }

    /// Number of codes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the catalog is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Splits one CSV record (no embedded newlines), honouring `"` quoting with `""` escapes.
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        match (in_quotes, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => in_quotes = false,
            (false, '"') if field.is_empty() => in_quotes = true,
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if in_quotes {
        return Err("unterminated quoted field".into());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_catalog_parses() {
        let c = TaxCatalog::builtin();
        assert!(c.len() >= 8);
        let code = TaxClassificationCode::parse("3040201010000000000").unwrap();
        let e = c.get(&code).unwrap();
        assert_eq!(
            (e.short_name.as_str(), e.default_rate),
            ("信息技术服务", TaxRate::Six)
        );
    }

    #[test]
    fn codes_are_nineteen_digits_of_a_known_part() {
        assert!(TaxClassificationCode::parse("3040201010000000000").is_ok());
        for bad in [
            "304020101000000000",
            "30402010100000000000",
            "7040201010000000000",
            "304020101000000000A",
        ] {
            assert!(TaxClassificationCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn operator_files_are_checked_line_by_line() {
        let ok =
            "code,short_name,default_rate,name\n\"1030206000000000000\",调味品,0.13,\"醋, 酱油\"\n";
        let c = TaxCatalog::parse_csv(ok).unwrap();
        assert_eq!(c.len(), 1);
        let bad_rate = "code,short_name,default_rate,name\n1030206000000000000,调味品,17%,醋\n";
        assert_eq!(TaxCatalog::parse_csv(bad_rate).unwrap_err().line, 2);
        let dup = "code,short_name,default_rate,name\n1030206000000000000,a,13%,x\n1030206000000000000,b,13%,y\n";
        assert!(
            TaxCatalog::parse_csv(dup)
                .unwrap_err()
                .message
                .contains("twice")
        );
        assert_eq!(TaxCatalog::parse_csv("wrong,header\n").unwrap_err().line, 1);
        let short = "code,short_name,default_rate,name\n1030206000000000000,调味品\n";
        assert!(
            TaxCatalog::parse_csv(short)
                .unwrap_err()
                .message
                .contains("4 fields")
        );
    }
}

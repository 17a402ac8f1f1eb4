//! [`TaxClassificationCode`] (商品和服务税收分类编码) and the [`TaxCatalog`] that gives each
//! code its short name (简称), the rates it allows, and whether it is a leaf an invoice may use
//! (the official table, version 32.0, is bundled).

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
    /// The rates the table lists for the code (one, or two such as 13 % and 9 %; `不征税` for
    /// the 6… codes), then 免税 or 不征税 where its special management allows them; empty for
    /// most group codes.
    pub rates: Vec<TaxRate>,
    /// Rate used when an order line gives none: the code's table rate when it lists one (a
    /// code listing two needs the line to say which; 免税 is never assumed).
    pub default_rate: Option<TaxRate>,
    /// The code's goods or service name.
    pub name: String,
    /// 说明, 关键字 and 增值税特殊管理, as the table gives them.
    pub description: String,
    /// Whether 增值税特殊管理 allows 免税 for the code.
    pub exempt_allowed: bool,
    /// Whether 增值税特殊管理 allows 5 % 简易征收 (rentals, real estate).
    pub five_percent_allowed: bool,
    /// A group (汇总项): other codes sit under it; invoices need a leaf.
    pub group: bool,
}

impl CatalogEntry {
    /// Whether a line of this code may carry `rate`: a rate the table lists; a small-scale
    /// taxpayer's 征收率 (3 %, 1 %) on a taxable code; 5 %, 免税 or 不征税 where the code's special
    /// management allows it. (零税率 and 0.5 % are not in the table: an operator who issues them
    /// loads a table that lists them.)
    #[must_use]
    pub fn allows(&self, rate: TaxRate) -> bool {
        match rate {
            TaxRate::Three | TaxRate::One => self.taxable(),
            TaxRate::Five if self.five_percent_allowed => true,
            r => self.rates.contains(&r),
        }
    }

    /// Whether the code is in VAT's scope at all (not only 不征税).
    fn taxable(&self) -> bool {
        self.rates.iter().any(|r| r.is_percent())
    }

    /// The rates [`Self::allows`], as text for a finding.
    #[must_use]
    pub fn allowed_text(&self) -> String {
        let mut out: Vec<String> = self.rates.iter().map(ToString::to_string).collect();
        if self.taxable() {
            out.push("3% or 1% (small-scale 征收率)".into());
        }
        if self.five_percent_allowed && !self.rates.contains(&TaxRate::Five) {
            out.push("5% (简易征收)".into());
        }
        out.join(", ")
    }
}

/// The tax classification table (商品和服务税收分类编码表): code → short name, rates, and
/// whether the code is a leaf an invoice may use.
#[derive(Debug, Clone, Default)]
pub struct TaxCatalog {
    version: String,
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

const OFFICIAL_CSV: &str = include_str!("../data/tax-codes-official.csv");
/// The version of the bundled official table.
pub const OFFICIAL_VERSION: &str = "32.0";
const HEADER: [&str; 5] = ["code", "name", "short_name", "rate", "description"];
const LEGACY_HEADER: [&str; 4] = ["code", "short_name", "default_rate", "name"];

/// The parent of a code: its last non-`00` segment set to `00` (the 篇 is one digit, then nine
/// two-digit segments); `None` for the six 篇.
#[must_use]
pub fn parent_code(code: &TaxClassificationCode) -> Option<TaxClassificationCode> {
    let s = code.as_str();
    let mut segments: Vec<&str> = std::iter::once(&s[..1])
        .chain((1..19).step_by(2).map(|i| &s[i..i + 2]))
        .collect();
    let last = (1..segments.len()).rev().find(|&i| segments[i] != "00")?;
    segments[last] = "00";
    TaxClassificationCode::parse(&segments.concat()).ok()
}

impl TaxCatalog {
    /// The official table shipped with Fapiao: 商品和服务税收分类编码表 version 32.0 (4,236
    /// codes, `crates/model/data/tax-codes-official.csv`, provenance beside it).
    #[must_use]
    pub fn builtin() -> Self {
        let mut c = Self::parse_csv(OFFICIAL_CSV)
            .expect("the bundled official table is valid (checked by a test)");
        c.version = OFFICIAL_VERSION.to_owned();
        c
    }

    /// The table's version (`32.0` for the bundled one; a file's name when loaded from one
    /// without a version).
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// This table named `version`.
    #[must_use]
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Parses a table: the official export's columns `code,name,short_name,rate,description`
    /// (`rate`: `13%`, `13%、9%`, `不征税` or empty for a group), or the older curated form
    /// `code,short_name,default_rate,name`. A header line is required; RFC 4180 quoting.
    /// A code is a group when another code of the table sits under it.
    ///
    /// # Errors
    /// [`CatalogError`] naming the first bad line.
    pub fn parse_csv(text: &str) -> Result<Self, CatalogError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut entries = BTreeMap::new();
        let mut lines = text.lines().enumerate();
        let header = lines.next().and_then(|(_, h)| split_csv_line(h).ok());
        let legacy = match &header {
            Some(h) if h.iter().map(String::as_str).eq(HEADER) => false,
            Some(h) if h.iter().map(String::as_str).eq(LEGACY_HEADER) => true,
            _ => {
                return Err(CatalogError {
                    line: 1,
                    message: format!(
                        "header must be `{}` (or the older `{}`)",
                        HEADER.join(","),
                        LEGACY_HEADER.join(",")
                    ),
                });
            }
        };
        for (i, line) in lines {
            let n = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let err = |message: String| CatalogError { line: n, message };
            let fields = split_csv_line(line).map_err(err)?;
            let width = if legacy { 4 } else { 5 };
            if fields.len() != width {
                return Err(err(format!(
                    "expected {width} fields, found {}",
                    fields.len()
                )));
            }
            let field = |i: usize| fields[i].trim().to_owned();
            let (code, short_name, rate, name, description) = if legacy {
                (field(0), field(1), field(2), field(3), String::new())
            } else {
                (field(0), field(2), field(3), field(1), field(4))
            };
            let code = TaxClassificationCode::parse(&code).map_err(|e| err(e.to_string()))?;
            let rates = if rate.is_empty() {
                Vec::new()
            } else {
                rate.split('、')
                    .map(|r| TaxRate::parse(r.trim()).map_err(|e| err(e.to_string())))
                    .collect::<Result<Vec<_>, _>>()?
            };
            if short_name.is_empty() || short_name.contains('*') {
                return Err(err("short_name must be non-empty and contain no `*`".into()));
            }
            let special = description
                .split(" | ")
                .find(|part| part.starts_with("增值税特殊管理"))
                .unwrap_or("");
            let mut rates = rates;
            for (word, rate) in [("免税", TaxRate::Exempt), ("不征税", TaxRate::NonTaxable)] {
                if special.contains(word) && !rates.contains(&rate) {
                    rates.push(rate);
                }
            }
            let exempt_allowed = rates.contains(&TaxRate::Exempt);
            let five_percent_allowed = special.contains("5%简易");
            let entry = CatalogEntry {
                code: code.clone(),
                short_name,
                default_rate: rates.first().copied().filter(|_| {
                    rates
                        .iter()
                        .filter(|r| r.is_percent() || **r == TaxRate::NonTaxable)
                        .count()
                        == 1
                }),
                rates,
                name,
                description,
                exempt_allowed,
                five_percent_allowed,
                group: false,
            };
            if entries.insert(code.clone(), entry).is_some() {
                return Err(err(format!("code {code} appears twice")));
            }
        }
        let parents: Vec<TaxClassificationCode> = entries.keys().filter_map(parent_code).collect();
        for p in parents {
            if let Some(e) = entries.get_mut(&p) {
                e.group = true;
            }
        }
        Ok(Self {
            version: String::new(),
            entries,
        })
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

    /// Up to `limit` entries matching `q`, leaves first: a code or its prefix (digits), else
    /// every whitespace-separated word found in the name, the 简称 or the description (its
    /// keywords), in code order.
    #[must_use]
    pub fn search(&self, q: &str, limit: usize) -> Vec<&CatalogEntry> {
        let q = q.trim();
        let words: Vec<&str> = q.split_whitespace().collect();
        let digits = !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit());
        let matches = |e: &&CatalogEntry| {
            if digits {
                e.code.as_str().starts_with(q)
            } else {
                !words.is_empty()
                    && words.iter().all(|w| {
                        e.name.contains(w) || e.short_name.contains(w) || e.description.contains(w)
                    })
            }
        };
        let (leaves, groups): (Vec<&CatalogEntry>, Vec<&CatalogEntry>) = self
            .entries
            .values()
            .filter(matches)
            .partition(|e| !e.group);
        leaves.into_iter().chain(groups).take(limit).collect()
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

    fn code(c: &str) -> TaxClassificationCode {
        TaxClassificationCode::parse(c).unwrap()
    }

    #[test]
    fn the_official_table_is_bundled_whole() {
        let c = TaxCatalog::builtin();
        assert_eq!((c.len(), c.version()), (4236, "32.0"));
        let groups = c.entries.values().filter(|e| e.group).count();
        // The source marks 678 rows as 汇总项; 676 have codes under them (a group is what
        // has: the other two are used as leaves).
        assert_eq!(groups, 676);
        let seasoning = c.get(&code("1030206000000000000")).unwrap();
        assert!(seasoning.group && seasoning.rates.is_empty());
        let e = c.get(&code("3040201010000000000")).unwrap();
        assert_eq!(
            (e.short_name.as_str(), e.default_rate, e.group),
            ("信息技术服务", Some(TaxRate::Six), false)
        );
        // Six 篇, each a group.
        for p in 1..=6 {
            assert!(
                c.get(&code(&format!("{p}000000000000000000")))
                    .unwrap()
                    .group
            );
        }
    }

    #[test]
    fn parents_drop_the_last_segment_that_is_not_zero() {
        assert_eq!(
            parent_code(&code("1030206020000000000")),
            Some(code("1030206000000000000"))
        );
        assert_eq!(
            parent_code(&code("1030206000000000000")),
            Some(code("1030200000000000000"))
        );
        assert_eq!(parent_code(&code("1000000000000000000")), None);
    }

    #[test]
    fn rates_follow_the_table_and_its_special_management() {
        let c = TaxCatalog::builtin();
        // 稻谷: 9 %, 免税 under its special management, small-scale 3 % / 1 %.
        let rice = c.get(&code("1010101010000000000")).unwrap();
        for (r, ok) in [
            (TaxRate::Nine, true),
            (TaxRate::Exempt, true),
            (TaxRate::Three, true),
            (TaxRate::One, true),
            (TaxRate::Thirteen, false),
            (TaxRate::Six, false),
            (TaxRate::NonTaxable, false),
        ] {
            assert_eq!(rice.allows(r), ok, "{r}");
        }
        // Software: 6 % only (no 免税).
        let software = c.get(&code("3040201010000000000")).unwrap();
        assert!(!software.allows(TaxRate::Thirteen) && !software.allows(TaxRate::Exempt));
        // 预付卡: 不征税 only.
        let card = c.get(&code("6010000000000000000")).unwrap();
        assert!(card.allows(TaxRate::NonTaxable) && !card.allows(TaxRate::Three));
        // Two listed rates: no default, either allowed.
        let two = c
            .entries
            .values()
            .find(|e| e.rates == [TaxRate::Thirteen, TaxRate::Nine])
            .unwrap();
        assert_eq!(two.default_rate, None);
        assert!(two.allows(TaxRate::Nine) && two.allows(TaxRate::Thirteen));
    }

    #[test]
    fn search_finds_by_code_prefix_and_by_words_leaves_first() {
        let c = TaxCatalog::builtin();
        let apples = c.search("苹果", 10);
        assert!(
            apples.iter().any(|e| e.short_name == "水果" && !e.group),
            "{apples:?}"
        );
        // Leaves first.
        let first_group = apples.iter().position(|e| e.group).unwrap_or(apples.len());
        assert!(apples[first_group..].iter().all(|e| e.group), "{apples:?}");
        let by_code = c.search("3040201", 50);
        assert!(
            by_code
                .iter()
                .all(|e| e.code.as_str().starts_with("3040201"))
        );
        assert!(by_code.first().is_some_and(|e| !e.group));
        assert!(c.search("", 10).is_empty());
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
            "code,short_name,default_rate,name\n\"1030206020000000000\",调味品,0.13,\"醋, 酱油\"\n";
        let c = TaxCatalog::parse_csv(ok).unwrap();
        assert_eq!(c.len(), 1);
        let official =
            "code,name,short_name,rate,description\n1030206020000000000,酱油,调味品,13%、9%,\n";
        let c = TaxCatalog::parse_csv(official).unwrap();
        assert_eq!(c.get(&code("1030206020000000000")).unwrap().rates.len(), 2);
        let bad_rate = "code,short_name,default_rate,name\n1030206020000000000,调味品,17%,醋\n";
        assert_eq!(TaxCatalog::parse_csv(bad_rate).unwrap_err().line, 2);
        let dup = "code,short_name,default_rate,name\n1030206020000000000,a,13%,x\n1030206020000000000,b,13%,y\n";
        assert!(
            TaxCatalog::parse_csv(dup)
                .unwrap_err()
                .message
                .contains("twice")
        );
        assert_eq!(TaxCatalog::parse_csv("wrong,header\n").unwrap_err().line, 1);
        let short = "code,short_name,default_rate,name\n1030206020000000000,调味品\n";
        assert!(
            TaxCatalog::parse_csv(short)
                .unwrap_err()
                .message
                .contains("4 fields")
        );
    }
}

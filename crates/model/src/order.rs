//! [`Order`]: what an ERP submits, read leniently so that validation can report every problem at
//! once, and [`Order::validate`], which turns it into an [`InvoiceDraft`].
//!
//! Format (JSON; every decimal is a string such as `"1130.00"`; integers may be bare numbers):
//! ```json
//! { "order_id": "SO-1", "invoice_type": "ordinary|special", "price_mode": "tax_exclusive|tax_inclusive",
//!   "seller": { "taxpayer_id", "name", "address", "phone", "bank_name", "bank_account" },
//!   "buyer": { "kind": "organization|natural_person", "taxpayer_id", "id_number", "name",
//!              "address", "phone", "bank_name", "bank_account", "email" },
//!   "items": [ { "kind": "normal|discount", "name", "tax_code", "specification", "unit",
//!                "quantity", "unit_price", "amount", "tax_rate" } ],
//!   "totals": { "amount", "tax", "total" },           // optional; checked, never trusted
//!   "remarks": "…", "drawer": "…" }
//! ```
//! In `tax_inclusive` mode, item `unit_price` and `amount` include tax; the invoice carries the
//! tax-exclusive values computed from them. Stated `totals` are always amount (excl.), tax and
//! total (incl.).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::finding::{Finding, FindingCode, ValidationErrors};
use crate::invoice::{
    Buyer, BuyerKind, DraftParts, InvoiceDraft, InvoiceKind, InvoiceType, Line, LineKind,
    LineParts, Seller, Totals,
};
use crate::money::{Amount, DecimalError, Quantity, UnitPrice};
use crate::tax_code::{TaxCatalog, TaxClassificationCode};
use crate::tax_rate::{TaxRate, quantity_price_matches};
use crate::taxpayer_id::{PersonalIdNumber, TaxpayerId, TaxpayerIdError};

/// Most lines on one invoice.
pub const MAX_LINES: usize = 2000;
const NAME_MAX: usize = 100;
const SPEC_MAX: usize = 40;
const UNIT_MAX: usize = 20;
const PHONE_MAX: usize = 30;
const ACCOUNT_MAX: usize = 50;
const REMARKS_MAX: usize = 200;
/// Lines a remark may have.
const REMARKS_MAX_LINES: usize = 5;
pub(crate) const DRAWER_MAX: usize = 30;

/// The enterprise's identifier of an order: 1–64 characters of `A-Z a-z 0-9 . _ : -`. Keys
/// idempotency for as long as the order exists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId {
    value: String,
}

/// An order id that breaks the rules of [`OrderId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order id must be 1-64 characters of A-Z, a-z, 0-9, '.', '_', ':', '-'")]
pub struct OrderIdError;

impl OrderId {
    /// Parses an order id.
    ///
    /// # Errors
    /// [`OrderIdError`] for an empty, over-long or oddly-charactered id.
    pub fn parse(text: &str) -> Result<Self, OrderIdError> {
        let ok = (1..=64).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
        ok.then(|| Self {
            value: text.to_owned(),
        })
        .ok_or(OrderIdError)
    }

    /// The id's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl TryFrom<String> for OrderId {
    type Error = OrderIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<OrderId> for String {
    fn from(o: OrderId) -> Self {
        o.value
    }
}

/// A JSON leaf as received: read without judging it, so validation can report on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A string, or an integer kept as its exact text.
    Text(String),
    /// A number with a fraction or exponent, kept only to report it (never used as money).
    Fraction(String),
    /// `true` or `false`.
    Bool(bool),
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Text(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Fraction(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
        }
        d.deserialize_any(ScalarVisitor)
    }
}

impl From<&str> for Scalar {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

type Unknown = BTreeMap<String, IgnoredAny>;

/// An ERP's order for a blue invoice, as received (see the module docs for the format).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Order {
    /// The enterprise's order id.
    #[serde(default)]
    pub order_id: Option<Scalar>,
    /// `ordinary` or `special`.
    #[serde(default)]
    pub invoice_type: Option<Scalar>,
    /// `tax_exclusive` or `tax_inclusive`.
    #[serde(default)]
    pub price_mode: Option<Scalar>,
    /// 销售方.
    #[serde(default)]
    pub seller: Option<PartyInput>,
    /// 购买方.
    #[serde(default)]
    pub buyer: Option<PartyInput>,
    /// Lines.
    #[serde(default)]
    pub items: Option<Vec<ItemInput>>,
    /// Totals the ERP expects; checked against the computed ones.
    #[serde(default)]
    pub totals: Option<TotalsInput>,
    /// 备注.
    #[serde(default)]
    pub remarks: Option<Scalar>,
    /// 开票人.
    #[serde(default)]
    pub drawer: Option<Scalar>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// A seller or buyer as received.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PartyInput {
    /// `organization` (default) or `natural_person`; buyers only.
    #[serde(default)]
    pub kind: Option<Scalar>,
    /// 统一社会信用代码/纳税人识别号.
    #[serde(default)]
    pub taxpayer_id: Option<Scalar>,
    /// 公民身份号码 of a natural-person buyer.
    #[serde(default)]
    pub id_number: Option<Scalar>,
    /// 名称.
    #[serde(default)]
    pub name: Option<Scalar>,
    /// 地址.
    #[serde(default)]
    pub address: Option<Scalar>,
    /// 电话.
    #[serde(default)]
    pub phone: Option<Scalar>,
    /// 开户银行.
    #[serde(default)]
    pub bank_name: Option<Scalar>,
    /// 银行账号.
    #[serde(default)]
    pub bank_account: Option<Scalar>,
    /// Delivery e-mail; buyers only.
    #[serde(default)]
    pub email: Option<Scalar>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// A line as received.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ItemInput {
    /// `normal` (default) or `discount`.
    #[serde(default)]
    pub kind: Option<Scalar>,
    /// The enterprise's item name (without `*简称*`).
    #[serde(default)]
    pub name: Option<Scalar>,
    /// 19-digit tax classification code.
    #[serde(default)]
    pub tax_code: Option<Scalar>,
    /// 规格型号.
    #[serde(default)]
    pub specification: Option<Scalar>,
    /// 单位.
    #[serde(default)]
    pub unit: Option<Scalar>,
    /// 数量.
    #[serde(default)]
    pub quantity: Option<Scalar>,
    /// 单价 (in the order's price mode).
    #[serde(default)]
    pub unit_price: Option<Scalar>,
    /// 金额 (in the order's price mode).
    #[serde(default)]
    pub amount: Option<Scalar>,
    /// Rate; defaults to the code's default rate.
    #[serde(default)]
    pub tax_rate: Option<Scalar>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Totals as stated by the ERP.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TotalsInput {
    /// 合计金额 (tax-exclusive).
    #[serde(default)]
    pub amount: Option<Scalar>,
    /// 合计税额.
    #[serde(default)]
    pub tax: Option<Scalar>,
    /// 价税合计.
    #[serde(default)]
    pub total: Option<Scalar>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// Whether an order's prices include tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriceMode {
    /// Prices and amounts exclude tax (不含税).
    TaxExclusive,
    /// Prices and amounts include tax (含税).
    TaxInclusive,
}

impl Order {
    /// Reads an order from JSON. Shape errors (not JSON, a list where an object belongs) are
    /// reported as one `malformed_document` finding; everything else is left to
    /// [`Order::validate`], which reports all findings at once.
    ///
    /// # Errors
    /// [`ValidationErrors`] with the JSON error and its line and column.
    pub fn from_json(json: &str) -> Result<Self, ValidationErrors> {
        let mut de = serde_json::Deserializer::from_str(json);
        serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = crate::json::path(e.path());
            let finding = Finding::new(
                path,
                FindingCode::MalformedDocument,
                crate::json::plain_message(&e.into_inner().to_string()),
            );
            ValidationErrors::from_findings(vec![finding]).expect("one finding")
        })
    }

    /// Validates the order and computes the invoice: every amount, tax and total. Reports every
    /// finding at once.
    ///
    /// # Errors
    /// [`ValidationErrors`] with all findings, in document order.
    pub fn validate(&self, catalog: &TaxCatalog) -> Result<InvoiceDraft, ValidationErrors> {
        let mut c = Check::default();
        c.unknown("", &self.unknown);
        let order_id = c.parsed("order_id", self.order_id.as_ref(), true, |s| {
            OrderId::parse(s).map_err(|e| (FindingCode::InvalidText, e.to_string()))
        });
        let invoice_type = c.choice(
            "invoice_type",
            self.invoice_type.as_ref(),
            &[
                ("ordinary", InvoiceType::Ordinary),
                ("special", InvoiceType::Special),
            ],
            None,
        );
        let price_mode = c.choice(
            "price_mode",
            self.price_mode.as_ref(),
            &[
                ("tax_exclusive", PriceMode::TaxExclusive),
                ("tax_inclusive", PriceMode::TaxInclusive),
            ],
            None,
        );
        let seller = c.seller(self.seller.as_ref());
        let buyer = c.buyer(self.buyer.as_ref(), invoice_type);
        let lines = c.lines(self.items.as_deref(), price_mode, catalog);
        let remarks = c.multiline("remarks", self.remarks.as_ref(), REMARKS_MAX, false);
        let drawer = c.text("drawer", self.drawer.as_ref(), DRAWER_MAX, false);
        if let Some(lines) = &lines {
            c.totals(self.totals.as_ref(), &Totals::of(lines));
        }
        if let Some(errors) = ValidationErrors::from_findings(c.findings) {
            return Err(errors);
        }
        let parts = match (order_id, invoice_type, seller, buyer, lines) {
            (Some(order_id), Some(invoice_type), Some(seller), Some(buyer), Some(lines)) => {
                DraftParts {
                    order_id: Some(order_id),
                    kind: InvoiceKind::Blue,
                    invoice_type,
                    seller,
                    buyer,
                    lines,
                    remarks,
                    drawer,
                }
            }
            _ => unreachable!("every missing part left a finding"),
        };
        Ok(InvoiceDraft::from_parts(parts))
    }
}

#[derive(Default)]
struct Check {
    findings: Vec<Finding>,
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

impl Check {
    fn push(&mut self, path: impl Into<String>, code: FindingCode, message: impl Into<String>) {
        self.findings.push(Finding::new(path, code, message));
    }

    fn unknown(&mut self, path: &str, unknown: &Unknown) {
        for key in unknown.keys() {
            self.push(
                join(path, key),
                FindingCode::UnknownField,
                format!("`{key}` is not a field of this object"),
            );
        }
    }

    /// A string (or integer) leaf, trimmed; `None` if absent or blank.
    fn raw<'a>(&mut self, path: &str, v: Option<&'a Scalar>, required: bool) -> Option<&'a str> {
        let text = match v {
            None => None,
            Some(Scalar::Text(t)) => Some(t.trim()).filter(|t| !t.is_empty()),
            Some(Scalar::Fraction(f)) => {
                self.push(
                    path,
                    FindingCode::DecimalMustBeString,
                    format!("write decimals as strings, e.g. \"{f}\""),
                );
                return None;
            }
            Some(Scalar::Bool(_)) => {
                self.push(
                    path,
                    FindingCode::InvalidText,
                    "expected a string, found a boolean",
                );
                return None;
            }
        };
        if text.is_none() && required {
            self.push(path, FindingCode::Required, "is required");
        }
        text
    }

    /// [`Self::text`] that may hold line breaks (`\n`, or `\r\n` kept as `\n`), at most
    /// [`REMARKS_MAX_LINES`] lines: a 备注 is often written on several.
    fn multiline(
        &mut self,
        path: &str,
        v: Option<&Scalar>,
        max_chars: usize,
        required: bool,
    ) -> Option<String> {
        let Some(Scalar::Text(t)) = v else {
            return self.text(path, v, max_chars, required);
        };
        let normalized = t.replace("\r\n", "\n");
        let lines = normalized.trim().split('\n').count();
        if lines > REMARKS_MAX_LINES {
            self.push(
                path,
                FindingCode::InvalidText,
                format!("has {lines} lines; at most {REMARKS_MAX_LINES} allowed"),
            );
            return None;
        }
        // Checked as one line (a break counts as one character), kept with its breaks.
        let flat = Scalar::Text(normalized.replace('\n', " "));
        self.text(path, Some(&flat), max_chars, required)?;
        Some(normalized.trim().to_owned())
    }

    fn text(
        &mut self,
        path: &str,
        v: Option<&Scalar>,
        max_chars: usize,
        required: bool,
    ) -> Option<String> {
        let text = self.raw(path, v, required)?;
        let len = text.chars().count();
        if len > max_chars {
            self.push(
                path,
                FindingCode::InvalidText,
                format!("is {len} characters long; at most {max_chars} allowed"),
            );
            return None;
        }
        if text.chars().any(char::is_control) {
            self.push(
                path,
                FindingCode::InvalidText,
                "contains control characters",
            );
            return None;
        }
        if let Some(c) = text.chars().find(|c| not_printable(*c)) {
            self.push(
                path,
                FindingCode::UnsupportedCharacter,
                format!(
                    "contains U+{:04X}, which an invoice cannot carry (direction controls, \
                     emoji and invisible joiners are refused)",
                    u32::from(c)
                ),
            );
            return None;
        }
        Some(text.to_owned())
    }

    fn parsed<T>(
        &mut self,
        path: &str,
        v: Option<&Scalar>,
        required: bool,
        parse: impl FnOnce(&str) -> Result<T, (FindingCode, String)>,
    ) -> Option<T> {
        let text = self.raw(path, v, required)?;
        parse(text)
            .map_err(|(code, message)| self.push(path, code, message))
            .ok()
    }

    fn decimal<T>(
        &mut self,
        path: &str,
        v: Option<&Scalar>,
        parse: fn(&str) -> Result<T, DecimalError>,
    ) -> Option<T> {
        // An amount is exactly its digits: " 70.00" is an ERP's formatting slip, not a number.
        if let Some(Scalar::Text(t)) = v
            && t.trim() != t
            && !t.trim().is_empty()
        {
            self.push(
                path,
                FindingCode::InvalidDecimal,
                format!("{t:?} has spaces around it; write the digits only"),
            );
            return None;
        }
        self.parsed(path, v, false, |s| {
            parse(s).map_err(|e| (decimal_code(&e), e.to_string()))
        })
    }

    fn choice<T: Copy>(
        &mut self,
        path: &str,
        v: Option<&Scalar>,
        options: &[(&str, T)],
        default: Option<T>,
    ) -> Option<T> {
        let Some(text) = self.raw(path, v, default.is_none()) else {
            return default;
        };
        let found = options
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, t)| *t);
        if found.is_none() {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            self.push(
                path,
                FindingCode::InvalidChoice,
                format!("`{text}` is not one of: {}", names.join(", ")),
            );
        }
        found
    }

    fn taxpayer_id(
        &mut self,
        path: &str,
        v: Option<&Scalar>,
        required: bool,
    ) -> Option<TaxpayerId> {
        self.parsed(path, v, required, |s| {
            TaxpayerId::parse(s).map_err(|e| {
                let code = match e {
                    TaxpayerIdError::Length { .. } => FindingCode::TaxpayerIdLength,
                    TaxpayerIdError::Character { .. } => FindingCode::TaxpayerIdCharacter,
                    TaxpayerIdError::DivisionCode => FindingCode::TaxpayerIdDivisionCode,
                    _ => FindingCode::TaxpayerIdCheckCharacter,
                };
                (code, e.to_string())
            })
        })
    }

    fn seller(&mut self, input: Option<&PartyInput>) -> Option<Seller> {
        let Some(p) = input else {
            self.push("seller", FindingCode::Required, "is required");
            return None;
        };
        self.unknown("seller", &p.unknown);
        for (field, v) in [
            ("kind", &p.kind),
            ("id_number", &p.id_number),
            ("email", &p.email),
        ] {
            if v.is_some() {
                self.push(
                    join("seller", field),
                    FindingCode::NotAllowed,
                    "is a buyer field",
                );
            }
        }
        let taxpayer_id = self.taxpayer_id("seller.taxpayer_id", p.taxpayer_id.as_ref(), true);
        let name = self.text("seller.name", p.name.as_ref(), NAME_MAX, true);
        let address = self.text("seller.address", p.address.as_ref(), NAME_MAX, false);
        let phone = self.text("seller.phone", p.phone.as_ref(), PHONE_MAX, false);
        let bank_name = self.text("seller.bank_name", p.bank_name.as_ref(), NAME_MAX, false);
        let bank_account = self.text(
            "seller.bank_account",
            p.bank_account.as_ref(),
            ACCOUNT_MAX,
            false,
        );
        Some(Seller {
            taxpayer_id: taxpayer_id?,
            name: name?,
            address,
            phone,
            bank_name,
            bank_account,
        })
    }

    fn buyer(
        &mut self,
        input: Option<&PartyInput>,
        invoice_type: Option<InvoiceType>,
    ) -> Option<Buyer> {
        let Some(p) = input else {
            self.push("buyer", FindingCode::Required, "is required");
            return None;
        };
        self.unknown("buyer", &p.unknown);
        let kind = self.choice(
            "buyer.kind",
            p.kind.as_ref(),
            &[
                ("organization", BuyerKind::Organization),
                ("natural_person", BuyerKind::NaturalPerson),
            ],
            Some(BuyerKind::Organization),
        );
        let special = invoice_type == Some(InvoiceType::Special);
        let mut taxpayer_id = None;
        let mut id_number = None;
        match kind {
            Some(BuyerKind::Organization) => {
                taxpayer_id = self.taxpayer_id("buyer.taxpayer_id", p.taxpayer_id.as_ref(), true);
                if p.id_number.is_some() {
                    self.push(
                        "buyer.id_number",
                        FindingCode::NotAllowed,
                        "only natural-person buyers give an id number",
                    );
                }
            }
            Some(BuyerKind::NaturalPerson) => {
                if p.taxpayer_id.is_some() {
                    self.push(
                        "buyer.taxpayer_id",
                        FindingCode::NotAllowed,
                        "a natural-person buyer has no taxpayer id; give `id_number` instead",
                    );
                }
                if special {
                    self.push(
                        "buyer.kind",
                        FindingCode::NotAllowed,
                        "a special VAT invoice cannot be issued to a natural person",
                    );
                }
                id_number = self.parsed("buyer.id_number", p.id_number.as_ref(), false, |s| {
                    PersonalIdNumber::parse(s)
                        .map_err(|e| (FindingCode::InvalidPersonalId, e.to_string()))
                });
            }
            None => {}
        }
        let name = self.text("buyer.name", p.name.as_ref(), NAME_MAX, true);
        let address = self.text("buyer.address", p.address.as_ref(), NAME_MAX, false);
        let phone = self.text("buyer.phone", p.phone.as_ref(), PHONE_MAX, false);
        let bank_name = self.text("buyer.bank_name", p.bank_name.as_ref(), NAME_MAX, false);
        let bank_account = self.text(
            "buyer.bank_account",
            p.bank_account.as_ref(),
            ACCOUNT_MAX,
            false,
        );
        let email = self.text("buyer.email", p.email.as_ref(), NAME_MAX, false);
        if let Some(e) = &email {
            let valid = e
                .split_once('@')
                .is_some_and(|(user, host)| !user.is_empty() && host.contains('.'));
            if !valid {
                self.push(
                    "buyer.email",
                    FindingCode::InvalidText,
                    "is not an e-mail address",
                );
            }
        }
        if special {
            for (field, parsed, given) in [
                ("address", &address, present(p.address.as_ref())),
                ("phone", &phone, present(p.phone.as_ref())),
                ("bank_name", &bank_name, present(p.bank_name.as_ref())),
                (
                    "bank_account",
                    &bank_account,
                    present(p.bank_account.as_ref()),
                ),
            ] {
                // A given-but-invalid value already has its own finding.
                if parsed.is_none() && !given {
                    self.push(
                        join("buyer", field),
                        FindingCode::RequiredForSpecialInvoice,
                        "is required on a special VAT invoice (增值税专用发票)",
                    );
                }
            }
        }
        Some(Buyer {
            kind: kind?,
            taxpayer_id,
            id_number,
            name: name?,
            address,
            phone,
            bank_name,
            bank_account,
            email,
        })
    }

    fn lines(
        &mut self,
        items: Option<&[ItemInput]>,
        mode: Option<PriceMode>,
        catalog: &TaxCatalog,
    ) -> Option<Vec<Line>> {
        let Some(items) = items else {
            self.push(
                "items",
                FindingCode::Required,
                "at least one line is required",
            );
            return None;
        };
        if items.is_empty() || items.len() > MAX_LINES {
            self.push(
                "items",
                FindingCode::LineCount,
                format!("must have 1 to {MAX_LINES} lines, found {}", items.len()),
            );
            return None;
        }
        let before = self.findings.len();
        let mut lines: Vec<Option<Line>> = Vec::with_capacity(items.len());
        // The stated (price-mode) amount of the previous normal line, for discount checks.
        let mut previous: Option<(usize, Option<Amount>)> = None;
        for (i, item) in items.iter().enumerate() {
            let path = format!("items[{i}]");
            let line = self.line(
                &path,
                item,
                mode,
                catalog,
                lines.last().and_then(Option::as_ref),
                &mut previous,
                i,
            );
            lines.push(line);
        }
        let lines: Option<Vec<Line>> = lines.into_iter().collect();
        if let Some(lines) = &lines {
            let t = Totals::of(lines);
            if t.total.is_negative() || t.total.is_zero() {
                self.push(
                    "items",
                    FindingCode::MustBePositive,
                    format!("the invoice total must be above zero, is {}", t.total),
                );
            } else if !t.total.in_range() || !t.amount.in_range() {
                self.push(
                    "items",
                    FindingCode::OutOfRange,
                    "the invoice total is out of range",
                );
            }
        }
        // A line can be computed and still carry a finding (an unknown field, say).
        lines.filter(|_| self.findings.len() == before)
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site; the state is the loop's"
    )]
    fn line(
        &mut self,
        path: &str,
        item: &ItemInput,
        mode: Option<PriceMode>,
        catalog: &TaxCatalog,
        previous_line: Option<&Line>,
        previous: &mut Option<(usize, Option<Amount>)>,
        index: usize,
    ) -> Option<Line> {
        let p = |f: &str| join(path, f);
        self.unknown(path, &item.unknown);
        let kind = self.choice(
            &p("kind"),
            item.kind.as_ref(),
            &[
                ("normal", LineKind::Normal),
                ("discount", LineKind::Discount),
            ],
            Some(LineKind::Normal),
        )?;
        let discount = kind == LineKind::Discount;
        let discounted = if discount {
            match previous.take() {
                Some((prev_index, stated)) if prev_index + 1 == index => stated,
                _ => {
                    self.push(
                        p("kind"),
                        FindingCode::DiscountWithoutLine,
                        "a discount line must directly follow the normal line it discounts",
                    );
                    None
                }
            }
        } else {
            None
        };

        let name = if discount {
            self.text(&p("name"), item.name.as_ref(), NAME_MAX, false)
                .or_else(|| previous_line.map(|l| l.name().to_owned()))
        } else {
            self.text(&p("name"), item.name.as_ref(), NAME_MAX, true)
        };
        let tax_code = self.parsed(&p("tax_code"), item.tax_code.as_ref(), !discount, |s| {
            TaxClassificationCode::parse(s)
                .map_err(|e| (FindingCode::InvalidTaxCode, e.to_string()))
        });
        let tax_code = match (tax_code, discount, previous_line) {
            (Some(code), true, Some(prev)) if &code != prev.tax_code() => {
                self.push(
                    p("tax_code"),
                    FindingCode::DiscountMismatch,
                    "must equal the discounted line's tax code",
                );
                None
            }
            (None, true, Some(prev)) if item.tax_code.is_none() => Some(prev.tax_code().clone()),
            (code, ..) => code,
        };
        let entry = tax_code.as_ref().and_then(|code| {
            let entry = catalog.get(code);
            match entry {
                None => self.push(
                    p("tax_code"),
                    FindingCode::UnknownTaxCode,
                    format!(
                        "{code} is not in the tax classification catalog (version {})",
                        catalog.version()
                    ),
                ),
                Some(e) if e.group => self.push(
                    p("tax_code"),
                    FindingCode::GroupTaxCode,
                    format!(
                        "{code} ({}) is a group code: use one of the codes under it \
                         (GET /v1/tax-codes?q={} lists them)",
                        e.name,
                        code.as_str().trim_end_matches('0')
                    ),
                ),
                Some(_) => {}
            }
            entry.filter(|e| !e.group)
        });
        let rate = self.parsed(&p("tax_rate"), item.tax_rate.as_ref(), false, |s| {
            TaxRate::parse(s).map_err(|e| (FindingCode::InvalidTaxRate, e.to_string()))
        });
        let rate = match (rate, discount, previous_line) {
            (Some(r), true, Some(prev)) if r != prev.tax_rate() => {
                self.push(
                    p("tax_rate"),
                    FindingCode::DiscountMismatch,
                    "must equal the discounted line's tax rate",
                );
                None
            }
            (None, true, Some(prev)) if item.tax_rate.is_none() => Some(prev.tax_rate()),
            (None, false, _) if item.tax_rate.is_none() => match entry {
                Some(e) if e.default_rate.is_none() => {
                    self.push(
                        p("tax_rate"),
                        FindingCode::RateNotAllowed,
                        format!("is required: {} allows {}", e.code, e.allowed_text()),
                    );
                    None
                }
                Some(e) => e.default_rate,
                None => None,
            },
            (r, ..) => r,
        };
        // The rate must be one the code allows (its table rate or listed alternatives, a
        // small-scale 征收率, 免税 or 不征税 where the code's special management allows).
        if let (Some(r), Some(e)) = (rate, entry)
            && !e.allows(r)
        {
            self.push(
                p("tax_rate"),
                FindingCode::RateNotAllowed,
                format!(
                    "{r} is not allowed for {} ({}): use {}",
                    e.code,
                    e.name,
                    e.allowed_text()
                ),
            );
        }
        let specification = self.text(
            &p("specification"),
            item.specification.as_ref(),
            SPEC_MAX,
            false,
        );
        let unit = self.text(&p("unit"), item.unit.as_ref(), UNIT_MAX, false);
        let quantity = self.decimal(&p("quantity"), item.quantity.as_ref(), Quantity::parse);
        let unit_price = self.decimal(&p("unit_price"), item.unit_price.as_ref(), UnitPrice::parse);
        let stated = self.decimal(&p("amount"), item.amount.as_ref(), Amount::parse);

        let stated = if discount {
            for (field, given) in [
                ("quantity", item.quantity.is_some()),
                ("unit_price", item.unit_price.is_some()),
            ] {
                if given {
                    self.push(
                        p(field),
                        FindingCode::NotAllowed,
                        "a discount line carries only an amount",
                    );
                }
            }
            match (stated, item.amount.is_some()) {
                (None, false) => {
                    self.push(p("amount"), FindingCode::Required, "is required");
                    None
                }
                (Some(a), _) if !a.is_negative() => {
                    self.push(
                        p("amount"),
                        FindingCode::MustBeNegative,
                        format!("a discount is negative, found {a}"),
                    );
                    None
                }
                (Some(a), _) => {
                    if let Some(line_amount) = discounted
                        && a.abs() > line_amount
                    {
                        self.push(
                            p("amount"),
                            FindingCode::DiscountExceedsLine,
                            format!("discount {a} exceeds the discounted line's {line_amount}"),
                        );
                        None
                    } else {
                        Some(a)
                    }
                }
                (None, true) => None,
            }
        } else {
            if let Some(q) = quantity
                && (q.value().is_sign_negative() || q.value().is_zero())
            {
                self.push(
                    p("quantity"),
                    FindingCode::MustBePositive,
                    format!("must be above zero, found {q}"),
                );
            }
            match (item.quantity.is_some(), item.unit_price.is_some()) {
                (true, false) => self.push(
                    p("unit_price"),
                    FindingCode::QuantityWithoutPrice,
                    "is required when quantity is given",
                ),
                (false, true) => self.push(
                    p("quantity"),
                    FindingCode::QuantityWithoutPrice,
                    "is required when unit_price is given",
                ),
                _ => {}
            }
            let amount = match (stated, quantity, unit_price) {
                (Some(a), Some(q), Some(pr)) => {
                    match quantity_price_matches(q, pr, a) {
                        Some(true) => Some(a),
                        _ => {
                            self.push(
                            p("amount"),
                            FindingCode::QuantityPriceMismatch,
                            format!("quantity {q} × unit price {pr} does not equal amount {a} (±0.01)"),
                        );
                            None
                        }
                    }
                }
                (None, Some(q), Some(pr)) if item.amount.is_none() => {
                    let product = q
                        .value()
                        .checked_mul(pr.value())
                        .map(Amount::from_rounded)
                        .filter(|a| a.in_range());
                    if product.is_none() {
                        self.push(
                            p("amount"),
                            FindingCode::OutOfRange,
                            "quantity × unit price is out of range",
                        );
                    }
                    product
                }
                (None, None, None) if item.amount.is_none() => {
                    self.push(
                        p("amount"),
                        FindingCode::Required,
                        "is required (or give quantity and unit_price)",
                    );
                    None
                }
                (a, ..) => a,
            };
            if let Some(a) = amount
                && (a.is_negative() || a.is_zero())
            {
                self.push(
                    p("amount"),
                    FindingCode::MustBePositive,
                    format!("must be above zero, found {a}"),
                );
                *previous = Some((index, None));
                return None;
            }
            // A following discount is checked against the stated amount even if this line
            // has other findings, so one fault does not hide another.
            *previous = Some((index, amount.or(stated)));
            amount
        };

        let (stated, rate, mode, entry) = (stated?, rate?, mode?, entry?);
        let (amount, tax, unit_price) = match mode {
            PriceMode::TaxExclusive => (stated, rate.tax_on_exclusive(stated), unit_price),
            PriceMode::TaxInclusive => {
                let (excl, tax) = rate.split_inclusive(stated);
                (excl, tax, unit_price.map(|p| rate.exclusive_unit_price(p)))
            }
        };
        Some(Line::from_parts(LineParts {
            kind,
            name: name?,
            short_name: entry.short_name.clone(),
            tax_code: tax_code?,
            specification,
            unit,
            quantity: if discount { None } else { quantity },
            unit_price: if discount { None } else { unit_price },
            amount,
            tax_rate: rate,
            tax,
            reverses_line: None,
        }))
    }

    fn totals(&mut self, input: Option<&TotalsInput>, computed: &Totals) {
        let Some(t) = input else { return };
        self.unknown("totals", &t.unknown);
        for (field, v, actual) in [
            ("amount", &t.amount, computed.amount),
            ("tax", &t.tax, computed.tax),
            ("total", &t.total, computed.total),
        ] {
            let path = join("totals", field);
            if let Some(stated) = self.decimal(&path, v.as_ref(), Amount::parse)
                && stated != actual
            {
                self.push(
                    path,
                    FindingCode::TotalsMismatch,
                    format!("stated {stated}, computed from the lines {actual}"),
                );
            }
        }
    }
}

/// Whether a field was given with some content (blank strings count as absent).
fn present(v: Option<&Scalar>) -> bool {
    match v {
        None => false,
        Some(Scalar::Text(t)) => !t.trim().is_empty(),
        Some(_) => true,
    }
}

fn decimal_code(e: &DecimalError) -> FindingCode {
    match e {
        DecimalError::TooManyDecimalPlaces { .. } => FindingCode::TooManyDecimalPlaces,
        DecimalError::OutOfRange { .. } => FindingCode::OutOfRange,
        DecimalError::Negative { .. } => FindingCode::MustBePositive,
        _ => FindingCode::InvalidDecimal,
    }
}

/// A character no invoice carries: the bidirectional controls (which reorder what a reader
/// sees, U+202A–U+202E, U+2066–U+2069, U+200E, U+200F, U+061C), emoji and their joiners and
/// selectors (U+1F000–U+1FAFF, U+200D, U+FE0E, U+FE0F, tags U+E0000–U+E007F), other invisible
/// format characters (U+200B, U+2060, U+FEFF) and private-use code points. 生僻字 of CJK
/// Extension A/B and the symbols of GB 18030 (★, ※ …) are not among them.
#[must_use]
pub fn not_printable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x202A..=0x202E
            | 0x2066..=0x2069
            | 0x200B..=0x200F
            | 0x061C
            | 0x2060
            | 0xFEFF
            | 0xFE0E
            | 0xFE0F
            | 0x1F000..=0x1FAFF
            | 0xE0000..=0xE007F
            | 0xE000..=0xF8FF
            | 0xF0000..=0x10FFFF
    )
}

#[cfg(test)]
mod shape_tests {
    use super::*;

    fn finding(json: &str) -> (String, String) {
        let e = Order::from_json(json).unwrap_err();
        let f = &e.findings()[0];
        (f.path.clone(), f.message.clone())
    }

    #[test]
    fn shape_errors_name_the_field_in_json_words() {
        let (path, message) = finding(r#"{"order_id": "A-1", "buyer": "北京华章"}"#);
        assert_eq!(path, "buyer");
        assert!(message.contains("expected an object"), "{message}");
        let (path, message) = finding(r#"{"order_id": "A-1", "items": {"name": "x"}}"#);
        assert_eq!(path, "items");
        assert!(message.contains("expected an array"), "{message}");
        let (path, message) = finding(r#"{"order_id": "A-1", "items": [{"name": ["x"]}]}"#);
        assert_eq!(path, "items[0].name");
        assert!(
            !message.contains("line") && !message.contains("Scalar"),
            "{message}"
        );
    }
}

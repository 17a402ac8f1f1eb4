//! Reading an [`Invoice`] back from the JSON it serializes to. Every value goes through its
//! parser, and everything derived is recomputed and compared: totals, the upper-case total,
//! each line's tax (within the one fen an inclusive split may differ), and the number's year.

use serde::Deserialize;
use time::PrimitiveDateTime;

use crate::finding::{Finding, FindingCode, ValidationErrors};
use crate::invoice::{
    Buyer, BuyerKind, DraftParts, Invoice, InvoiceDraft, InvoiceKind, InvoiceType, Line, LineKind,
    LineParts, Seller, Totals,
};
use crate::invoice_number::InvoiceNumber;
use crate::money::{Amount, Quantity, UnitPrice};
use crate::order::OrderId;
use crate::red::{RedLetterFormNumber, RedReason, RedReference};
use crate::tax_code::TaxClassificationCode;
use crate::tax_rate::TaxRate;
use crate::taxpayer_id::{PersonalIdNumber, TaxpayerId};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InvoiceRecord {
    number: InvoiceNumber,
    #[serde(deserialize_with = "issue_time")]
    issued_at: PrimitiveDateTime,
    #[serde(default)]
    order_id: Option<OrderId>,
    kind: KindRecord,
    #[serde(default)]
    blue_number: Option<InvoiceNumber>,
    #[serde(default)]
    form_number: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    invoice_type: TypeRecord,
    seller: SellerRecord,
    buyer: BuyerRecord,
    lines: Vec<LineRecord>,
    totals: TotalsRecord,
    total_in_words: String,
    remarks: Option<String>,
    drawer: Option<String>,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
enum KindRecord {
    Blue,
    Red,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum TypeRecord {
    Special,
    Ordinary,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SellerRecord {
    taxpayer_id: TaxpayerId,
    name: String,
    address: Option<String>,
    phone: Option<String>,
    bank_name: Option<String>,
    bank_account: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BuyerRecord {
    kind: BuyerKindRecord,
    taxpayer_id: Option<TaxpayerId>,
    id_number: Option<PersonalIdNumber>,
    name: String,
    address: Option<String>,
    phone: Option<String>,
    bank_name: Option<String>,
    bank_account: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum BuyerKindRecord {
    Organization,
    NaturalPerson,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineRecord {
    kind: LineKindRecord,
    name: String,
    short_name: String,
    tax_code: TaxClassificationCode,
    specification: Option<String>,
    unit: Option<String>,
    quantity: Option<Quantity>,
    unit_price: Option<UnitPrice>,
    amount: Amount,
    tax_rate: TaxRate,
    tax: Amount,
    #[serde(default)]
    reverses_line: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum LineKindRecord {
    Normal,
    Discount,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TotalsRecord {
    amount: Amount,
    tax: Amount,
    total: Amount,
}

fn issue_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PrimitiveDateTime, D::Error> {
    let text = String::deserialize(d)?;
    crate::datetime::parse(&text)
        .map_err(|_| serde::de::Error::custom("issued_at must be yyyy-MM-dd HH:mm:ss"))
}

impl Invoice {
    /// Reads an invoice from the JSON its `Serialize` writes, recomputing and checking
    /// everything derived.
    ///
    /// # Errors
    /// [`ValidationErrors`]: one `malformed_document` finding for JSON or value errors, or a
    /// finding per derived value that disagrees.
    pub fn from_json(json: &str) -> Result<Self, ValidationErrors> {
        let one = |path: &str, code, message: String| {
            ValidationErrors::from_findings(vec![Finding::new(path, code, message)])
                .expect("one finding")
        };
        let r: InvoiceRecord = serde_json::from_str(json).map_err(|e| {
            one(
                "",
                FindingCode::MalformedDocument,
                format!("not a valid invoice document: {e}"),
            )
        })?;
        let mut findings = Vec::new();
        let kind = match (r.kind, r.blue_number, r.form_number, r.reason) {
            (KindRecord::Blue, None, None, None) => InvoiceKind::Blue,
            (KindRecord::Red, Some(blue_number), Some(form), Some(reason)) => {
                let form_number = RedLetterFormNumber::parse(&form)
                    .map_err(|e| one("form_number", FindingCode::InvalidText, e.to_string()))?;
                let reason = RedReason::parse(&reason)
                    .map_err(|e| one("reason", FindingCode::InvalidChoice, e.to_string()))?;
                InvoiceKind::Red(RedReference {
                    blue_number,
                    form_number,
                    reason,
                })
            }
            _ => return Err(one(
                "kind",
                FindingCode::InvalidChoice,
                "a red invoice names blue_number, form_number and reason; a blue one none of them"
                    .into(),
            )),
        };
        let lines: Vec<Line> = r
            .lines
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let expected = l.tax_rate.tax_on_exclusive(l.amount);
                if (l.tax - expected).abs() > Amount::parse("0.01").expect("literal") {
                    findings.push(Finding::new(
                        format!("lines[{i}].tax"),
                        FindingCode::TotalsMismatch,
                        format!("tax {} does not match {} × {}", l.tax, l.amount, l.tax_rate),
                    ));
                }
                Line::from_parts(LineParts {
                    kind: match l.kind {
                        LineKindRecord::Normal => LineKind::Normal,
                        LineKindRecord::Discount => LineKind::Discount,
                    },
                    name: l.name,
                    short_name: l.short_name,
                    tax_code: l.tax_code,
                    specification: l.specification,
                    unit: l.unit,
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    amount: l.amount,
                    tax_rate: l.tax_rate,
                    tax: l.tax,
                    reverses_line: l.reverses_line,
                })
            })
            .collect();
        let computed = Totals::of(&lines);
        for (field, stated, actual) in [
            ("totals.amount", r.totals.amount, computed.amount),
            ("totals.tax", r.totals.tax, computed.tax),
            ("totals.total", r.totals.total, computed.total),
        ] {
            if stated != actual {
                findings.push(Finding::new(
                    field,
                    FindingCode::TotalsMismatch,
                    format!("stated {stated}, computed {actual}"),
                ));
            }
        }
        let s = r.seller;
        let b = r.buyer;
        let draft = InvoiceDraft::from_parts(DraftParts {
            order_id: r.order_id,
            kind,
            invoice_type: match r.invoice_type {
                TypeRecord::Special => InvoiceType::Special,
                TypeRecord::Ordinary => InvoiceType::Ordinary,
            },
            seller: Seller {
                taxpayer_id: s.taxpayer_id,
                name: s.name,
                address: s.address,
                phone: s.phone,
                bank_name: s.bank_name,
                bank_account: s.bank_account,
            },
            buyer: Buyer {
                kind: match b.kind {
                    BuyerKindRecord::Organization => BuyerKind::Organization,
                    BuyerKindRecord::NaturalPerson => BuyerKind::NaturalPerson,
                },
                taxpayer_id: b.taxpayer_id,
                id_number: b.id_number,
                name: b.name,
                address: b.address,
                phone: b.phone,
                bank_name: b.bank_name,
                bank_account: b.bank_account,
                email: b.email,
            },
            lines,
            remarks: r.remarks,
            drawer: r.drawer,
        });
        if draft.total_in_words() != r.total_in_words {
            findings.push(Finding::new(
                "total_in_words",
                FindingCode::TotalsMismatch,
                format!(
                    "stated {}, computed {}",
                    r.total_in_words,
                    draft.total_in_words()
                ),
            ));
        }
        if let Some(errors) = ValidationErrors::from_findings(findings) {
            return Err(errors);
        }
        Self::issue(draft, r.number, r.issued_at)
            .map_err(|e| one("number", FindingCode::InvalidText, e.to_string()))
    }
}

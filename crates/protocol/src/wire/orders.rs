//! Orders, cloud → platform: a blue order alone or in a batch, a red one, and the answer.

use super::*;

/// cloud → platform: issue a blue invoice for an enterprise's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueOrder {
    /// The seller's taxpayer id.
    pub enterprise: String,
    /// The enterprise's order id (idempotency key for as long as the order exists).
    pub order_id: String,
    /// The order as the ERP sent it (`fapiao_model::Order` JSON).
    pub order: serde_json::Value,
    /// Hex SHA-256 of the ERP's request body: the same order_id with another hash is a
    /// conflict.
    pub request_hash: String,
}

/// cloud → platform: many blue orders in one envelope. Each is issued exactly as if it came
/// alone (its own number, device signature, upload and idempotency by `order_id`); the
/// platform commits them together, so the batch costs one exchange and one durable commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueBatch {
    /// The orders, at most [`IssueBatch::MAX`], all of one enterprise.
    pub orders: Vec<IssueOrder>,
}

impl IssueBatch {
    /// Most orders in one batch (also the ERP API's limit).
    pub const MAX: usize = 100;
}

/// platform → cloud: the answers to an [`IssueBatch`], one per order, in its order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchAnswer {
    /// `answers[i]` answers `orders[i]`.
    pub answers: Vec<OrderAnswer>,
}

/// What a red reverses, on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case", deny_unknown_fields)]
pub enum RedScopeWire {
    /// Everything that remains of the blue.
    Full,
    /// Named lines.
    Partial {
        /// The lines to reverse.
        lines: Vec<PartialLineWire>,
    },
}

impl RedScopeWire {
    /// The model's scope; a malformed amount or quantity is a finding naming its field.
    ///
    /// # Errors
    /// Every malformed field.
    pub fn to_scope(&self) -> Result<fapiao_model::red::RedScope, ValidationErrors> {
        use fapiao_model::red::{PartialReversal, RedScope};
        use fapiao_model::{Amount, Finding, FindingCode, Quantity};
        let lines = match self {
            Self::Full => return Ok(RedScope::Full),
            Self::Partial { lines } => lines,
        };
        let mut findings = Vec::new();
        let mut parts = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            let amount = match l.amount.as_deref().map(Amount::parse).transpose() {
                Ok(a) => a,
                Err(e) => {
                    findings.push(Finding::new(
                        format!("scope.lines[{i}].amount"),
                        FindingCode::InvalidDecimal,
                        e.to_string(),
                    ));
                    None
                }
            };
            let quantity = match l.quantity.as_deref().map(Quantity::parse).transpose() {
                Ok(q) => q,
                Err(e) => {
                    findings.push(Finding::new(
                        format!("scope.lines[{i}].quantity"),
                        FindingCode::InvalidDecimal,
                        e.to_string(),
                    ));
                    None
                }
            };
            parts.push(PartialReversal {
                line: l.line,
                amount,
                quantity,
            });
        }
        match ValidationErrors::from_findings(findings) {
            Some(e) => Err(e),
            None => Ok(RedScope::Partial(parts)),
        }
    }
}

/// One line of a partial red.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialLineWire {
    /// 1-based number of the blue's line.
    pub line: u32,
    /// Tax-exclusive amount to reverse (positive decimal string) …
    #[serde(default)]
    pub amount: Option<String>,
    /// … or the quantity to reverse.
    #[serde(default)]
    pub quantity: Option<String>,
}

/// cloud → platform: issue a red invoice against a blue one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedOrder {
    /// The seller's taxpayer id.
    pub enterprise: String,
    /// The enterprise's order id for this red.
    pub order_id: String,
    /// The blue invoice's number.
    pub blue_number: String,
    /// 冲红原因 code: 01 开票有误, 02 销货退回, 03 服务中止, 04 销售折让.
    pub reason: String,
    /// Full or partial.
    pub scope: RedScopeWire,
    /// For a partial red: the buyer's confirmation of the form (reference of the buyer's
    /// consent), which moves the form to 04 购销双方已确认.
    #[serde(default)]
    pub buyer_confirmation: Option<String>,
    /// 开票人.
    #[serde(default)]
    pub drawer: Option<String>,
    /// Hex SHA-256 of the ERP's request body.
    pub request_hash: String,
}

/// An invoice's status at tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaxStatus {
    /// Issued, not yet accepted by tax (queued for upload).
    Pending,
    /// Tax accepted it (or reported a duplicate of the same invoice).
    Accepted,
    /// Tax refused it definitely; the reason says why.
    Failed,
}

impl TaxStatus {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Failed => "failed",
        }
    }

    /// Parses [`TaxStatus::as_str`].
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "accepted" => Some(Self::Accepted),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// The red-letter confirmation form a red was issued against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormWire {
    /// 20-digit form number.
    pub number: String,
    /// Status code (01 … 09).
    pub status: String,
    /// Reason code.
    pub reason: String,
}

impl From<&fapiao_model::red::RedLetterForm> for FormWire {
    fn from(form: &fapiao_model::red::RedLetterForm) -> Self {
        Self {
            number: form.number().as_str().to_owned(),
            status: form.status().code().to_owned(),
            reason: form.reason().code().to_owned(),
        }
    }
}

/// platform → cloud: the answer to an [`IssueOrder`] or [`RedOrder`]. Read field by field
/// rather than by serde's derived reading of an internally tagged enum, which buffers the
/// fields before it knows the variant, and the buffered form cannot give the invoice's record
/// as text ([`WireInvoice::invoice`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OrderAnswer {
    /// Issued (or issued before: the same invoice again).
    Issued {
        /// The order id.
        order_id: String,
        /// The signed invoice.
        invoice: WireInvoice,
        /// Its tax status now.
        tax_status: TaxStatus,
        /// For a red: its form.
        #[serde(default)]
        form: Option<FormWire>,
    },
    /// Refused; nothing was issued or consumed.
    Refused(Refusal),
}

impl<'de> Deserialize<'de> for OrderAnswer {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OrderAnswerVisitor)
    }
}

/// Reads an [`OrderAnswer`] field by field, in any order: the fields of `issued` as they come
/// (the invoice straight from the text), any other into a map that becomes the [`Refusal`]
/// of `refused`.
struct OrderAnswerVisitor;

impl<'de> serde::de::Visitor<'de> for OrderAnswerVisitor {
    type Value = OrderAnswer;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an order answer")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<OrderAnswer, A::Error> {
        use serde::de::Error as _;
        let mut outcome: Option<String> = None;
        let mut order_id: Option<String> = None;
        let mut invoice: Option<WireInvoice> = None;
        let mut tax_status: Option<TaxStatus> = None;
        let mut form: Option<FormWire> = None;
        let mut rest = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let twice = |field: &'static str| A::Error::duplicate_field(field);
            match key.as_str() {
                "outcome" if outcome.is_some() => return Err(twice("outcome")),
                "outcome" => outcome = Some(map.next_value()?),
                "order_id" if order_id.is_some() => return Err(twice("order_id")),
                "order_id" => order_id = Some(map.next_value()?),
                "invoice" if invoice.is_some() => return Err(twice("invoice")),
                "invoice" => invoice = Some(map.next_value()?),
                "tax_status" if tax_status.is_some() => return Err(twice("tax_status")),
                "tax_status" => tax_status = Some(map.next_value()?),
                "form" if form.is_some() => return Err(twice("form")),
                "form" => form = map.next_value()?,
                _ => {
                    let value = map.next_value()?;
                    rest.insert(key, value);
                }
            }
        }
        match outcome.as_deref() {
            Some("issued") => Ok(OrderAnswer::Issued {
                order_id: order_id.ok_or_else(|| A::Error::missing_field("order_id"))?,
                invoice: invoice.ok_or_else(|| A::Error::missing_field("invoice"))?,
                tax_status: tax_status.ok_or_else(|| A::Error::missing_field("tax_status"))?,
                form,
            }),
            Some("refused") => Refusal::deserialize(serde_json::Value::Object(rest))
                .map(OrderAnswer::Refused)
                .map_err(A::Error::custom),
            Some(other) => Err(A::Error::unknown_variant(other, &["issued", "refused"])),
            None => Err(A::Error::missing_field("outcome")),
        }
    }
}

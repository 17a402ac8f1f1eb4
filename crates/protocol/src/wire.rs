//! Payloads carried inside envelopes, version [`PROTOCOL_VERSION`]. All JSON; money as decimal
//! strings; times as `yyyy-MM-dd HH:mm:ss` China time where the invoice uses them, RFC 3339
//! elsewhere.
//!
//! Every request payload is a [`Request`]: the body plus the sender's encryption certificate,
//! which the receiver path-validates and seals its answer to. Answers carry the message id
//! `re:<request message id>` so a client can tell its answer from any other.

use base64ct::{Base64, Encoding};
use fapiao_crypto::{Certificate, PrivateKey, Purpose, TrustStore};
use fapiao_issuer::SignedInvoice;
use fapiao_model::{Invoice, ValidationErrors, datetime};
use fapiao_render::DeviceSignature;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;

use crate::codes::Code;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// Envelope message types.
pub mod message_type {
    /// cloud → platform: issue a blue invoice ([`super::IssueOrder`]).
    pub const ORDER_ISSUE: &str = "order.issue";
    /// cloud → platform: issue a red invoice ([`super::RedOrder`]).
    pub const ORDER_RED: &str = "order.red";
    /// platform → cloud: the answer to an order ([`super::OrderAnswer`]).
    pub const ORDER_ANSWER: &str = "order.answer";
    /// cloud → platform: issue many blue invoices in one exchange ([`super::IssueBatch`]).
    pub const ORDER_BATCH: &str = "order.batch";
    /// platform → cloud: one answer per order of a batch ([`super::BatchAnswer`]).
    pub const ORDER_BATCH_ANSWER: &str = "order.batch_answer";
    /// platform → cloud: an invoice's tax status changed ([`super::StatusNotice`]).
    pub const INVOICE_STATUS: &str = "invoice.status";
    /// Any answer that only acknowledges ([`super::Ack`]).
    pub const ACK: &str = "ack";
    /// platform → tax: an issued invoice ([`super::Upload`]).
    pub const INVOICE_UPLOAD: &str = "invoice.upload";
    /// tax → platform: the answer to an upload ([`super::SignedReceipt`]).
    pub const UPLOAD_RECEIPT: &str = "upload.receipt";
    /// platform or agent → tax: many issued invoices in one exchange ([`super::UploadBatch`]).
    pub const INVOICE_UPLOAD_BATCH: &str = "invoice.upload_batch";
    /// tax → platform: one signed receipt per invoice of a batch ([`super::Receipts`]).
    pub const UPLOAD_RECEIPTS: &str = "upload.receipts";
    /// platform → cloud: many status notices in one exchange ([`super::StatusNotices`]).
    pub const INVOICE_STATUS_BATCH: &str = "invoice.status_batch";
    /// cloud → platform: one result per notice of a batch ([`super::NoticeResults`]).
    pub const NOTICE_RESULTS: &str = "notice.results";
    /// platform → tax: ask for a number range ([`super::RangeRequest`]).
    pub const RANGE_REQUEST: &str = "range.request";
    /// tax → platform: a granted range ([`super::RangeGrant`]).
    pub const RANGE_GRANT: &str = "range.grant";
    /// Any refusal of a request ([`super::Refusal`]).
    pub const REFUSAL: &str = "refusal";
    /// agent → cloud: lease pending orders ([`super::PullOrders`]).
    pub const ORDERS_PULL: &str = "orders.pull";
    /// cloud → agent: the leased orders ([`super::LeasedOrders`]).
    pub const ORDERS_LEASED: &str = "orders.leased";
    /// agent → cloud: orders durably handled ([`super::OrderAcks`]).
    pub const ORDERS_ACK: &str = "orders.ack";
    /// agent → platform: a number block ([`super::BlockRequest`]).
    pub const BLOCK_REQUEST: &str = "block.request";
    /// platform → agent: the block granted ([`super::RangeGrant`]).
    pub const BLOCK_GRANT: &str = "block.grant";
    /// agent → platform: credit quota for a month ([`super::QuotaRequest`]).
    pub const QUOTA_REQUEST: &str = "quota.request";
    /// platform → agent: the quota granted ([`super::QuotaGrant`]).
    pub const QUOTA_GRANT: &str = "quota.grant";
    /// agent → platform: an invoice issued on the enterprise's premises ([`super::Report`]).
    pub const INVOICE_REPORT: &str = "invoice.report";
    /// agent → platform: invoices issued on the premises and tax's receipts for them, many in
    /// one exchange ([`super::ReportBatch`]).
    pub const INVOICE_REPORT_BATCH: &str = "invoice.report_batch";
    /// platform → agent: one result per item of a report batch ([`super::ReportResults`]).
    pub const REPORT_RESULTS: &str = "report.results";
    /// platform → tax: numbers of a platform range now used by an agent ([`super::RangeAssign`]).
    pub const RANGE_ASSIGN: &str = "range.assign";
    /// cloud → platform: the invoices of the cloud's enterprises, a page ([`super::InvoiceList`]).
    pub const INVOICES_LIST: &str = "invoices.list";
    /// platform → cloud: a page of invoice references ([`super::InvoiceRefs`]).
    pub const INVOICES_PAGE: &str = "invoices.page";
    /// cloud → platform: the notices, invoice included, of some invoices
    /// ([`super::InvoiceFetch`]).
    pub const INVOICES_FETCH: &str = "invoices.fetch";
    /// platform → cloud: the answer to [`INVOICES_FETCH`] ([`super::StatusNotices`]).
    pub const INVOICES_FOUND: &str = "invoices.found";
    /// cloud → platform: the issuing device's signature of an invoice's OFD
    /// ([`super::OfdSign`]).
    pub const OFD_SIGN: &str = "ofd.sign";
    /// platform → cloud: the answer to [`OFD_SIGN`] ([`super::OfdSignature`]).
    pub const OFD_SIGNATURE: &str = "ofd.signature";
}

/// Why a payload could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not the JSON shape of the message type.
    #[error("payload: {0}")]
    Json(#[from] serde_json::Error),
    /// A base64 field is not base64.
    #[error("field `{0}` is not base64")]
    Base64(&'static str),
    /// A certificate does not parse or is not acceptable.
    #[error("certificate `{0}`: {1}")]
    Certificate(&'static str, String),
    /// The embedded invoice does not read back.
    #[error("invoice: {0}")]
    Invoice(ValidationErrors),
    /// A time field is malformed.
    #[error("field `{0}` is not a valid time")]
    Time(&'static str),
    /// A signature does not verify.
    #[error("the {0} signature does not verify")]
    Signature(&'static str),
    /// A receipt names another number or another content than the invoice it answers.
    #[error("the receipt is for another invoice")]
    ReceiptForAnother,
}

/// Hex SM3 of an invoice's signed content (`docs/layout.md`, "signed bytes"): what tax's
/// receipts name as `content_hash`.
#[must_use]
pub fn content_hash(signed: &SignedInvoice) -> String {
    crate::erp::hex(&fapiao_crypto::primitives::sm3(
        &fapiao_render::signed_content(&signed.invoice, signed.signature.signed_at),
    ))
}

/// Base64 (standard alphabet, padded).
#[must_use]
pub fn b64(bytes: &[u8]) -> String {
    Base64::encode_string(bytes)
}

/// Decodes [`b64`] text; `field` names it in the error.
///
/// # Errors
/// [`WireError::Base64`].
pub fn unb64(text: &str, field: &'static str) -> Result<Vec<u8>, WireError> {
    Base64::decode_vec(text).map_err(|_| WireError::Base64(field))
}

/// Every request payload: the body and where to send the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request<T> {
    /// The sender's encryption certificate, DER base64.
    pub reply_certificate: String,
    /// The message-type specific body.
    pub body: T,
}

impl<T> Request<T> {
    /// The reply certificate, checked: valid for encryption at `now` under `trust`, and naming
    /// the same holder as `signer` (the envelope's verified signer).
    ///
    /// # Errors
    /// [`WireError::Certificate`].
    pub fn reply_to(
        &self,
        signer: &Certificate,
        trust: &TrustStore,
        now: OffsetDateTime,
    ) -> Result<Certificate, WireError> {
        let bad = |m: String| WireError::Certificate("reply_certificate", m);
        let cert = Certificate::from_der(&unb64(&self.reply_certificate, "reply_certificate")?)
            .map_err(|e| bad(e.to_string()))?;
        trust
            .validate(&cert, &[], Purpose::Encryption, now)
            .map_err(|e| bad(e.to_string()))?;
        let same = matches!((cert.subject(), signer.subject()), (Ok(a), Ok(b)) if a == b);
        if !same {
            return Err(bad("names another holder than the signer".into()));
        }
        Ok(cert)
    }
}

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

/// A refusal with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// A [`Code`] string.
    pub code: String,
    /// Human-readable.
    pub message: String,
    /// For validation: every finding.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<FindingWire>,
}

impl Refusal {
    /// A refusal without findings.
    #[must_use]
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().to_owned(),
            message: message.into(),
            findings: Vec::new(),
        }
    }

    /// `invalid_order` with every finding.
    #[must_use]
    pub fn invalid(errors: &ValidationErrors) -> Self {
        Self {
            code: Code::InvalidOrder.as_str().to_owned(),
            message: format!("the order has {} problem(s)", errors.findings().len()),
            findings: errors
                .findings()
                .iter()
                .map(|f| FindingWire {
                    path: f.path.clone(),
                    code: f.code.as_str().to_owned(),
                    message: f.message.clone(),
                })
                .collect(),
        }
    }

    /// The code, if it is a known one.
    #[must_use]
    pub fn code(&self) -> Option<Code> {
        Code::parse(&self.code)
    }
}

/// One validation finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingWire {
    /// Field path, e.g. `items[0].tax_rate`.
    pub path: String,
    /// Stable finding code.
    pub code: String,
    /// Human-readable.
    pub message: String,
}

/// platform → cloud: an invoice's tax status changed; agent → platform: tax answered an
/// agent's upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusNotice {
    /// Invoice number.
    pub number: String,
    /// The seller's taxpayer id.
    pub enterprise: String,
    /// New status.
    pub tax_status: TaxStatus,
    /// For failed: why.
    #[serde(default)]
    pub reason: Option<String>,
    /// tax's signed receipt, when there is one.
    #[serde(default)]
    pub receipt: Option<SignedReceipt>,
    /// platform → cloud, for an invoice issued by an enterprise's agent: the invoice itself
    /// (cloud has not seen it before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued: Option<Issued>,
}

/// platform → cloud: many status notices in one exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusNotices {
    /// The notices, at most [`StatusNotices::MAX`].
    pub notices: Vec<StatusNotice>,
}

impl StatusNotices {
    /// Most notices in one batch.
    pub const MAX: usize = 64;
}

/// cloud → platform: the answer to [`StatusNotices`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoticeResults {
    /// `results[i]` answers `notices[i]`: `None` when stored, else why not.
    pub results: Vec<Option<Refusal>>,
}

/// cloud → platform: to reconcile, the invoices of the cloud's enterprises issued at or after
/// `from`, in (issue time, number) order, after `after` (the last of the previous page), at
/// most [`InvoiceList::MAX`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceList {
    /// China time, `YYYY-MM-DD HH:MM:SS`.
    pub from: String,
    /// The issue time and number of the last invoice of the previous page.
    #[serde(default)]
    pub after: Option<(String, String)>,
}

impl InvoiceList {
    /// Most references in one page.
    pub const MAX: usize = 500;
}

/// One invoice as platform holds it, for a cloud to compare with its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRef {
    /// Invoice number.
    pub number: String,
    /// The seller.
    pub enterprise: String,
    /// Its order.
    pub order_id: String,
    /// China time, `YYYY-MM-DD HH:MM:SS`.
    pub issued_at: String,
    /// Its tax status at platform.
    pub tax_status: TaxStatus,
}

/// platform → cloud: a page of [`InvoiceRef`]s; fewer than [`InvoiceList::MAX`] ends the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRefs {
    /// The references, in order.
    pub items: Vec<InvoiceRef>,
}

/// cloud → platform: the notices of these invoices (each with the invoice itself), for an
/// invoice the cloud lacks or holds with another status. Answered with [`StatusNotices`]
/// (message `invoices.found`), leaving out numbers not of the cloud's enterprises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceFetch {
    /// At most [`StatusNotices::MAX`] numbers.
    pub numbers: Vec<String>,
}

/// cloud → platform: sign the OFD layout file of an invoice of one of the cloud's
/// enterprises. Platform renders the OFD itself from the invoice it holds (it signs nothing it
/// did not render) and signs its `Signature.xml` with the hosted device that signed the
/// invoice; answered with [`OfdSignature`], or refused `not_found` (no such invoice of the
/// cloud's) or `ofd_unavailable` (no hosted device holds the key that signed it: an agent
/// issued it, or the device's key was replaced since).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfdSign {
    /// The invoice's number.
    pub number: String,
}

/// platform → cloud: the signature of an invoice's OFD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfdSignature {
    /// The invoice's number.
    pub number: String,
    /// Base64 of the DER `SEQUENCE {r, s}`: SM2 with SM3 (ID `1234567812345678`) by the
    /// invoice's issuing device over the OFD's `Signature.xml`, as `SignedValue.dat` holds it.
    pub signature: String,
}

/// An invoice issued by an agent, as platform passes it on to cloud.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Issued {
    /// The enterprise's order id.
    pub order_id: String,
    /// Hex SHA-256 of the ERP's request body.
    pub request_hash: String,
    /// The signed invoice.
    pub invoice: WireInvoice,
    /// For a red: its form.
    #[serde(default)]
    pub form: Option<FormWire>,
}

/// agent → cloud: lease up to `max` pending orders of the agent's enterprise for
/// `lease_seconds`. An order leased and not acknowledged in time can be leased again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullOrders {
    /// Most orders to lease (1..=100).
    pub max: u32,
    /// Lease length (5..=3600 s).
    pub lease_seconds: u32,
    /// Also the orders still leased to this agent (its first pull after a restart: what it
    /// leased but had not stored when it stopped comes back at once, not when the lease ends).
    #[serde(default)]
    pub resume: bool,
}

/// A queued order: what cloud would have sent platform in sync mode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueuedOrder {
    /// A blue order.
    Blue(IssueOrder),
    /// A red order.
    Red(RedOrder),
}

impl QueuedOrder {
    /// The order id.
    #[must_use]
    pub fn order_id(&self) -> &str {
        match self {
            Self::Blue(o) => &o.order_id,
            Self::Red(o) => &o.order_id,
        }
    }

    /// The request hash.
    #[must_use]
    pub fn request_hash(&self) -> &str {
        match self {
            Self::Blue(o) => &o.request_hash,
            Self::Red(o) => &o.request_hash,
        }
    }
}

/// cloud → agent: the orders leased, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeasedOrders {
    /// The orders.
    pub orders: Vec<QueuedOrder>,
}

/// How the agent handled one leased order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OrderOutcome {
    /// Issued and stored on the enterprise's premises (the invoice reaches cloud through
    /// platform).
    Issued {
        /// The invoice number.
        number: String,
    },
    /// Refused; nothing was issued.
    Refused(Refusal),
}

/// One acknowledgement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderAck {
    /// The order id.
    pub order_id: String,
    /// What became of it.
    #[serde(flatten)]
    pub outcome: OrderOutcome,
}

/// agent → cloud: orders durably handled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderAcks {
    /// The acknowledgements.
    pub acks: Vec<OrderAck>,
}

/// agent → platform: a number block for `(year, province)`. `key` makes the request
/// idempotent: the same key returns the same block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRequest {
    /// Idempotency key (the agent derives it from its durable state).
    pub key: String,
    /// Two-digit year.
    pub year: u8,
    /// Province code.
    pub province: u8,
}

/// agent → platform: `amount` more of the month's credit quota. Idempotent by `key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaRequest {
    /// Idempotency key.
    pub key: String,
    /// `YYYY-MM`.
    pub month: String,
    /// Decimal amount asked for.
    pub amount: String,
}

/// platform → agent: quota granted for a month (may be less than asked, down to zero).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaGrant {
    /// `YYYY-MM`.
    pub month: String,
    /// Decimal amount granted by this request.
    pub amount: String,
}

/// agent → platform: an invoice the agent issued, with the order it was issued for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The enterprise (seller).
    pub enterprise: String,
    /// The invoice and its order.
    pub issued: Issued,
}

/// agent → platform: what the agent has to tell platform, in the order of its queue: the
/// invoices it issued (each with its order, as in [`Report`]) and tax's receipts for its
/// uploads (as in an agent's [`StatusNotice`]). Each item is checked and answered as if it
/// came alone, after the ones before it (a red after its blue, a receipt after its invoice);
/// platform records them all in one durable commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportBatch {
    /// The enterprise (seller) of every item.
    pub enterprise: String,
    /// The items, 1 to [`ReportBatch::MAX`].
    pub items: Vec<ReportItem>,
}

impl ReportBatch {
    /// Most items in one report batch: a full upload batch's invoices and their receipts.
    pub const MAX: usize = 2 * UploadBatch::MAX;
}

/// One item of a [`ReportBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportItem {
    /// An invoice the agent issued, with its order.
    Invoice(Issued),
    /// Tax's receipt for the agent's upload of an invoice reported before.
    Status(Box<StatusNotice>),
}

/// platform → agent: the answer to a [`ReportBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportResults {
    /// `results[i]` answers `items[i]`: `None` when recorded (or on record already), else
    /// why not.
    pub results: Vec<Option<Refusal>>,
}

/// platform → tax: `first..=last` of a range granted to the platform is now used by
/// `uploader` (an agent); tax accepts that agent's uploads in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeAssign {
    /// The agent's identity (`agent:<name>`).
    pub uploader: String,
    /// The numbers.
    pub range: RangeGrant,
}

/// An empty acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ack {}

/// platform → tax: one issued invoice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    /// The signed invoice.
    pub invoice: WireInvoice,
}

/// platform or agent → tax: many issued invoices in one exchange. Each is checked, recorded
/// and receipted exactly as if it came alone ([`Upload`]), after the ones before it (a red
/// finds its blue earlier in the same batch); tax records them in one durable commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadBatch {
    /// The signed invoices, at most [`UploadBatch::MAX`]; a red never before its blue (nor in
    /// a batch sent while its blue's is unanswered).
    pub invoices: Vec<WireInvoice>,
}

impl UploadBatch {
    /// Most invoices in one upload batch.
    pub const MAX: usize = 64;
}

/// tax → platform: the answer to an [`UploadBatch`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipts {
    /// `receipts[i]` answers `invoices[i]`, each signed on its own.
    pub receipts: Vec<SignedReceipt>,
}

/// Upload status, as the real channel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadStatus {
    /// Accepted and on record.
    Accepted,
    /// Received, not yet decided; ask again later.
    Processing,
    /// Refused; `code` and `reason` say why.
    Failed,
    /// This very invoice was accepted before; the receipt is the original's.
    Duplicate,
}

/// tax's receipt for an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// Invoice number.
    pub number: String,
    /// Outcome.
    pub status: UploadStatus,
    /// For failed: a [`Code`] string.
    #[serde(default)]
    pub code: Option<String>,
    /// For failed: why.
    #[serde(default)]
    pub reason: Option<String>,
    /// Hex SM3 of the invoice's signed content, identifying exactly what was accepted.
    pub content_hash: String,
    /// When tax first accepted it (RFC 3339), for accepted and duplicate.
    #[serde(default)]
    pub accepted_at: Option<String>,
    /// Receipt serial at tax.
    pub receipt_id: String,
}

impl Receipt {
    /// The tax status a final receipt gives (`accepted` for accepted and duplicate, `failed`
    /// with `"<code>: <reason>"`); `None` while tax is still processing.
    #[must_use]
    pub fn tax_status(&self) -> Option<(TaxStatus, Option<String>)> {
        match self.status {
            UploadStatus::Accepted | UploadStatus::Duplicate => Some((TaxStatus::Accepted, None)),
            UploadStatus::Failed => Some((
                TaxStatus::Failed,
                Some(format!(
                    "{}: {}",
                    self.code.clone().unwrap_or_default(),
                    self.reason.clone().unwrap_or_default()
                )),
            )),
            UploadStatus::Processing => None,
        }
    }
}

/// A [`Receipt`] signed by tax's signing key, verifiable on its own (stored by platform and
/// cloud).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReceipt {
    /// The receipt.
    pub receipt: Receipt,
    /// Signature over the receipt's compact JSON ([`SignedReceipt::signed_bytes`]), DER base64.
    pub signature: String,
    /// tax's signing certificate, DER base64.
    pub certificate: String,
}

impl SignedReceipt {
    /// The bytes signed: the compact JSON of the receipt, fields in declaration order.
    ///
    /// # Errors
    /// [`WireError::Json`] (not for a well-formed receipt).
    pub fn signed_bytes(receipt: &Receipt) -> Result<Vec<u8>, WireError> {
        Ok(serde_json::to_vec(receipt)?)
    }

    /// Signs a receipt.
    ///
    /// # Errors
    /// [`WireError::Signature`] when signing fails.
    pub fn sign(
        receipt: Receipt,
        key: &PrivateKey,
        certificate: &Certificate,
    ) -> Result<Self, WireError> {
        let signature = key
            .sign(&Self::signed_bytes(&receipt)?)
            .map_err(|_| WireError::Signature("receipt"))?;
        Ok(Self {
            receipt,
            signature: b64(&signature),
            certificate: b64(certificate.der()),
        })
    }

    /// Verifies: the certificate is a `tax` signing certificate valid at `now` under `trust`,
    /// and the signature verifies.
    ///
    /// # Errors
    /// [`WireError`].
    pub fn verify(&self, trust: &TrustStore, now: OffsetDateTime) -> Result<(), WireError> {
        self.verify_with(|cert| trust.validate(cert, &[], Purpose::Signing, now))
    }

    /// [`Self::verify`] with the certificate checked as it stood at `at`, when the receipt
    /// was made (an offline check later: CRLs published since are no alarm, a revocation
    /// before `at` is; [`TrustStore::validate_at`]).
    ///
    /// # Errors
    /// [`WireError`].
    pub fn verify_at(&self, trust: &TrustStore, at: OffsetDateTime) -> Result<(), WireError> {
        self.verify_with(|cert| trust.validate_at(cert, &[], Purpose::Signing, at))
    }

    fn verify_with(
        &self,
        validate: impl FnOnce(&Certificate) -> Result<Vec<Certificate>, fapiao_crypto::PathError>,
    ) -> Result<(), WireError> {
        let cert = Certificate::from_der(&unb64(&self.certificate, "certificate")?)
            .map_err(|e| WireError::Certificate("certificate", e.to_string()))?;
        validate(&cert).map_err(|e| WireError::Certificate("certificate", e.to_string()))?;
        let is_tax = cert
            .subject()
            .is_ok_and(|s| s.role == fapiao_crypto::Role::Tax);
        if !is_tax {
            return Err(WireError::Certificate(
                "certificate",
                "not a tax certificate".into(),
            ));
        }
        let key = cert
            .public_key()
            .map_err(|e| WireError::Certificate("certificate", e.to_string()))?;
        key.verify(
            &Self::signed_bytes(&self.receipt)?,
            &unb64(&self.signature, "signature")?,
        )
        .map_err(|_| WireError::Signature("receipt"))
    }

    /// [`SignedReceipt::verify`], and the receipt answers `invoice`: its number and its
    /// content hash.
    ///
    /// # Errors
    /// [`WireError`]; [`WireError::ReceiptForAnother`] for another number or content.
    pub fn verify_for(
        &self,
        invoice: &SignedInvoice,
        trust: &TrustStore,
        now: OffsetDateTime,
    ) -> Result<(), WireError> {
        self.verify(trust, now)?;
        if self.receipt.number != invoice.invoice.number().as_str()
            || self.receipt.content_hash != content_hash(invoice)
        {
            return Err(WireError::ReceiptForAnother);
        }
        Ok(())
    }
}

/// platform → tax: grant a range of numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    /// Two-digit year.
    pub year: u8,
    /// Province code of the sellers it is for.
    pub province: u8,
    /// How many numbers.
    pub count: u64,
}

/// tax → platform: a granted range `first..=last` of sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeGrant {
    /// Two-digit year.
    pub year: u8,
    /// Province code.
    pub province: u8,
    /// Channel digit.
    pub channel: u8,
    /// First sequence.
    pub first: u64,
    /// Last sequence.
    pub last: u64,
}

/// A signed invoice as JSON: the invoice record (`fapiao_model::Invoice` serialized) and the
/// device signature.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireInvoice {
    /// The invoice record, as the JSON text it came in: it passes through roles as it is and
    /// is read (every derived value re-checked) only where it is checked,
    /// [`WireInvoice::to_signed`].
    pub invoice: Box<RawValue>,
    /// The issuing device's signature.
    pub signature: WireSignature,
}

/// The same signature and the same record: the same JSON, however it is spaced or its keys
/// ordered.
impl PartialEq for WireInvoice {
    fn eq(&self, other: &Self) -> bool {
        let value = |raw: &RawValue| serde_json::from_str::<serde_json::Value>(raw.get()).ok();
        self.signature == other.signature
            && (self.invoice.get() == other.invoice.get()
                || value(&self.invoice).is_some_and(|v| Some(v) == value(&other.invoice)))
    }
}

/// The issuing device's signature on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSignature {
    /// `yyyy-MM-dd HH:mm:ss` China time.
    pub signed_at: String,
    /// DER SM2 signature, base64.
    pub value: String,
    /// Device signing certificate, DER base64.
    pub certificate: String,
}

impl WireInvoice {
    /// The wire form of a signed invoice.
    ///
    /// # Errors
    /// [`WireError::Json`] (not for a valid invoice).
    pub fn from_signed(signed: &SignedInvoice) -> Result<Self, WireError> {
        Ok(Self {
            invoice: serde_json::value::to_raw_value(&signed.invoice)?,
            signature: WireSignature {
                signed_at: datetime::format(signed.signature.signed_at),
                value: b64(&signed.signature.value),
                certificate: b64(&signed.signature.certificate),
            },
        })
    }

    /// Reads it back, re-checking every derived value of the invoice (the signature is checked
    /// separately with `fapiao_issuer::verify`).
    ///
    /// # Errors
    /// [`WireError`].
    pub fn to_signed(&self) -> Result<SignedInvoice, WireError> {
        let invoice = Invoice::from_json(self.invoice.get()).map_err(WireError::Invoice)?;
        let signed_at =
            datetime::parse(&self.signature.signed_at).map_err(|_| WireError::Time("signed_at"))?;
        Ok(SignedInvoice {
            invoice,
            signature: DeviceSignature {
                signed_at,
                value: unb64(&self.signature.value, "signature.value")?,
                certificate: unb64(&self.signature.certificate, "signature.certificate")?,
            },
        })
    }

    /// The record's `number` field as it stands, unchecked (to name an invoice that cannot be
    /// read whole); `None` when there is none.
    #[must_use]
    pub fn number(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct Numbered {
            number: Option<String>,
        }
        serde_json::from_str::<Numbered>(self.invoice.get())
            .ok()
            .and_then(|n| n.number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issued(form: Option<FormWire>) -> OrderAnswer {
        OrderAnswer::Issued {
            order_id: "ORD-1".into(),
            invoice: WireInvoice {
                invoice: RawValue::from_string(
                    r#"{"number":"25312000000000000001","lines":[1,2]}"#.into(),
                )
                .unwrap(),
                signature: WireSignature {
                    signed_at: "2026-11-25 10:00:00".into(),
                    value: "c2ln".into(),
                    certificate: "Y2VydA==".into(),
                },
            },
            tax_status: TaxStatus::Pending,
            form,
        }
    }

    /// Every shape of answer reads back as it was written, alone and inside a batch, and the
    /// record inside comes back as the very text that was sent.
    #[test]
    fn order_answers_read_back_as_written() {
        let refused = OrderAnswer::Refused(Refusal {
            code: "invalid_order".into(),
            message: "the order has 1 problem(s)".into(),
            findings: vec![FindingWire {
                path: "items[0].tax_rate".into(),
                code: "invalid_choice".into(),
                message: "not a rate".into(),
            }],
        });
        let form = FormWire {
            number: "31011526112400000098".into(),
            status: "01".into(),
            reason: "01".into(),
        };
        let answers = vec![
            issued(None),
            issued(Some(form)),
            refused,
            OrderAnswer::Refused(Refusal::new(Code::Internal, "internal error")),
        ];
        for answer in &answers {
            let text = serde_json::to_string(answer).unwrap();
            let back: OrderAnswer = serde_json::from_str(&text).unwrap();
            assert_eq!(&back, answer, "{text}");
            assert_eq!(serde_json::to_string(&back).unwrap(), text);
        }
        let batch = BatchAnswer { answers };
        let text = serde_json::to_string(&batch).unwrap();
        assert_eq!(serde_json::from_str::<BatchAnswer>(&text).unwrap(), batch);
        let OrderAnswer::Issued { invoice, .. } = &batch.answers[0] else {
            unreachable!()
        };
        assert_eq!(
            invoice.invoice.get(),
            r#"{"number":"25312000000000000001","lines":[1,2]}"#
        );
        assert_eq!(invoice.number().as_deref(), Some("25312000000000000001"));
    }

    /// A report batch reads back as written, the records inside as the very text sent;
    /// an item of an unknown kind is an error naming it.
    #[test]
    fn report_batches_read_back_as_written() {
        let OrderAnswer::Issued { invoice, form, .. } = issued(None) else {
            unreachable!()
        };
        let batch = ReportBatch {
            enterprise: "91330106MA2B2C3D4E".into(),
            items: vec![
                ReportItem::Invoice(Issued {
                    order_id: "ORD-1".into(),
                    request_hash: "ab".repeat(32),
                    invoice,
                    form,
                }),
                ReportItem::Status(Box::new(StatusNotice {
                    number: "25312000000000000001".into(),
                    enterprise: "91330106MA2B2C3D4E".into(),
                    tax_status: TaxStatus::Accepted,
                    reason: None,
                    receipt: None,
                    issued: None,
                })),
            ],
        };
        let text = serde_json::to_string(&batch).unwrap();
        let back: ReportBatch = serde_json::from_str(&text).unwrap();
        assert_eq!(back, batch);
        let ReportItem::Invoice(issued) = &back.items[0] else {
            panic!("{text}")
        };
        assert_eq!(
            issued.invoice.invoice.get(),
            r#"{"number":"25312000000000000001","lines":[1,2]}"#
        );
        assert!(text.contains(r#"{"invoice":{"order_id":"ORD-1""#), "{text}");
        let unknown = r#"{"enterprise":"x","items":[{"receipt":{}}]}"#;
        let e = serde_json::from_str::<ReportBatch>(unknown).unwrap_err();
        assert!(e.to_string().contains("unknown variant `receipt`"), "{e}");
        let results = ReportResults {
            results: vec![None, Some(Refusal::new(Code::ReportRejected, "no"))],
        };
        let text = serde_json::to_string(&results).unwrap();
        assert_eq!(
            serde_json::from_str::<ReportResults>(&text).unwrap(),
            results
        );
    }

    /// Two wire invoices are equal when their records are the same JSON, whatever its
    /// spacing and key order, and their signatures the same.
    #[test]
    fn wire_invoices_compare_by_their_json() {
        let OrderAnswer::Issued { invoice, .. } = issued(None) else {
            unreachable!()
        };
        let with = |record: &str| WireInvoice {
            invoice: RawValue::from_string(record.into()).unwrap(),
            ..invoice.clone()
        };
        assert_eq!(
            invoice,
            with(r#"{ "lines": [1, 2], "number": "25312000000000000001" }"#)
        );
        assert_ne!(
            invoice,
            with(r#"{"number":"25312000000000000001","lines":[2,1]}"#)
        );
        let mut other = invoice.clone();
        other.signature.value = "b3RoZXI=".into();
        assert_ne!(invoice, other);
    }

    /// The tag may come anywhere; a missing or unknown tag, a missing or repeated field is an
    /// error naming it.
    #[test]
    fn order_answers_are_read_in_any_field_order_and_refused_when_malformed() {
        let text = serde_json::to_string(&issued(None)).unwrap();
        let rest = text.strip_prefix(r#"{"outcome":"issued","#).unwrap();
        let moved = format!(
            r#"{{{},"outcome":"issued"}}"#,
            rest.strip_suffix('}').unwrap()
        );
        assert_eq!(
            serde_json::from_str::<OrderAnswer>(&moved).unwrap(),
            issued(None)
        );

        let error = |text: &str| {
            serde_json::from_str::<OrderAnswer>(text)
                .unwrap_err()
                .to_string()
        };
        assert!(error(&format!("{{{rest}")).contains("missing field `outcome`"));
        assert!(error(r#"{"outcome":"lost"}"#).contains("unknown variant `lost`"));
        assert!(
            error(r#"{"outcome":"issued","order_id":"A"}"#).contains("missing field `invoice`")
        );
        assert!(error(r#"{"outcome":"refused","code":"x"}"#).contains("missing field `message`"));
        assert!(
            error(r#"{"outcome":"refused","outcome":"refused"}"#)
                .contains("duplicate field `outcome`")
        );
        assert!(error(r#"["issued"]"#).contains("expected an order answer"));
    }
}

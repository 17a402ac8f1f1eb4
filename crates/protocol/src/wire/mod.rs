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

mod agents;
mod invoice;
mod notices;
mod orders;
mod tax;

pub use agents::*;
pub use invoice::*;
pub use notices::*;
pub use orders::*;
pub use tax::*;

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

/// An empty acknowledgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ack {}

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

//! What platform tells cloud of its invoices: status notices, the listing and fetching of a cloud
//! reconciling, the OFD signatures cloud asks for.

use super::*;

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

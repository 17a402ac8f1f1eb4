//! Tax: uploads and their signed receipts, number ranges.

use super::*;

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

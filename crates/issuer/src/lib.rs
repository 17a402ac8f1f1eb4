//! The issuing device (电子发票开具服务装置): it holds a block of invoice numbers and a device
//! signing key with its certificate, and turns a validated draft into a numbered invoice signed
//! with SM2 over the documented bytes of its XML (`fapiao_render::signed_content`; see
//! `docs/layout.md`). Recipients (platform, tax, cloud) check a signed invoice with
//! [`verify`]. Used by the platform (hosted, sync) and by the enterprise agent (async).
//!
//! Durability is the caller's: a [`NumberBlock`] is plain state that the caller persists in
//! the same transaction as the invoice it numbered. A number is never handed out twice, and a
//! number taken for an issue that then fails is reported by the caller as void, with a reason
//! ([`VoidNumber`]), never skipped silently.

use fapiao_crypto::{Certificate, KeyAlgorithm, PathError, PrivateKey, Purpose, Role, TrustStore};
use fapiao_model::{Invoice, InvoiceDraft, InvoiceNumber, InvoiceNumberError, ProvinceCode};
use fapiao_render::{DeviceSignature, signed_content};
use time::{OffsetDateTime, PrimitiveDateTime};

/// A contiguous range of invoice numbers granted to one device for one year, with the next
/// one to use. 数电票 numbers are `YY` + province + channel + 15-digit sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberBlock {
    year: u8,
    province: ProvinceCode,
    channel: u8,
    first: u64,
    last: u64,
    next: u64,
}

impl NumberBlock {
    /// A block covering sequences `first..=last` (all unused).
    ///
    /// # Errors
    /// [`IssueError::Block`] for an empty range or one beyond 15 digits.
    pub fn new(
        year: u8,
        province: ProvinceCode,
        channel: u8,
        first: u64,
        last: u64,
    ) -> Result<Self, IssueError> {
        Self::resume(year, province, channel, first, last, first)
    }

    /// A block as persisted: `next` is the first sequence not yet handed out (`last + 1` when
    /// used up).
    ///
    /// # Errors
    /// [`IssueError::Block`] for inconsistent bounds.
    pub fn resume(
        year: u8,
        province: ProvinceCode,
        channel: u8,
        first: u64,
        last: u64,
        next: u64,
    ) -> Result<Self, IssueError> {
        if first > last || last > InvoiceNumber::MAX_SEQUENCE || next < first || next > last + 1 {
            return Err(IssueError::Block { first, last, next });
        }
        InvoiceNumber::new(year, province, channel, first).map_err(IssueError::Number)?;
        Ok(Self {
            year,
            province,
            channel,
            first,
            last,
            next,
        })
    }

    /// Hands out the next number, or [`IssueError::Exhausted`].
    ///
    /// # Errors
    /// [`IssueError::Exhausted`] when every number is used.
    pub fn take(&mut self) -> Result<InvoiceNumber, IssueError> {
        if self.next > self.last {
            return Err(IssueError::Exhausted { last: self.last });
        }
        let number = InvoiceNumber::new(self.year, self.province, self.channel, self.next)
            .map_err(IssueError::Number)?;
        self.next += 1;
        Ok(number)
    }

    /// Numbers left.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.last + 1 - self.next
    }

    /// Whether `number` belongs to this block (used or not).
    #[must_use]
    pub fn contains(&self, number: &InvoiceNumber) -> bool {
        number.year() == self.year
            && number.province() == self.province
            && number.channel() == self.channel
            && (self.first..=self.last).contains(&number.sequence())
    }

    /// The first sequence not yet handed out (what to persist).
    #[must_use]
    pub fn next_sequence(&self) -> u64 {
        self.next
    }
}

/// A number taken for an issue that failed: recorded, never reused, never silently skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoidNumber {
    /// The number.
    pub number: InvoiceNumber,
    /// Why it was not used.
    pub reason: String,
}

/// An issued invoice with the device's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedInvoice {
    /// The invoice.
    pub invoice: Invoice,
    /// The device's signature over its XML's signed bytes, with the device certificate.
    pub signature: DeviceSignature,
}

/// Why issuing or verifying failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// Inconsistent block bounds.
    #[error("number block {first}..={last} with next {next} is inconsistent")]
    Block {
        /// First sequence.
        first: u64,
        /// Last sequence.
        last: u64,
        /// Next sequence.
        next: u64,
    },
    /// Every number of the block is used.
    #[error("the number block is used up (last sequence {last}); ask for a new block")]
    Exhausted {
        /// Last sequence.
        last: u64,
    },
    /// A number that cannot be built or does not fit the issue date.
    #[error("invoice number: {0}")]
    Number(InvoiceNumberError),
    /// The device key is not SM2 or does not match the certificate, or the certificate is not a
    /// device signing certificate.
    #[error("the device needs an SM2 signing certificate for role device and its key")]
    DeviceCertificate,
    /// The device certificate names another enterprise than the seller.
    #[error("the device belongs to taxpayer {device:?}, the invoice's seller is {seller}")]
    WrongEnterprise {
        /// Taxpayer id in the device certificate.
        device: Option<String>,
        /// The seller's taxpayer id.
        seller: String,
    },
    /// Signing failed.
    #[error("signing failed")]
    Signing,
    /// Another certificate signed the invoice whose layout file is to be signed.
    #[error("another device certificate signed the invoice")]
    OtherDevice,
    /// The device certificate is not valid (chain, time, usage, revocation).
    #[error("the device certificate is not acceptable: {0}")]
    Certificate(PathError),
    /// The signature does not verify over the invoice's signed bytes.
    #[error("the invoice signature does not verify")]
    BadSignature,
}

/// An issuing device: its signing key and certificate.
#[derive(Debug, Clone)]
pub struct IssuingDevice {
    key: PrivateKey,
    certificate: Certificate,
    taxpayer_id: Option<String>,
}

impl IssuingDevice {
    /// A device from its SM2 signing key and certificate (role `device` or `agent`).
    ///
    /// # Errors
    /// [`IssueError::DeviceCertificate`].
    pub fn new(key: PrivateKey, certificate: Certificate) -> Result<Self, IssueError> {
        let subject = certificate
            .subject()
            .map_err(|_| IssueError::DeviceCertificate)?;
        let fits = key.algorithm() == KeyAlgorithm::Sm2
            && certificate.public_key().ok() == Some(key.public_key())
            && certificate.allows(Purpose::Signing)
            && matches!(subject.role, Role::Device | Role::Agent);
        if !fits {
            return Err(IssueError::DeviceCertificate);
        }
        Ok(Self {
            key,
            certificate,
            taxpayer_id: subject.taxpayer_id,
        })
    }

    /// The enterprise the device belongs to (its certificate's taxpayer id).
    #[must_use]
    pub fn taxpayer_id(&self) -> Option<&str> {
        self.taxpayer_id.as_deref()
    }

    /// The device's signing certificate.
    #[must_use]
    pub fn certificate(&self) -> &Certificate {
        &self.certificate
    }

    /// Signs the `Signature.xml` of the OFD layout file of `signed`, an invoice this device
    /// signed (the same certificate): the DER SM2 signature `SignedValue.dat` holds. The
    /// caller renders the OFD from the invoice itself — a device signs no bytes it was handed.
    ///
    /// # Errors
    /// [`IssueError::OtherDevice`] when another certificate signed the invoice (another
    /// enterprise's device, or this one before its key was replaced);
    /// [`IssueError::Signing`].
    pub fn sign_ofd(
        &self,
        signed: &SignedInvoice,
        signature_xml: &[u8],
    ) -> Result<Vec<u8>, IssueError> {
        if signed.signature.certificate != self.certificate.der() {
            return Err(IssueError::OtherDevice);
        }
        self.key
            .sign(signature_xml)
            .map_err(|_| IssueError::Signing)
    }

    /// Numbers a draft from `block`, dates it `issued_at` (China time) and signs it. A number
    /// taken for an issue that then fails stays used; [`IssuingDevice::issue_or_void`] returns
    /// it as a [`VoidNumber`] to record.
    ///
    /// # Errors
    /// [`IssueError`].
    pub fn issue(
        &self,
        draft: InvoiceDraft,
        block: &mut NumberBlock,
        issued_at: PrimitiveDateTime,
    ) -> Result<SignedInvoice, IssueError> {
        self.issue_or_void(draft, block, issued_at)
            .map_err(|(e, _)| e)
    }

    /// Like [`IssuingDevice::issue`], returning the void number when one was consumed.
    ///
    /// # Errors
    /// The error and, if a number was taken, the [`VoidNumber`] to record.
    pub fn issue_or_void(
        &self,
        draft: InvoiceDraft,
        block: &mut NumberBlock,
        issued_at: PrimitiveDateTime,
    ) -> Result<SignedInvoice, (IssueError, Option<VoidNumber>)> {
        let seller = draft.seller().taxpayer_id.as_str().to_owned();
        if self.taxpayer_id.as_deref() != Some(seller.as_str()) {
            return Err((
                IssueError::WrongEnterprise {
                    device: self.taxpayer_id.clone(),
                    seller,
                },
                None,
            ));
        }
        let number = block.take().map_err(|e| (e, None))?;
        let void = |e: IssueError, n: &InvoiceNumber| {
            (
                e.clone(),
                Some(VoidNumber {
                    number: n.clone(),
                    reason: e.to_string(),
                }),
            )
        };
        let invoice = Invoice::issue(draft, number.clone(), issued_at)
            .map_err(|e| void(IssueError::Number(e), &number))?;
        let signature = self
            .sign(&invoice, issued_at)
            .map_err(|e| void(e, &number))?;
        Ok(SignedInvoice { invoice, signature })
    }

    fn sign(
        &self,
        invoice: &Invoice,
        signed_at: PrimitiveDateTime,
    ) -> Result<DeviceSignature, IssueError> {
        let value = self
            .key
            .sign(&signed_content(invoice, signed_at))
            .map_err(|_| IssueError::Signing)?;
        Ok(DeviceSignature {
            signed_at,
            value,
            certificate: self.certificate.der().to_vec(),
        })
    }
}

/// Checks a signed invoice as a recipient: the device certificate is valid for signing at
/// `now` under `trust`, belongs to the seller (its taxpayer id), and its SM2 signature verifies
/// over the invoice's signed bytes.
///
/// # Errors
/// [`IssueError::Certificate`], [`IssueError::WrongEnterprise`], [`IssueError::BadSignature`].
pub fn verify(
    signed: &SignedInvoice,
    trust: &TrustStore,
    now: OffsetDateTime,
) -> Result<(), IssueError> {
    let cert = Certificate::from_der(&signed.signature.certificate)
        .map_err(|_| IssueError::BadSignature)?;
    trust
        .validate(&cert, &[], Purpose::Signing, now)
        .map_err(IssueError::Certificate)?;
    let subject = cert.subject().map_err(|_| IssueError::DeviceCertificate)?;
    let seller = signed.invoice.draft().seller().taxpayer_id.as_str();
    if subject.taxpayer_id.as_deref() != Some(seller)
        || !matches!(subject.role, Role::Device | Role::Agent)
    {
        return Err(IssueError::WrongEnterprise {
            device: subject.taxpayer_id,
            seller: seller.to_owned(),
        });
    }
    let key = cert.public_key().map_err(|_| IssueError::BadSignature)?;
    key.verify(
        &signed_content(&signed.invoice, signed.signature.signed_at),
        &signed.signature.value,
    )
    .map_err(|_| IssueError::BadSignature)
}

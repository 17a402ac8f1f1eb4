//! A signed invoice on the wire.

use super::*;

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

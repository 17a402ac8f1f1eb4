//! Layout files a cloud asks platform to sign: an invoice's OFD carries the SM2 signature of
//! the device that issued it, and the hosted devices' keys are here, not at the cloud.
//!
//! Platform renders the OFD itself from the invoice it holds — the same deterministic render
//! the cloud makes — and signs its `Signature.xml`; the cloud attaches the value to its own
//! render and checks it before serving (a cloud of another build version renders other
//! bytes, and its check fails rather than a wrong file going out). A device signs nothing it
//! was handed, so a cloud cannot obtain a device signature over bytes of its choosing.

use fapiao_protocol::codes::Code;
use fapiao_protocol::wire::{OfdSign, OfdSignature, Refusal};
use fapiao_store::StoreError;

use crate::Platform;

impl Platform {
    /// The signature of the OFD of invoice `q.number`, if it is of one of `cloud`'s
    /// enterprises and a hosted device holds the key that signed it.
    ///
    /// # Errors
    /// [`StoreError`]; refusals are `invoice_not_found` and `ofd_unavailable`.
    pub(crate) async fn sign_ofd_for_cloud(
        &self,
        cloud: &str,
        q: &OfdSign,
    ) -> Result<Result<OfdSignature, Refusal>, StoreError> {
        let number = q.number.clone();
        let not_found = || {
            Refusal::new(
                Code::InvoiceNotFound,
                format!("no invoice {number} of this cloud's enterprises"),
            )
        };
        let rows = self.notice_rows_of(std::slice::from_ref(&number)).await?;
        let ours = match rows.get(&number) {
            Some(row) => row.try_get::<Option<String>, _>("identity")?.as_deref() == Some(cloud),
            None => false,
        };
        let stored = match self.invoice(&number).await? {
            Some(s) if ours => s,
            _ => return Ok(Err(not_found())),
        };
        let signed = stored
            .invoice
            .to_signed()
            .map_err(|e| StoreError::Data(e.to_string()))?;
        let unavailable = |why: &str| {
            Refusal::new(
                Code::OfdUnavailable,
                format!("the OFD of {number} cannot be signed here: {why}"),
            )
        };
        let Ok(device) = self.device(&stored.enterprise) else {
            return Ok(Err(unavailable("no hosted device of its seller")));
        };
        // Rendering takes a millisecond or two of CPU: off the async threads.
        let made = tokio::task::spawn_blocking(move || {
            let font = fapiao_render::shared_font().ok_or("the bundled font is unusable")?;
            let xml = fapiao_render::render_xml(&signed.invoice, Some(&signed.signature));
            let unsigned = fapiao_render::render_ofd(&signed.invoice, &xml, font)
                .map_err(|e| format!("rendering: {e}"))?;
            Ok::<_, String>(device.sign_ofd(&signed, unsigned.signed_bytes()))
        })
        .await
        .map_err(|e| StoreError::Data(e.to_string()))?
        .map_err(StoreError::Data)?;
        match made {
            Ok(value) => {
                tracing::info!(%cloud, number = %number, "OFD signed by the issuing device");
                Ok(Ok(OfdSignature {
                    number,
                    signature: fapiao_protocol::wire::b64(&value),
                }))
            }
            Err(fapiao_issuer::IssueError::OtherDevice) => Ok(Err(unavailable(
                "the hosted device's key is not the one that signed it (an agent issued it, or \
                 the key was replaced since)",
            ))),
            Err(e) => Err(StoreError::Data(format!(
                "signing the OFD of {number}: {e}"
            ))),
        }
    }
}

//! The layout files as downloads ([`Layout`]): the PDF and XML, the OFD, and the zip of the
//! three — one way for the ERP API and the portal.
//!
//! The OFD carries the SM2 signature of the device that issued the invoice. The hosted
//! devices' keys are at platform, so the first download of an invoice's OFD asks platform for
//! the signature of its `Signature.xml` (message `ofd.sign`; platform renders the OFD from its
//! own copy of the invoice). Cloud renders the same OFD — both renders are deterministic —
//! checks the value against its own render with the key of the invoice's certificate, and
//! keeps it (`invoices.ofd_signature`): later downloads are byte-identical and need no
//! platform. A kept value that no longer checks against this build's render (another version
//! lays the OFD out otherwise) is asked for again.

use super::*;
use fapiao_protocol::wire::{OfdSign, OfdSignature, b64, unb64};
use fapiao_render::ofd::UnsignedOfd;

/// The media type of OFD files (GB/T 33190).
const OFD_TYPE: &str = "application/ofd";

/// The invoice's signed OFD layout file.
pub(crate) async fn ofd_of(cloud: &Cloud, v: &InvoiceView, rid: &str) -> Result<Vec<u8>, ApiError> {
    let signed = v.invoice.to_signed().map_err(|e| internal(rid, &e))?;
    let key = fapiao_crypto::Certificate::from_der(&signed.signature.certificate)
        .map_err(|e| internal(rid, &e))?
        .public_key()
        .map_err(|e| internal(rid, &e))?;
    let c = cloud.clone();
    let rid2 = rid.to_owned();
    let unsigned: UnsignedOfd = tokio::task::spawn_blocking(move || {
        let xml = fapiao_render::render_xml(&signed.invoice, Some(&signed.signature));
        let font = c.font().map_err(|e| internal(&rid2, &e))?;
        fapiao_render::render_ofd(&signed.invoice, &xml, font).map_err(|e| internal(&rid2, &e))
    })
    .await
    .map_err(|e| internal(rid, &e))??;
    let checks = |value: &[u8]| key.verify(unsigned.signed_bytes(), value).is_ok();
    let kept = kept_signature(cloud, &v.number)
        .await
        .map_err(|e| internal(rid, &e))?;
    if let Some(value) = kept.as_deref().and_then(|t| unb64(t, "ofd_signature").ok()) {
        if checks(&value) {
            return Ok(unsigned.sign(&value));
        }
        tracing::warn!(request_id = %rid, number = %v.number,
            "the kept OFD signature does not check against this build's render: asking platform");
    }
    let answer: OfdSignature = cloud
        .ask_platform(
            message_type::OFD_SIGN,
            &OfdSign {
                number: v.number.clone(),
            },
            message_type::OFD_SIGNATURE,
            rid,
        )
        .await?;
    let value = unb64(&answer.signature, "signature").map_err(|e| unusable(rid, &e))?;
    if answer.number != v.number || !checks(&value) {
        // Platform renders otherwise (another version), or answered for another invoice.
        return Err(unusable(
            rid,
            &"platform's OFD signature does not check against cloud's render",
        ));
    }
    // Kept only in place of what was read (none, or a value that no longer checks): of two
    // replicas asking at once the first kept wins, and both serve its file.
    let mut tx = cloud
        .inner
        .db
        .begin_write()
        .await
        .map_err(|e| internal(rid, &e))?;
    let replaced = query(
        "UPDATE invoices SET ofd_signature = $2
         WHERE number = $1 AND coalesce(ofd_signature, '') = $3",
    )
    .bind(&v.number)
    .bind(b64(&value))
    .bind(kept.as_deref().unwrap_or(""))
    .execute(&mut *tx)
    .await
    .map_err(|e| internal(rid, &e))?
    .rows_affected();
    tx.commit().await.map_err(|e| internal(rid, &e))?;
    if replaced == 0
        && let Some(first) = kept_signature(cloud, &v.number)
            .await
            .map_err(|e| internal(rid, &e))?
            .and_then(|t| unb64(&t, "ofd_signature").ok())
            .filter(|first| checks(first))
    {
        return Ok(unsigned.sign(&first));
    }
    Ok(unsigned.sign(&value))
}

/// The OFD signature kept for invoice `number` (base64), if any.
async fn kept_signature(cloud: &Cloud, number: &str) -> Result<Option<String>, StoreError> {
    Ok(
        query_scalar::<Option<String>>("SELECT ofd_signature FROM invoices WHERE number = $1")
            .bind(number)
            .fetch_optional(&mut *cloud.inner.db.read().await?)
            .await?
            .flatten(),
    )
}

/// The zip of the invoice's layout files, named as the national platform names them
/// (`dzfp_<number>_<buyer>_<yyyyMMddHHmmss>.{pdf,ofd,xml}`). When its OFD cannot be signed
/// (`ofd_unavailable`: an enterprise's own device issued it) the zip holds the PDF and XML.
pub(crate) async fn zip_of(cloud: &Cloud, v: &InvoiceView, rid: &str) -> Result<Vec<u8>, ApiError> {
    let stem = file_stem(v);
    let xml = xml_of(v, rid)?;
    let pdf = pdf_of(cloud, v, rid).await?;
    let ofd = match ofd_of(cloud, v, rid).await {
        Ok(ofd) => Some(ofd),
        Err(e) if e.code == Code::OfdUnavailable.as_str() => None,
        Err(e) => return Err(e),
    };
    let mut files = vec![(format!("{stem}.pdf"), pdf)];
    if let Some(ofd) = ofd {
        files.push((format!("{stem}.ofd"), ofd));
    }
    files.push((format!("{stem}.xml"), xml.into_bytes()));
    Ok(fapiao_render::ofd::pack(&files))
}

/// A layout file of an invoice, as the ERP API and the portal serve it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Layout {
    Pdf,
    Xml,
    Ofd,
    /// The zip of the three ([`zip_of`]).
    Zip,
}

impl Layout {
    /// The file as a download of `v`, named as the national platform names it
    /// ([`attachment`]).
    pub(crate) async fn download(
        self,
        cloud: &Cloud,
        v: &InvoiceView,
        rid: &str,
    ) -> Result<Response, ApiError> {
        let (content_type, extension, body) = match self {
            Self::Pdf => ("application/pdf", "pdf", pdf_of(cloud, v, rid).await?),
            Self::Xml => (XML_TYPE, "xml", xml_of(v, rid)?.into_bytes()),
            Self::Ofd => (OFD_TYPE, "ofd", ofd_of(cloud, v, rid).await?),
            Self::Zip => (ZIP_TYPE, "zip", zip_of(cloud, v, rid).await?),
        };
        Ok(attachment(content_type, v, extension, body))
    }
}

/// `GET /v1/invoices/{number}/{pdf,xml,ofd,zip}`: the enterprise's own invoice's file.
async fn layout_file(
    cloud: Cloud,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    number: String,
    layout: Layout,
) -> Response {
    let rid = request_id(&headers);
    let result = async {
        let v = authed_invoice(&cloud, &method, &uri, &headers, &number, &rid).await?;
        layout.download(&cloud, &v, &rid).await
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

macro_rules! layout_handlers {
    ($($name:ident $layout:ident),*) => {$(
        pub(crate) async fn $name(
            State(cloud): State<Cloud>,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            Path(number): Path<String>,
        ) -> Response {
            layout_file(cloud, method, uri, headers, number, Layout::$layout).await
        }
    )*};
}

layout_handlers!(pdf Pdf, xml Xml, ofd Ofd, zip Zip);

/// The media type of the zip of the layout files.
const ZIP_TYPE: &str = "application/zip";

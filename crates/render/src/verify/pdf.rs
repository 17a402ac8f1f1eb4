//! The invoice XML attached to a layout PDF (PDF/A-3u, `AF` / `EmbeddedFiles`).

use lopdf::{Document, Object};

use super::DocumentError;

/// The one XML file attached to `pdf`, as text.
///
/// # Errors
/// [`DocumentError::Pdf`] when the PDF does not parse, or carries no XML attachment or more
/// than one.
pub fn attached_xml(pdf: &[u8]) -> Result<String, DocumentError> {
    let doc = Document::load_mem(pdf).map_err(|e| DocumentError::Pdf(e.to_string()))?;
    let mut found = Vec::new();
    for object in doc.objects.values() {
        let Ok(spec) = object.as_dict() else {
            continue;
        };
        let is_filespec = spec
            .get(b"Type")
            .and_then(Object::as_name)
            .is_ok_and(|n| n == b"Filespec");
        if !is_filespec {
            continue;
        }
        let name = spec
            .get(b"UF")
            .or_else(|_| spec.get(b"F"))
            .and_then(Object::as_str)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        if !name.to_ascii_lowercase().ends_with(".xml") {
            continue;
        }
        let stream = spec
            .get(b"EF")
            .and_then(Object::as_dict)
            .and_then(|ef| ef.get(b"F"))
            .and_then(Object::as_reference)
            .and_then(|id| doc.get_object(id))
            .and_then(Object::as_stream)
            .map_err(|e| DocumentError::Pdf(format!("attachment {name}: {e}")))?;
        let bytes = stream
            .decompressed_content()
            .unwrap_or_else(|_| stream.content.clone());
        let text = String::from_utf8(bytes)
            .map_err(|_| DocumentError::Pdf(format!("attachment {name} is not UTF-8")))?;
        found.push(text);
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(DocumentError::Pdf("no XML attached".into())),
        n => Err(DocumentError::Pdf(format!(
            "{n} XML files attached; an invoice PDF carries one"
        ))),
    }
}

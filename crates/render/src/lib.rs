//! Fapiao's layout files: the invoice as the official 数电票 XML ([`render_xml`]) and as a PDF in
//! the 数电票 layout ([`render_pdf`]: CJK font embedded, QR code, red marking, PDF/A-3u with the
//! XML attached), the QR content ([`qr_content`]), and reading a signed XML back to check it
//! ([`verify`]).
//!
//! Depends only on `fapiao-model`. Output is a pure function of its inputs (invoice, signature,
//! font): the same input gives byte-identical files.

// krilla compresses every stream with flate2 at level 6; this dependency only switches flate2's
// backend to zlib-rs, which does the same deflate about twice as fast as miniz_oxide.
use flate2 as _;

mod layout;
pub mod ofd;
mod page;
mod pdf;
mod qr;
mod text;
pub mod verify;
mod xml;

pub use layout::{Region, regions};
pub use ofd::{UnsignedOfd, render_ofd};
pub use page::{check_draft_glyphs, line_cells};
pub use pdf::render_pdf;
pub use qr::{crc16_ccitt_false, qr_content};
pub use text::PdfFont;
pub use xml::{
    DeviceSignature, FORMAT_VERSION, REFERENCE_URI, SM2_WITH_SM3, base64, escape, render_xml,
    signed_content, tax_bureau_code, tax_bureau_name, xml_rate,
};

/// The bundled 宋体 of the values: Noto Serif CJK SC (OFL-1.1) for every character of GBK
/// (`fonts/README.md`).
pub const BUNDLED_VALUE_FACE: &[u8] = include_bytes!("../fonts/noto-serif-cjk-sc-gbk.ttf");

/// The first fallback of the values: WenQuanYi Micro Hei (Apache-2.0), a sans-serif with the
/// GB 18030 Han set, for what the 宋体 lacks (`fonts/README.md`).
pub const BUNDLED_FONT: &[u8] = include_bytes!("../fonts/wqy-microhei.ttf");

/// The last fallback: what Noto Sans CJK SC (OFL-1.1) draws and WenQuanYi Micro Hei lacks —
/// CJK Extension A whole, 2,365 characters of Extension B and on (`fonts/README.md`).
pub const BUNDLED_FALLBACK: &[u8] = include_bytes!("../fonts/noto-sans-cjk-sc-ext.otf");

/// The bundled 楷体 of the title and labels (a subset of LXGW WenKai, OFL-1.1, renamed as the
/// licence asks of a modified font; `fonts/README.md`).
pub const BUNDLED_LABEL_FACE: &[u8] = include_bytes!("../fonts/kai-labels.ttf");

/// The bundled monospaced face of the number and the taxpayer ids (0-9, A-Z of LXGW WenKai
/// Mono, OFL-1.1, renamed).
pub const BUNDLED_MONO_FACE: &[u8] = include_bytes!("../fonts/kai-mono-ids.ttf");

/// Loads the bundled typefaces: values in 宋体 (Noto Serif CJK SC) with the sans-serif faces
/// as fallbacks for rarer characters, labels in 楷体, the number and ids monospaced (about
/// 10 ms; do it once per process).
///
/// # Errors
/// [`RenderError::Font`] (not for the bundled files).
pub fn bundled_font() -> Result<PdfFont, RenderError> {
    PdfFont::new(BUNDLED_VALUE_FACE.to_vec(), 0)?
        .with_fallback(BUNDLED_FONT.to_vec(), 0)?
        .with_fallback(BUNDLED_FALLBACK.to_vec(), 0)?
        .with_label_face(BUNDLED_LABEL_FACE.to_vec(), 0)?
        .with_mono_face(BUNDLED_MONO_FACE.to_vec(), 0)
}

/// The bundled typeface, loaded once.
static BUNDLED: std::sync::LazyLock<Option<PdfFont>> =
    std::sync::LazyLock::new(|| bundled_font().ok());

/// The bundled typeface, loaded once for the process (`None` only if the bundled files were
/// unusable, which the tests rule out).
#[must_use]
pub fn shared_font() -> Option<&'static PdfFont> {
    BUNDLED.as_ref()
}

/// The first character of an invoice of `draft` the bundled typeface cannot draw, as a finding
/// on its field (`unsupported_character`, naming it) — checked before a number is used, so
/// that no invoice exists whose PDF cannot be made.
#[must_use]
pub fn undrawable(draft: &fapiao_model::InvoiceDraft) -> Option<fapiao_model::ValidationErrors> {
    let font = BUNDLED.as_ref()?;
    let Err(RenderError::MissingGlyph { character, field }) = check_draft_glyphs(draft, font)
    else {
        return None;
    };
    fapiao_model::ValidationErrors::from_findings(vec![fapiao_model::Finding::new(
        field,
        fapiao_model::FindingCode::UnsupportedCharacter,
        format!(
            "U+{:04X} {character} cannot be drawn by the invoice's typefaces",
            u32::from(character)
        ),
    )])
}

/// Why a layout file could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The font data is not usable.
    #[error("the font could not be loaded")]
    Font,
    /// A character the font cannot draw (reported, never dropped).
    #[error("the font has no glyph for `{character}` (U+{code:04X}) in {field}", code = u32::from(*character))]
    MissingGlyph {
        /// The character.
        character: char,
        /// Where it occurs.
        field: &'static str,
    },
    /// The PDF writer failed (e.g. a PDF/A validation error).
    #[error("the PDF could not be written: {0}")]
    Pdf(String),
}

/// The name the national platform gives an invoice's files, without the extension:
/// `dzfp_<number>_<buyer>_<yyyyMMddHHmmss>` (the issue time), for `.pdf`, `.ofd`, `.xml` and
/// the `.zip` of the three. Characters no file system takes (`/ \ : * ? " < > |`, controls)
/// become `_`.
#[must_use]
pub fn file_stem(invoice: &fapiao_model::Invoice) -> String {
    let buyer: String = invoice
        .draft()
        .buyer()
        .name
        .chars()
        .map(|c| {
            if c.is_control() || "/\\:*?\"<>|".contains(c) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let t = invoice.issued_at();
    format!(
        "dzfp_{}_{buyer}_{}{:02}{:02}{:02}{:02}{:02}",
        invoice.number(),
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_stems_are_the_platform_s_names_and_safe_on_any_file_system() {
        let json = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/invoices/special.json"
        ))
        .unwrap();
        let inv = fapiao_model::Invoice::from_json(&json).unwrap();
        assert_eq!(
            super::file_stem(&inv),
            "dzfp_26442000000000000102_杭州青禾餐饮管理有限公司_20261120101530"
        );
        let odd = json.replace("杭州青禾餐饮管理有限公司", "A/B:C*D?E");
        let inv = fapiao_model::Invoice::from_json(&odd).unwrap();
        assert!(super::file_stem(&inv).contains("_A_B_C_D_E_"));
    }
}

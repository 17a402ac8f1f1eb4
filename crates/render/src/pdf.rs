//! The invoice as a PDF in the 数电票 layout: 210 × 140 mm landscape, labels and rules in dark
//! red (#800000), values in black, QR top-left, the title with a double rule, number and date
//! top-right, one frame with the buyer and seller halves, the items table, 合计, 价税合计 and
//! 备注, and 开票人 below the frame. Items that do not fit continue on following pages; the
//! totals are on the last page. PDF/A-3u with the invoice XML attached, so one file carries
//! both. Output is a pure function of (invoice, XML, font): no clock, no random ids.

use krilla::color::rgb;
use krilla::configure::{Archival, ConfigurationBuilder, Validator};
use krilla::embed::{AssociationKind, EmbeddedFile, MimeType};
use krilla::geom::{PathBuilder, Point, Transform};
use krilla::metadata::{DateTime, Metadata};
use krilla::num::NormalizedF32;
use krilla::page::PageSettings;
use krilla::paint::{Fill, FillRule, Stroke};
use krilla::surface::Surface;
use krilla::{Document, SerializeSettings};
use time::PrimitiveDateTime;

use fapiao_model::Invoice;

use crate::RenderError;
use crate::layout::{PAGE_H, PAGE_W};
use crate::page::{Canvas, Color, PT_PER_MM, Plan, check_draft_glyphs};
use crate::text::{Measure, PdfFont, Run};

fn mm(v: f32) -> f32 {
    v * PT_PER_MM
}

/// A page of the PDF as a [`Canvas`].
struct PdfCanvas<'a, 'b> {
    s: &'a mut Surface<'b>,
    font: &'a PdfFont,
}

impl Canvas for PdfCanvas<'_, '_> {
    fn glyphs(&mut self, x: f32, baseline: f32, size: f32, run: &Run<'_>, color: Color) {
        self.s.set_fill(Some(Fill {
            paint: rgb::Color::new(color.0, color.1, color.2).into(),
            opacity: NormalizedF32::ONE,
            rule: FillRule::NonZero,
        }));
        self.s.draw_glyphs(
            Point::from_xy(mm(x), mm(baseline)),
            &run.glyphs,
            self.font.faces[run.face].font.clone(),
            run.text,
            size,
            false,
        );
    }

    fn line(&mut self, (x1, y1): (f32, f32), (x2, y2): (f32, f32), width: f32) {
        let mut pb = PathBuilder::new();
        pb.move_to(mm(x1), mm(y1));
        pb.line_to(mm(x2), mm(y2));
        if let Some(path) = pb.finish() {
            self.s.set_fill(None);
            self.s.set_stroke(Some(Stroke {
                paint: rgb::Color::new(0x80, 0, 0).into(),
                width,
                ..Stroke::default()
            }));
            self.s.draw_path(&path);
            self.s.set_stroke(None);
        }
    }

    /// Drawn in module units: one stroke one module wide along each horizontal run of dark
    /// modules, all in one path (half the bytes of a rectangle per run).
    fn qr(&mut self, grid: &[bool], modules: usize, (x, y): (f32, f32), side: f32) {
        #[expect(
            clippy::cast_precision_loss,
            reason = "a symbol of at most 177 modules"
        )]
        let module = mm(side) / modules as f32;
        let mut pb = PathBuilder::new();
        for (row_y, row) in grid.chunks_exact(modules).enumerate() {
            let mut at = 0;
            for run in row.chunk_by(|a, b| a == b) {
                if run[0] {
                    #[expect(clippy::cast_precision_loss, reason = "module coordinates")]
                    {
                        pb.move_to(at as f32, row_y as f32 + 0.5);
                        pb.line_to((at + run.len()) as f32, row_y as f32 + 0.5);
                    }
                }
                at += run.len();
            }
        }
        if let Some(path) = pb.finish() {
            self.s.set_fill(None);
            self.s.set_stroke(Some(Stroke {
                paint: rgb::Color::new(0, 0, 0).into(),
                width: 1.0,
                ..Stroke::default()
            }));
            self.s
                .push_transform(&Transform::from_row(module, 0.0, 0.0, module, mm(x), mm(y)));
            self.s.draw_path(&path);
            self.s.pop();
            self.s.set_stroke(None);
        }
    }
}

/// Renders the PDF (PDF/A-3u) with `xml` attached as `dzfp_<number>.xml`.
///
/// # Errors
/// [`RenderError::MissingGlyph`] when the font lacks a character of the invoice (nothing is
/// dropped silently), [`RenderError::Pdf`] if the PDF cannot be written.
pub fn render_pdf(invoice: &Invoice, xml: &str, font: &PdfFont) -> Result<Vec<u8>, RenderError> {
    check_draft_glyphs(invoice.draft(), font)?;
    let measure = Measure::new(font);
    let plan = Plan::new(invoice, &measure);

    let configuration = ConfigurationBuilder::new()
        .set_validator(Validator::A(Archival::A3_U))
        .finish()
        .map_err(|e| RenderError::Pdf(format!("{e:?}")))?;
    let settings = SerializeSettings {
        configuration,
        // Page content (about 11 KB of operators per page) is written uncompressed: deflating
        // it costs a sixth of a render (0.3 ms) to save 11 KB. The font subset and the
        // attached XML are still compressed. Measured in docs/layout.md.
        compress_content_streams: false,
        ..SerializeSettings::default()
    };
    let mut doc = Document::new_with(settings);
    let issued = pdf_date(invoice.issued_at());
    doc.set_metadata(
        Metadata::new()
            .title(format!(
                "{} {}",
                invoice.draft().invoice_type().title(),
                invoice.number()
            ))
            .language("zh-CN".to_owned())
            .creator("Fapiao".to_owned())
            .producer("Fapiao".to_owned())
            .creation_date(issued)
            .document_id(invoice.number().to_string()),
    );
    doc.embed_file(EmbeddedFile {
        path: format!("dzfp_{}.xml", invoice.number()),
        mime_type: MimeType::new("application/xml"),
        description: Some("数电票 XML (EInvoice)".to_owned()),
        association_kind: AssociationKind::Alternative,
        data: xml.as_bytes().to_vec().into(),
        modification_date: Some(issued),
        compress: Some(true),
        location: None,
    })
    .ok_or_else(|| RenderError::Pdf("the XML attachment was refused".to_owned()))?;

    for index in 0..plan.page_count() {
        let settings =
            PageSettings::from_wh(mm(PAGE_W), mm(PAGE_H)).expect("the page size is positive");
        let mut page = doc.start_page_with(settings);
        let mut s = page.surface();
        plan.draw(&mut PdfCanvas { s: &mut s, font }, &measure, invoice, index);
        s.finish();
        page.finish();
    }
    doc.finish().map_err(|e| RenderError::Pdf(format!("{e:?}")))
}

fn pdf_date(t: PrimitiveDateTime) -> DateTime {
    let year = u16::try_from(t.year()).unwrap_or(2000);
    DateTime::new(year)
        .month(u8::from(t.month()))
        .day(t.day())
        .hour(t.hour())
        .minute(t.minute())
        .second(t.second())
        .utc_offset_hour(8)
        .utc_offset_minute(0)
}

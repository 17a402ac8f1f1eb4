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
use krilla::text::{Font, KrillaGlyph};
use krilla::{Document, SerializeSettings};
use skrifa::instance::{LocationRef, Size};
use skrifa::{GlyphId, MetadataProvider};
use time::PrimitiveDateTime;

use fapiao_model::{BuyerKind, Invoice, Line};

use crate::RenderError;
use crate::qr;

const PT_PER_MM: f32 = 72.0 / 25.4;
const PAGE_W: f32 = 210.0;
const PAGE_H: f32 = 140.0;
const FRAME_L: f32 = 4.5;
const FRAME_R: f32 = 205.5;
const FRAME_T: f32 = 24.0;
const PARTIES_B: f32 = 44.0;
const HEADER_B: f32 = 50.0;
const ITEMS_B: f32 = 96.0;
const SUM_B: f32 = 102.0;
const TOTAL_B: f32 = 110.0;
const FRAME_B: f32 = 126.0;
const ROW_MIN: f32 = 4.2;
const ITEM_SIZE: f32 = 7.0;
const ITEM_LINE: f32 = 3.0;
const LABEL_SIZE: f32 = 8.0;
const VALUE_SIZE: f32 = 8.5;

/// Item table columns: (header, left, right, alignment).
const COLUMNS: [(&str, f32, f32, Align); 8] = [
    ("项目名称", FRAME_L, 56.0, Align::Left),
    ("规格型号", 56.0, 80.0, Align::Left),
    ("单 位", 80.0, 92.0, Align::Center),
    ("数 量", 92.0, 110.0, Align::Right),
    ("单 价", 110.0, 136.0, Align::Right),
    ("金 额", 136.0, 162.0, Align::Right),
    ("税率/征收率", 162.0, 180.0, Align::Center),
    ("税 额", 180.0, FRAME_R, Align::Right),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Center,
    Right,
}

fn mm(v: f32) -> f32 {
    v * PT_PER_MM
}

fn dark_red() -> rgb::Color {
    rgb::Color::new(0x80, 0, 0)
}

fn black() -> rgb::Color {
    rgb::Color::new(0, 0, 0)
}

/// The typefaces an invoice is drawn with, ready for measuring and drawing: a primary face and
/// fallbacks for what it lacks (rare characters of CJK Extensions A and B), each character
/// drawn by the first face that has it. Load once, render many.
#[derive(Clone)]
pub struct PdfFont {
    faces: Vec<Face>,
}

#[derive(Clone)]
struct Face {
    font: Font,
    data: std::sync::Arc<Vec<u8>>,
    index: u32,
}

impl Face {
    fn new(data: Vec<u8>, index: u32) -> Result<Self, RenderError> {
        let data = std::sync::Arc::new(data);
        skrifa::FontRef::from_index(&data, index).map_err(|_| RenderError::Font)?;
        let font = Font::new(krilla::Data::from(data.clone()), index).ok_or(RenderError::Font)?;
        Ok(Self { font, data, index })
    }

    fn face(&self) -> skrifa::FontRef<'_> {
        skrifa::FontRef::from_index(&self.data, self.index).expect("checked when loaded")
    }
}

impl PdfFont {
    /// Loads a font (`.ttf`/`.otf`, or a `.ttc` with its face index).
    ///
    /// # Errors
    /// [`RenderError::Font`] if the data is not a usable font.
    pub fn new(data: Vec<u8>, index: u32) -> Result<Self, RenderError> {
        Ok(Self {
            faces: vec![Face::new(data, index)?],
        })
    }

    /// This font with `data` as a fallback face for characters the faces before it lack.
    ///
    /// # Errors
    /// [`RenderError::Font`] if the data is not a usable font.
    pub fn with_fallback(mut self, data: Vec<u8>, index: u32) -> Result<Self, RenderError> {
        self.faces.push(Face::new(data, index)?);
        Ok(self)
    }

    /// The first character of `text` no face can draw, if any.
    #[must_use]
    pub fn missing(&self, text: &str) -> Option<char> {
        let maps: Vec<_> = self.faces.iter().map(|f| f.face().charmap()).collect();
        text.chars()
            .find(|&c| !c.is_whitespace() && maps.iter().all(|m| m.map(c).is_none()))
    }
}

/// Measures text widths in points.
struct Measure<'a> {
    faces: Vec<(
        skrifa::charmap::Charmap<'a>,
        skrifa::metrics::GlyphMetrics<'a>,
    )>,
}

/// A run of text drawn by one face: the face, the text, its glyphs (their ranges within the
/// run's text), and its width at size 1.
struct Run<'t> {
    face: usize,
    text: &'t str,
    glyphs: Vec<KrillaGlyph>,
    width: f32,
}

impl<'a> Measure<'a> {
    fn new(font: &'a PdfFont) -> Self {
        Self {
            faces: font
                .faces
                .iter()
                .map(|f| {
                    let face = f.face();
                    (
                        face.charmap(),
                        face.glyph_metrics(Size::new(1.0), LocationRef::default()),
                    )
                })
                .collect(),
        }
    }

    /// The face, glyph and advance at size 1 that draw `c`: the first face that has it (an
    /// unmapped character takes the primary face's `.notdef`, half an em; [`check_glyphs`] has
    /// refused those already, whitespace aside).
    fn glyph(&self, c: char) -> (usize, GlyphId, f32) {
        for (k, (charmap, metrics)) in self.faces.iter().enumerate() {
            if let Some(g) = charmap.map(c) {
                return (k, g, metrics.advance_width(g).unwrap_or(0.5));
            }
        }
        (0, GlyphId::NOTDEF, 0.5)
    }

    /// Width at `size` points.
    fn width(&self, text: &str, size: f32) -> f32 {
        text.chars().map(|c| self.glyph(c).2).sum::<f32>() * size
    }

    /// The runs that draw `text`, one glyph per character, each mapped back to its character
    /// so text extraction recovers it. Invoice text needs no shaping (no ligatures, no marks;
    /// the bundled faces carry no layout tables at all), and the widths used for alignment
    /// are the same advances the glyphs are drawn with.
    fn runs<'t>(&self, text: &'t str) -> Vec<Run<'t>> {
        let mut runs: Vec<Run<'t>> = Vec::new();
        let mut start = 0;
        for (at, c) in text.char_indices() {
            let (face, g, advance) = self.glyph(c);
            let continues = runs.last().is_some_and(|r| r.face == face);
            if !continues {
                start = at;
                runs.push(Run {
                    face,
                    text: "",
                    glyphs: Vec::new(),
                    width: 0.0,
                });
            }
            let run = runs.last_mut().expect("pushed above");
            let end = at + c.len_utf8();
            run.text = &text[start..end];
            run.glyphs.push(KrillaGlyph::new(
                krilla::text::GlyphId::new(g.to_u32()),
                advance,
                0.0,
                0.0,
                0.0,
                at - start..end - start,
                None,
            ));
            run.width += advance;
        }
        runs
    }

    /// Splits text into lines no wider than `width` points.
    fn wrap(&self, text: &str, size: f32, width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut current = String::new();
        let mut used = 0.0;
        for c in text.chars() {
            if c == '\n' {
                lines.push(std::mem::take(&mut current));
                used = 0.0;
                continue;
            }
            let w = self.glyph(c).2 * size;
            if !current.is_empty() && used + w > width {
                lines.push(std::mem::take(&mut current));
                used = 0.0;
            }
            current.push(c);
            used += w;
        }
        if !current.is_empty() || lines.is_empty() {
            lines.push(current);
        }
        lines
    }
}

/// One table row as laid out.
struct Row {
    cells: [Vec<String>; 8],
    height: f32,
}

/// Renders the PDF (PDF/A-3u) with `xml` attached as `dzfp_<number>.xml`.
///
/// # Errors
/// [`RenderError::MissingGlyph`] when the font lacks a character of the invoice (nothing is
/// dropped silently), [`RenderError::Pdf`] if the PDF cannot be written.
pub fn render_pdf(invoice: &Invoice, xml: &str, font: &PdfFont) -> Result<Vec<u8>, RenderError> {
    check_glyphs(invoice, font)?;
    let measure = Measure::new(font);
    let rows: Vec<Row> = invoice
        .draft()
        .lines()
        .iter()
        .map(|l| row(l, &measure))
        .collect();
    let pages = paginate(&rows);

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

    let qr_content = qr::qr_content(invoice);
    let page_count = pages.len();
    for (page_index, page_rows) in pages.iter().enumerate() {
        let settings =
            PageSettings::from_wh(mm(PAGE_W), mm(PAGE_H)).expect("the page size is positive");
        let mut page = doc.start_page_with(settings);
        let mut s = page.surface();
        let mut p = Painter {
            s: &mut s,
            font,
            measure: &measure,
        };
        p.page_frame(invoice, &qr_content, page_index, page_count);
        let mut y = HEADER_B;
        for &i in page_rows {
            p.item_row(&rows[i], y);
            y += rows[i].height;
        }
        let last = page_index + 1 == page_count;
        p.totals(invoice, last);
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

fn check_glyphs(invoice: &Invoice, font: &PdfFont) -> Result<(), RenderError> {
    check_draft_glyphs(invoice.draft(), font)
}

/// Whether `font` draws every character an invoice of `d` prints; else the first it lacks and
/// its field — for refusing an order before a number is used on it.
///
/// # Errors
/// [`RenderError::MissingGlyph`].
pub fn check_draft_glyphs(
    d: &fapiao_model::InvoiceDraft,
    font: &PdfFont,
) -> Result<(), RenderError> {
    let mut texts: Vec<(&str, String)> = vec![
        ("seller.name", d.seller().name.clone()),
        ("buyer.name", d.buyer().name.clone()),
        // Line breaks of a remark are layout, not glyphs.
        ("remarks", d.remarks().unwrap_or("").replace('\n', "")),
        ("drawer", d.drawer().unwrap_or("").to_owned()),
        ("total_in_words", d.total_in_words().to_owned()),
    ];
    for l in d.lines() {
        texts.push(("items.name", l.printed_name()));
        texts.push((
            "items.specification",
            l.specification().unwrap_or("").to_owned(),
        ));
        texts.push(("items.unit", l.unit().unwrap_or("").to_owned()));
    }
    for (field, text) in texts {
        if let Some(c) = font.missing(&text) {
            return Err(RenderError::MissingGlyph {
                character: c,
                field,
            });
        }
    }
    Ok(())
}

/// The eight cells of an item row as the invoice prints them: 项目名称 (`*简称*name`), 规格型号,
/// 单位, 数量, 单价, 金额, 税率/征收率, 税额 (empty strings for what a line does not have; `***`
/// for the tax of a 免税 or 不征税 line).
#[must_use]
pub fn line_cells(l: &Line) -> [String; 8] {
    let opt = |v: Option<String>| v.unwrap_or_default();
    [
        l.printed_name(),
        opt(l.specification().map(str::to_owned)),
        opt(l.unit().map(str::to_owned)),
        opt(l.quantity().map(|q| q.to_string())),
        opt(l.unit_price().map(|p| p.to_string())),
        l.amount().to_string(),
        l.tax_rate().to_string(),
        // A line without VAT prints its tax as VAT invoices do: `***`.
        match l.tax_rate() {
            fapiao_model::TaxRate::Exempt | fapiao_model::TaxRate::NonTaxable => "***".to_owned(),
            _ => l.tax().to_string(),
        },
    ]
}

fn row(l: &Line, m: &Measure<'_>) -> Row {
    let texts = line_cells(l);
    let cells: [Vec<String>; 8] = std::array::from_fn(|i| {
        let (_, left, right, _) = COLUMNS[i];
        m.wrap(&texts[i], ITEM_SIZE, mm(right - left - 1.6))
    });
    let lines = cells.iter().map(Vec::len).max().unwrap_or(1);
    let height = (lines as f32 * ITEM_LINE + 1.2).max(ROW_MIN);
    Row { cells, height }
}

/// Row indices per page; every page has at least one row.
fn paginate(rows: &[Row]) -> Vec<Vec<usize>> {
    let capacity = ITEMS_B - HEADER_B;
    let mut pages = vec![Vec::new()];
    let mut used = 0.0;
    for (i, r) in rows.iter().enumerate() {
        let current = pages.last_mut().expect("starts with one page");
        if !current.is_empty() && used + r.height > capacity {
            pages.push(vec![i]);
            used = r.height;
        } else {
            current.push(i);
            used += r.height;
        }
    }
    pages
}

struct Painter<'a, 'b> {
    s: &'a mut Surface<'b>,
    font: &'a PdfFont,
    measure: &'a Measure<'a>,
}

impl Painter<'_, '_> {
    fn color(&mut self, c: rgb::Color) {
        self.s.set_fill(Some(Fill {
            paint: c.into(),
            opacity: NormalizedF32::ONE,
            rule: FillRule::NonZero,
        }));
    }

    fn text(&mut self, x_mm: f32, baseline_mm: f32, size: f32, text: &str, color: rgb::Color) {
        if text.is_empty() {
            return;
        }
        self.color(color);
        let mut x = mm(x_mm);
        for run in self.measure.runs(text) {
            self.s.draw_glyphs(
                Point::from_xy(x, mm(baseline_mm)),
                &run.glyphs,
                self.font.faces[run.face].font.clone(),
                run.text,
                size,
                false,
            );
            x += run.width * size;
        }
    }

    fn aligned(
        &mut self,
        (left, right): (f32, f32),
        baseline: f32,
        size: f32,
        text: &str,
        align: Align,
        color: rgb::Color,
    ) {
        let w = self.measure.width(text, size) / PT_PER_MM;
        let x = match align {
            Align::Left => left + 1.5,
            Align::Center => (left + right - w) / 2.0,
            Align::Right => right - 0.8 - w,
        };
        self.text(x, baseline, size, text, color);
    }

    fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, width: f32) {
        let mut pb = PathBuilder::new();
        pb.move_to(mm(x1), mm(y1));
        pb.line_to(mm(x2), mm(y2));
        if let Some(path) = pb.finish() {
            self.s.set_fill(None);
            self.s.set_stroke(Some(Stroke {
                paint: dark_red().into(),
                width,
                ..Stroke::default()
            }));
            self.s.draw_path(&path);
            self.s.set_stroke(None);
        }
    }

    fn rect(&mut self, x1: f32, y1: f32, x2: f32, y2: f32) {
        self.line(x1, y1, x2, y1, 0.8);
        self.line(x2, y1, x2, y2, 0.8);
        self.line(x2, y2, x1, y2, 0.8);
        self.line(x1, y2, x1, y1, 0.8);
    }

    /// Characters stacked vertically, centred in a narrow cell.
    fn vertical(&mut self, x_center: f32, top: f32, bottom: f32, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        let step = (bottom - top) / chars.len() as f32;
        for (i, c) in chars.iter().enumerate() {
            let s = c.to_string();
            let w = self.measure.width(&s, LABEL_SIZE) / PT_PER_MM;
            self.text(
                x_center - w / 2.0,
                top + step * (i as f32 + 0.75),
                LABEL_SIZE,
                &s,
                dark_red(),
            );
        }
    }

    fn page_frame(&mut self, inv: &Invoice, qr_content: &str, page: usize, pages: usize) {
        let d = inv.draft();
        // QR code, 20 × 20 mm at the top left, drawn in module units: one stroke one module
        // wide along each horizontal run of dark modules, all in one path (half the bytes of
        // a rectangle per run).
        let (grid, width) = qr::symbol(qr_content);
        let module = mm(20.0) / width as f32;
        let mut pb = PathBuilder::new();
        for (y, row) in grid.chunks_exact(width).enumerate() {
            let mut x = 0;
            for run in row.chunk_by(|a, b| a == b) {
                if run[0] {
                    pb.move_to(x as f32, y as f32 + 0.5);
                    pb.line_to((x + run.len()) as f32, y as f32 + 0.5);
                }
                x += run.len();
            }
        }
        if let Some(path) = pb.finish() {
            self.s.set_fill(None);
            self.s.set_stroke(Some(Stroke {
                paint: black().into(),
                width: 1.0,
                ..Stroke::default()
            }));
            self.s.push_transform(&Transform::from_row(
                module,
                0.0,
                0.0,
                module,
                mm(8.5),
                mm(3.0),
            ));
            self.s.draw_path(&path);
            self.s.pop();
            self.s.set_stroke(None);
        }
        // Title with a double rule.
        let title = d.invoice_type().title();
        let tw = self.measure.width(&title, 17.0) / PT_PER_MM;
        self.text((PAGE_W - tw) / 2.0, 13.5, 17.0, &title, dark_red());
        self.line(
            (PAGE_W - tw) / 2.0 - 2.0,
            16.0,
            (PAGE_W + tw) / 2.0 + 2.0,
            16.0,
            0.6,
        );
        self.line(
            (PAGE_W - tw) / 2.0 - 2.0,
            16.9,
            (PAGE_W + tw) / 2.0 + 2.0,
            16.9,
            0.6,
        );
        // Number and date, top right.
        self.text(148.0, 10.0, LABEL_SIZE, "发票号码：", dark_red());
        self.text(163.0, 10.0, VALUE_SIZE, inv.number().as_str(), black());
        self.text(148.0, 16.0, LABEL_SIZE, "开票日期：", dark_red());
        let date = inv.issued_at().date();
        let date_text = format!(
            "{}年{:02}月{:02}日",
            date.year(),
            u8::from(date.month()),
            date.day()
        );
        self.text(163.0, 16.0, VALUE_SIZE, &date_text, black());
        if pages > 1 {
            self.text(
                148.0,
                21.5,
                LABEL_SIZE,
                &format!("第{}页/共{}页", page + 1, pages),
                dark_red(),
            );
        }

        // The frame and the party halves.
        self.rect(FRAME_L, FRAME_T, FRAME_R, FRAME_B);
        let mid = (FRAME_L + FRAME_R) / 2.0;
        self.line(mid, FRAME_T, mid, PARTIES_B, 0.8);
        self.line(FRAME_L, PARTIES_B, FRAME_R, PARTIES_B, 0.8);
        for (x, label) in [(FRAME_L, "购买方信息"), (mid, "销售方信息")] {
            self.line(x + 6.0, FRAME_T, x + 6.0, PARTIES_B, 0.6);
            self.vertical(x + 3.0, FRAME_T + 1.0, PARTIES_B - 1.0, label);
        }
        let b = d.buyer();
        let buyer_id = match (b.kind, &b.taxpayer_id, &b.id_number) {
            (_, Some(t), _) => t.to_string(),
            (BuyerKind::NaturalPerson, None, Some(i)) => i.expose().to_owned(),
            _ => String::new(),
        };
        let s = d.seller();
        for (x, name, id) in [
            (FRAME_L, b.name.as_str(), buyer_id.as_str()),
            (mid, s.name.as_str(), s.taxpayer_id.as_str()),
        ] {
            self.text(x + 8.0, FRAME_T + 7.5, LABEL_SIZE, "名称：", dark_red());
            self.text(x + 17.0, FRAME_T + 7.5, VALUE_SIZE, name, black());
            self.text(
                x + 8.0,
                FRAME_T + 15.5,
                LABEL_SIZE,
                "统一社会信用代码/纳税人识别号：",
                dark_red(),
            );
            self.text(x + 55.0, FRAME_T + 15.5, VALUE_SIZE, id, black());
        }

        // Item table header; the table has no vertical rules between columns.
        for (header, left, right, _) in COLUMNS {
            self.aligned(
                (left, right),
                PARTIES_B + 4.2,
                LABEL_SIZE,
                header,
                Align::Center,
                dark_red(),
            );
        }
        self.line(FRAME_L, ITEMS_B, FRAME_R, ITEMS_B, 0.6);
        self.line(FRAME_L, SUM_B, FRAME_R, SUM_B, 0.8);
        self.line(FRAME_L, TOTAL_B, FRAME_R, TOTAL_B, 0.8);
        self.line(FRAME_L + 6.0, TOTAL_B, FRAME_L + 6.0, FRAME_B, 0.6);
        self.vertical(FRAME_L + 3.0, TOTAL_B + 1.0, FRAME_B - 1.0, "备注");
        if let Some(r) = d.remarks() {
            let lines = self
                .measure
                .wrap(r, VALUE_SIZE, mm(FRAME_R - FRAME_L - 10.0));
            for (i, l) in lines.iter().enumerate() {
                self.text(
                    FRAME_L + 8.0,
                    TOTAL_B + 5.0 + i as f32 * 3.6,
                    VALUE_SIZE,
                    l,
                    black(),
                );
            }
        }
        self.text(FRAME_L + 4.0, 132.5, LABEL_SIZE, "开票人：", dark_red());
        self.text(
            FRAME_L + 16.0,
            132.5,
            VALUE_SIZE,
            d.drawer().unwrap_or(""),
            black(),
        );
    }

    fn item_row(&mut self, row: &Row, top: f32) {
        for (i, (_, left, right, align)) in COLUMNS.into_iter().enumerate() {
            for (n, text) in row.cells[i].iter().enumerate() {
                let baseline = top + 3.0 + n as f32 * ITEM_LINE;
                self.aligned((left, right), baseline, ITEM_SIZE, text, align, black());
            }
        }
    }

    fn totals(&mut self, inv: &Invoice, last: bool) {
        let d = inv.draft();
        self.aligned(
            (FRAME_L, 56.0),
            ITEMS_B + 4.2,
            LABEL_SIZE,
            "合 计",
            Align::Center,
            dark_red(),
        );
        self.aligned(
            (FRAME_L, 56.0),
            SUM_B + 5.2,
            LABEL_SIZE,
            "价税合计（大写）",
            Align::Center,
            dark_red(),
        );
        if !last {
            self.aligned(
                (56.0, FRAME_R),
                ITEMS_B + 4.2,
                LABEL_SIZE,
                "（续下页）",
                Align::Center,
                dark_red(),
            );
            return;
        }
        let t = d.totals();
        let (_, _, amount_right, _) = COLUMNS[5];
        let (_, _, tax_right, _) = COLUMNS[7];
        self.aligned(
            (110.0, amount_right),
            ITEMS_B + 4.2,
            VALUE_SIZE,
            &format!("¥{}", t.amount),
            Align::Right,
            black(),
        );
        self.aligned(
            (162.0, tax_right),
            ITEMS_B + 4.2,
            VALUE_SIZE,
            &format!("¥{}", t.tax),
            Align::Right,
            black(),
        );
        self.text(
            60.0,
            SUM_B + 5.2,
            VALUE_SIZE,
            &format!("⊗{}", d.total_in_words()),
            black(),
        );
        self.text(150.0, SUM_B + 5.2, LABEL_SIZE, "（小写）", dark_red());
        self.text(
            163.0,
            SUM_B + 5.2,
            VALUE_SIZE,
            &format!("¥{}", t.total),
            black(),
        );
    }
}

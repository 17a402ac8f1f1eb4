//! One page of the 数电票 layout, drawn on any [`Canvas`]: the PDF's and the OFD's. Where
//! everything goes is [`crate::layout`]; text is fitted to its region by [`crate::text`].
//! Items that do not fit continue on following pages; the totals are on the last page.

use fapiao_model::{BuyerKind, Invoice, Line};

use crate::RenderError;
use crate::layout::{
    Align, CELL_PAD, COLUMNS, FLOOR_SIZE, FRAME_B, FRAME_L, FRAME_R, FRAME_T, HEADER_B, ITEM_SIZE,
    ITEMS_B, LABEL_SIZE, MID, NUMBER_L, PAGE_H, PAGE_W, PARTIES_B, QR_SIDE, QR_X, QR_Y, SUM_B,
    TITLE_R, TITLE_SIZE, TOTAL_B, VALUE_SIZE,
};
use crate::qr;
use crate::text::{LEADING, Measure, PdfFont, Run, Style};

pub(crate) const PT_PER_MM: f32 = 72.0 / 25.4;
/// An item row's least height, and its padding above and below the text (mm).
const ROW_MIN: f32 = 4.6;
const ROW_PAD: f32 = 1.2;

/// An sRGB colour.
pub(crate) type Color = (u8, u8, u8);

/// Labels and rules.
pub(crate) const DARK_RED: Color = (0x80, 0, 0);
/// Values and the QR code.
pub(crate) const BLACK: Color = (0, 0, 0);

/// What a layout file draws on. Coordinates are millimetres from the page's top-left corner,
/// type sizes points.
pub(crate) trait Canvas {
    /// A run of glyphs of one face, its baseline starting at (`x`, `baseline`).
    fn glyphs(&mut self, x: f32, baseline: f32, size: f32, run: &Run<'_>, color: Color);
    /// A straight rule `width` points wide.
    fn line(&mut self, from: (f32, f32), to: (f32, f32), width: f32);
    /// The QR code: `grid` row by row, `modules` wide, a `side` mm square at `at`.
    fn qr(&mut self, grid: &[bool], modules: usize, at: (f32, f32), side: f32);
    /// What the text drawn from now on is, until the next call (`None`: no field), for
    /// formats that index their fields (OFD's 发票标引).
    fn field(&mut self, _name: Option<&'static str>) {}
}

/// The invoice's item rows and the pages they fall on.
pub(crate) struct Plan {
    rows: Vec<Row>,
    pages: Vec<Vec<usize>>,
    qr_content: String,
}

impl Plan {
    pub(crate) fn new(invoice: &Invoice, measure: &Measure<'_>) -> Self {
        let rows: Vec<Row> = invoice
            .draft()
            .lines()
            .iter()
            .map(|l| row(l, measure))
            .collect();
        let pages = paginate(&rows);
        Self {
            rows,
            pages,
            qr_content: qr::qr_content(invoice),
        }
    }

    /// Pages.
    pub(crate) fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Draws page `index` (from 0) of `invoice` on `canvas`.
    pub(crate) fn draw(
        &self,
        canvas: &mut impl Canvas,
        measure: &Measure<'_>,
        invoice: &Invoice,
        index: usize,
    ) {
        let mut p = Painter { c: canvas, measure };
        p.page_frame(invoice, &self.qr_content, index, self.pages.len());
        let mut y = HEADER_B;
        for &i in &self.pages[index] {
            p.item_row(&self.rows[i], y);
            y += self.rows[i].height;
        }
        p.totals(invoice, index + 1 == self.pages.len());
    }
}

/// One table row as laid out: each cell's lines and type size, and the row's height (mm).
struct Row {
    cells: [(Vec<String>, f32); 8],
    height: f32,
}

/// Line height at `size` points, in mm.
fn line_mm(size: f32) -> f32 {
    size * LEADING / PT_PER_MM
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
    let cells: [(Vec<String>, f32); 8] = std::array::from_fn(|i| {
        let (_, left, right, _) = COLUMNS[i];
        let width = mm(right - left - CELL_PAD.0 - CELL_PAD.1);
        if i < 3 {
            // Names, specifications and units wrap; the row grows.
            (m.wrap(&texts[i], ITEM_SIZE, width), ITEM_SIZE)
        } else {
            // Numbers shrink to stay on one line, and wrap only at the floor.
            let f = m.fit(
                &texts[i],
                (width, ITEM_SIZE * LEADING),
                (ITEM_SIZE, FLOOR_SIZE),
            );
            (f.lines, f.size)
        }
    });
    #[expect(clippy::cast_precision_loss, reason = "a few lines")]
    let height = cells
        .iter()
        .map(|(lines, size)| lines.len() as f32 * line_mm(*size))
        .fold(0.0, f32::max)
        + ROW_PAD;
    Row {
        cells,
        height: height.max(ROW_MIN),
    }
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

struct Painter<'a, 'm, C> {
    c: &'a mut C,
    measure: &'a Measure<'m>,
}

fn mm(v: f32) -> f32 {
    v * PT_PER_MM
}

/// The typeface of text in `color`: the dark red text is the title and the labels (楷体 on
/// the real invoice), the black text values.
fn style_of(color: Color) -> Style {
    if color == DARK_RED {
        Style::Label
    } else {
        Style::Value
    }
}

impl<C: Canvas> Painter<'_, '_, C> {
    fn text(&mut self, x_mm: f32, baseline_mm: f32, size: f32, text: &str, color: Color) {
        self.styled(x_mm, baseline_mm, size, text, color, style_of(color));
    }

    fn styled(
        &mut self,
        x_mm: f32,
        baseline_mm: f32,
        size: f32,
        text: &str,
        color: Color,
        style: Style,
    ) {
        if text.is_empty() {
            return;
        }
        let mut x = x_mm;
        for run in self.measure.runs(text, style) {
            self.c.glyphs(x, baseline_mm, size, &run, color);
            x += run.width * size / PT_PER_MM;
        }
    }

    fn aligned(
        &mut self,
        (left, right): (f32, f32),
        baseline: f32,
        size: f32,
        text: &str,
        align: Align,
        color: Color,
    ) {
        let w = self.measure.width(text, size, style_of(color)) / PT_PER_MM;
        let x = match align {
            Align::Left => left + CELL_PAD.0,
            Align::Center => (left + right - w) / 2.0,
            Align::Right => right - CELL_PAD.1 - w,
        };
        self.text(x, baseline, size, text, color);
    }

    /// Sets `lines` at `size` in the box `left..right` × `top..bottom` (mm), centred
    /// vertically, each line aligned by `align`.
    fn lines_in(
        &mut self,
        (left, top, right, bottom): (f32, f32, f32, f32),
        lines: &[String],
        size: f32,
        align: Align,
        color: Color,
    ) {
        let lh = line_mm(size);
        #[expect(clippy::cast_precision_loss, reason = "a few lines")]
        let first = top + ((bottom - top) - lines.len() as f32 * lh).max(0.0) / 2.0;
        for (i, l) in lines.iter().enumerate() {
            #[expect(clippy::cast_precision_loss, reason = "a few lines")]
            let baseline = first + (i as f32 + 0.78) * lh;
            self.aligned((left, right), baseline, size, l, align, color);
        }
    }

    /// Sets `text` in the box (mm, padding included): wrapped by the rules of Chinese
    /// typesetting at `nominal` points, shrunk towards [`FLOOR_SIZE`] until it fits.
    fn fitted(
        &mut self,
        (left, top, right, bottom): (f32, f32, f32, f32),
        text: &str,
        nominal: f32,
        align: Align,
    ) {
        let width = mm(right - left - CELL_PAD.0 - CELL_PAD.1);
        let f = self
            .measure
            .fit(text, (width, mm(bottom - top)), (nominal, FLOOR_SIZE));
        self.lines_in((left, top, right, bottom), &f.lines, f.size, align, BLACK);
    }

    fn line(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, width: f32) {
        self.c.line((x1, y1), (x2, y2), width);
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
        #[expect(clippy::cast_precision_loss, reason = "a few characters")]
        let step = (bottom - top) / chars.len() as f32;
        for (i, c) in chars.iter().enumerate() {
            let s = c.to_string();
            let w = self.measure.width(&s, LABEL_SIZE, Style::Label) / PT_PER_MM;
            #[expect(clippy::cast_precision_loss, reason = "a few characters")]
            let baseline = top + step * (i as f32 + 0.75);
            self.text(x_center - w / 2.0, baseline, LABEL_SIZE, &s, DARK_RED);
        }
    }

    /// The QR code, [`QR_SIDE`] mm square at ([`QR_X`], [`QR_Y`]). Nothing is drawn within
    /// four modules of it (its quiet zone, [`crate::regions`]).
    fn qr(&mut self, content: &str) {
        let (grid, width) = qr::symbol(content);
        self.c.qr(&grid, width, (QR_X, QR_Y), QR_SIDE);
    }

    fn page_frame(&mut self, inv: &Invoice, qr_content: &str, page: usize, pages: usize) {
        let d = inv.draft();
        self.qr(qr_content);
        // The title, centred on the page, with a double rule that ends before the number
        // block.
        let title = d.invoice_type().title();
        let natural = self.measure.width(&title, TITLE_SIZE, Style::Label) / PT_PER_MM;
        let room = 2.0 * (TITLE_R - 2.0 - PAGE_W / 2.0);
        let size = if natural > room {
            TITLE_SIZE * room / natural
        } else {
            TITLE_SIZE
        };
        let tw = self.measure.width(&title, size, Style::Label) / PT_PER_MM;
        self.text((PAGE_W - tw) / 2.0, 13.5, size, &title, DARK_RED);
        for y in [16.0, 16.9] {
            self.line(
                (PAGE_W - tw) / 2.0 - 2.0,
                y,
                (PAGE_W + tw) / 2.0 + 2.0,
                y,
                0.6,
            );
        }
        // Number and date, top right.
        let value_x = NUMBER_L + 15.0;
        self.text(NUMBER_L, 10.0, LABEL_SIZE, "发票号码：", DARK_RED);
        self.tagged("InvoiceNo", |p| {
            let number = inv.number().as_str();
            p.styled(value_x, 10.0, VALUE_SIZE, number, BLACK, Style::Mono);
        });
        self.text(NUMBER_L, 16.0, LABEL_SIZE, "开票日期：", DARK_RED);
        let date = inv.issued_at().date();
        let date_text = format!(
            "{}年{:02}月{:02}日",
            date.year(),
            u8::from(date.month()),
            date.day()
        );
        self.tagged("IssueDate", |p| {
            p.text(value_x, 16.0, VALUE_SIZE, &date_text, BLACK);
        });
        if pages > 1 {
            self.text(
                NUMBER_L,
                21.5,
                LABEL_SIZE,
                &format!("第{}页/共{}页", page + 1, pages),
                DARK_RED,
            );
        }

        // The frame and the party halves.
        self.rect(FRAME_L, FRAME_T, FRAME_R, FRAME_B);
        self.line(MID, FRAME_T, MID, PARTIES_B, 0.8);
        self.line(FRAME_L, PARTIES_B, FRAME_R, PARTIES_B, 0.8);
        for (x, label) in [(FRAME_L, "购买方信息"), (MID, "销售方信息")] {
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
        for (x, right, name, id, tags) in [
            (
                FRAME_L,
                MID,
                b.name.as_str(),
                buyer_id.as_str(),
                ("BuyerName", "BuyerTaxID"),
            ),
            (
                MID,
                FRAME_R,
                s.name.as_str(),
                s.taxpayer_id.as_str(),
                ("SellerName", "SellerTaxID"),
            ),
        ] {
            // 名称: up to three lines over the upper part of the half.
            let (top, bottom) = (FRAME_T + 1.0, FRAME_T + 11.5);
            self.text(
                x + 8.0,
                (top + bottom) / 2.0 + 1.0,
                LABEL_SIZE,
                "名称：",
                DARK_RED,
            );
            self.tagged(tags.0, |p| {
                p.fitted(
                    (x + 16.0, top, right, bottom),
                    name,
                    VALUE_SIZE,
                    Align::Left,
                );
            });
            self.text(
                x + 8.0,
                FRAME_T + 16.5,
                LABEL_SIZE,
                "统一社会信用代码/纳税人识别号：",
                DARK_RED,
            );
            self.tagged(tags.1, |p| {
                p.styled(x + 55.0, FRAME_T + 16.5, VALUE_SIZE, id, BLACK, Style::Mono);
            });
        }

        // Item table header; the table has no vertical rules between columns.
        for (header, left, right, _) in COLUMNS {
            self.aligned(
                (left, right),
                PARTIES_B + 4.2,
                LABEL_SIZE,
                header,
                Align::Center,
                DARK_RED,
            );
        }
        self.line(FRAME_L, ITEMS_B, FRAME_R, ITEMS_B, 0.6);
        self.line(FRAME_L, SUM_B, FRAME_R, SUM_B, 0.8);
        self.line(FRAME_L, TOTAL_B, FRAME_R, TOTAL_B, 0.8);
        self.line(FRAME_L + 6.0, TOTAL_B, FRAME_L + 6.0, FRAME_B, 0.6);
        self.vertical(FRAME_L + 3.0, TOTAL_B + 1.0, FRAME_B - 1.0, "备注");
        if let Some(r) = d.remarks() {
            let region = (FRAME_L + 7.0, TOTAL_B + 0.5, FRAME_R, FRAME_B - 0.5);
            self.tagged("Note", |p| p.fitted(region, r, VALUE_SIZE, Align::Left));
        }
        let drawer_y = (FRAME_B + PAGE_H) / 2.0 + 1.0;
        self.text(FRAME_L + 4.0, drawer_y, LABEL_SIZE, "开票人：", DARK_RED);
        let region = (FRAME_L + 15.0, FRAME_B + 1.0, 110.0, PAGE_H - 1.0);
        let drawer = d.drawer().unwrap_or("");
        self.tagged("InvoiceClerk", |p| {
            p.fitted(region, drawer, VALUE_SIZE, Align::Left);
        });
    }

    /// Draws with `draw`, indexing the text it sets as field `name` (OFD's 发票标引).
    fn tagged(&mut self, name: &'static str, draw: impl FnOnce(&mut Self)) {
        self.c.field(Some(name));
        draw(self);
        self.c.field(None);
    }

    /// A row's cells, top-aligned as on the real invoice: a wrapped name's first line and the
    /// row's numbers on one baseline.
    fn item_row(&mut self, row: &Row, top: f32) {
        for (i, (_, left, right, align)) in COLUMNS.into_iter().enumerate() {
            let (lines, size) = &row.cells[i];
            let lh = line_mm(*size);
            for (n, l) in lines.iter().enumerate() {
                #[expect(clippy::cast_precision_loss, reason = "a few lines")]
                let baseline = top + ROW_PAD / 2.0 + (n as f32 + 0.78) * lh;
                self.aligned((left, right), baseline, *size, l, align, BLACK);
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
            DARK_RED,
        );
        self.aligned(
            (FRAME_L, 56.0),
            SUM_B + 5.2,
            LABEL_SIZE,
            "价税合计（大写）",
            Align::Center,
            DARK_RED,
        );
        if !last {
            self.aligned(
                (56.0, FRAME_R),
                ITEMS_B + 4.2,
                LABEL_SIZE,
                "（续下页）",
                Align::Center,
                DARK_RED,
            );
            return;
        }
        let t = d.totals();
        let (_, _, amount_right, _) = COLUMNS[5];
        let (_, tax_left, tax_right, _) = COLUMNS[7];
        for (field, region, amount) in [
            (
                "TaxExclusiveTotalAmount",
                (113.0, ITEMS_B, amount_right, SUM_B),
                t.amount,
            ),
            (
                "TaxTotalAmount",
                (tax_left - 18.0, ITEMS_B, tax_right, SUM_B),
                t.tax,
            ),
        ] {
            self.tagged(field, |p| {
                p.fitted(region, &format!("¥{amount}"), VALUE_SIZE, Align::Right);
            });
        }
        self.fitted(
            (58.0, SUM_B, 148.0, TOTAL_B),
            &format!("⊗{}", d.total_in_words()),
            VALUE_SIZE,
            Align::Left,
        );
        self.text(150.0, SUM_B + 5.2, LABEL_SIZE, "（小写）", DARK_RED);
        self.tagged("TaxInclusiveTotalAmount", |p| {
            p.fitted(
                (161.0, SUM_B, FRAME_R, TOTAL_B),
                &format!("¥{}", t.total),
                VALUE_SIZE,
                Align::Left,
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records which face each run of each colour was drawn with.
    struct Recorder(Vec<(Color, usize, String)>);

    impl Canvas for Recorder {
        fn glyphs(&mut self, _: f32, _: f32, _: f32, run: &Run<'_>, color: Color) {
            self.0.push((color, run.face, run.text.to_owned()));
        }
        fn line(&mut self, _: (f32, f32), _: (f32, f32), _: f32) {}
        fn qr(&mut self, _: &[bool], _: usize, _: (f32, f32), _: f32) {}
    }

    /// Every label on every kind of page (both titles, a continued page, the last page) is
    /// drawn by the label face itself — a label with a character the derived 楷体 subset
    /// lacks (fonts/derive_faces.py) fails here — and the number and ids by the mono face.
    #[test]
    fn labels_are_in_the_label_face_and_ids_in_the_mono_face() {
        let font = crate::bundled_font().unwrap();
        let (label, mono) = (font.faces.len() - 2, font.faces.len() - 1);
        let measure = Measure::new(&font);
        for example in ["basic", "special"] {
            let mut order: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(format!(
                    "{}/../../examples/orders/{example}.json",
                    env!("CARGO_MANIFEST_DIR")
                ))
                .unwrap(),
            )
            .unwrap();
            let item = order["items"][0].clone();
            order["items"] = serde_json::Value::Array(vec![item; 12]);
            order.as_object_mut().unwrap().remove("totals");
            let draft = fapiao_model::Order::from_json(&order.to_string())
                .unwrap()
                .validate(&fapiao_model::TaxCatalog::builtin())
                .unwrap();
            let inv = Invoice::issue(
                draft,
                fapiao_model::InvoiceNumber::parse("26312000000000000101").unwrap(),
                time::macros::datetime!(2026-11-20 10:15:30),
            )
            .unwrap();
            let plan = Plan::new(&inv, &measure);
            assert!(plan.page_count() > 1);
            for page in 0..plan.page_count() {
                let mut r = Recorder(Vec::new());
                plan.draw(&mut r, &measure, &inv, page);
                for (color, face, text) in &r.0 {
                    if *color == DARK_RED {
                        assert_eq!(*face, label, "label `{text}`");
                    }
                }
                let seller = inv.draft().seller().taxpayer_id.to_string();
                for id in [inv.number().as_str(), seller.as_str()] {
                    assert!(
                        r.0.iter().any(|(_, f, t)| t == id && *f == mono),
                        "{id} in the mono face"
                    );
                }
            }
        }
    }
}

//! The page of a 数电票 as regions: where each part of the invoice goes, in millimetres from the
//! top-left corner of the 210 × 140 mm page. Every text is set inside its region — wrapped,
//! then shrunk to a floor — and no two regions overlap ([`regions`], which the layout tests
//! hold the rendered files to).

/// Page width, mm.
pub(crate) const PAGE_W: f32 = 210.0;
/// Page height, mm.
pub(crate) const PAGE_H: f32 = 140.0;
pub(crate) const FRAME_L: f32 = 4.5;
pub(crate) const FRAME_R: f32 = 205.5;
pub(crate) const FRAME_T: f32 = 24.0;
pub(crate) const MID: f32 = (FRAME_L + FRAME_R) / 2.0;
pub(crate) const PARTIES_B: f32 = 44.0;
pub(crate) const HEADER_B: f32 = 50.0;
pub(crate) const ITEMS_B: f32 = 96.0;
pub(crate) const SUM_B: f32 = 102.0;
pub(crate) const TOTAL_B: f32 = 110.0;
pub(crate) const FRAME_B: f32 = 127.0;

/// The QR code: side, and top-left corner (mm). Its quiet zone (four modules, §3 of the QR
/// standard) stays clear of everything else.
pub(crate) const QR_SIDE: f32 = 18.0;
pub(crate) const QR_X: f32 = 9.0;
pub(crate) const QR_Y: f32 = 2.5;
/// Where the title ends on the right; the number block starts further right.
pub(crate) const TITLE_R: f32 = 144.0;
pub(crate) const NUMBER_L: f32 = 147.0;

/// Type sizes, points: labels (楷体 on the real invoice), values, and the floor values
/// shrink to before they wrap further or continue.
pub(crate) const LABEL_SIZE: f32 = 8.0;
pub(crate) const VALUE_SIZE: f32 = 9.0;
/// Item rows: 18 Han characters to a line of 项目名称.
pub(crate) const ITEM_SIZE: f32 = 8.5;
pub(crate) const TITLE_SIZE: f32 = 17.0;
pub(crate) const FLOOR_SIZE: f32 = 5.5;

/// Item table columns: (header, left, right, alignment).
pub(crate) const COLUMNS: [(&str, f32, f32, Align); 8] = [
    ("项目名称", FRAME_L, 62.0, Align::Left),
    ("规格型号", 62.0, 84.0, Align::Left),
    ("单 位", 84.0, 95.0, Align::Center),
    ("数 量", 95.0, 113.0, Align::Right),
    ("单 价", 113.0, 137.0, Align::Right),
    ("金 额", 137.0, 161.0, Align::Right),
    ("税率/征收率", 161.0, 178.0, Align::Center),
    ("税 额", 178.0, FRAME_R, Align::Right),
];

/// Padding inside a table cell, left and right (mm).
pub(crate) const CELL_PAD: (f32, f32) = (1.5, 0.8);

/// How a text sits between a region's left and right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Center,
    Right,
}

/// A named part of the page (mm from the top-left corner).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// What it holds.
    pub name: &'static str,
    /// Left edge.
    pub left: f32,
    /// Top edge.
    pub top: f32,
    /// Right edge.
    pub right: f32,
    /// Bottom edge.
    pub bottom: f32,
}

impl Region {
    const fn new(name: &'static str, left: f32, top: f32, right: f32, bottom: f32) -> Self {
        Self {
            name,
            left,
            top,
            right,
            bottom,
        }
    }

    /// Whether the two share any area.
    #[must_use]
    pub fn overlaps(&self, other: &Self) -> bool {
        self.left < other.right
            && other.left < self.right
            && self.top < other.bottom
            && other.top < self.bottom
    }
}

/// The regions every page has. Texts stay inside theirs; rules are drawn on region edges.
#[must_use]
pub fn regions() -> Vec<Region> {
    let quiet = QR_SIDE / 25.0 * 4.0;
    let mut r = vec![
        Region::new(
            "qr",
            QR_X - quiet,
            0.0,
            QR_X + QR_SIDE + quiet,
            QR_Y + QR_SIDE + quiet,
        ),
        Region::new("title", 40.0, 4.0, TITLE_R, 19.0),
        Region::new("number", NUMBER_L, 4.0, FRAME_R, 23.0),
        Region::new("buyer.label", FRAME_L, FRAME_T, FRAME_L + 6.0, PARTIES_B),
        Region::new(
            "buyer.name",
            FRAME_L + 7.0,
            FRAME_T + 1.0,
            MID,
            FRAME_T + 11.5,
        ),
        Region::new("buyer.id", FRAME_L + 7.0, FRAME_T + 11.5, MID, PARTIES_B),
        Region::new("seller.label", MID, FRAME_T, MID + 6.0, PARTIES_B),
        Region::new(
            "seller.name",
            MID + 7.0,
            FRAME_T + 1.0,
            FRAME_R,
            FRAME_T + 11.5,
        ),
        Region::new("seller.id", MID + 7.0, FRAME_T + 11.5, FRAME_R, PARTIES_B),
        Region::new("items.header", FRAME_L, PARTIES_B, FRAME_R, HEADER_B),
    ];
    for (name, left, right, _) in COLUMNS {
        r.push(Region::new(
            match name {
                "项目名称" => "items.name",
                "规格型号" => "items.specification",
                "单 位" => "items.unit",
                "数 量" => "items.quantity",
                "单 价" => "items.unit_price",
                "金 额" => "items.amount",
                "税率/征收率" => "items.tax_rate",
                _ => "items.tax",
            },
            left,
            HEADER_B,
            right,
            ITEMS_B,
        ));
    }
    r.extend([
        Region::new("sum", FRAME_L, ITEMS_B, FRAME_R, SUM_B),
        Region::new("total", FRAME_L, SUM_B, FRAME_R, TOTAL_B),
        Region::new("remarks.label", FRAME_L, TOTAL_B, FRAME_L + 6.0, FRAME_B),
        Region::new("remarks", FRAME_L + 7.0, TOTAL_B, FRAME_R, FRAME_B),
        Region::new("drawer", FRAME_L, FRAME_B + 1.0, 110.0, PAGE_H - 1.0),
    ]);
    r
}

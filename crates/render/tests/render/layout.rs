//! Every field at its longest stays in its region: the page's regions do not overlap, and
//! every word `pdftotext -bbox` finds lies inside the page and inside one region, with the
//! region holding every character of its field.

use std::collections::BTreeMap;
use std::path::Path;

use fapiao_render::{Region, regions, render_pdf, render_xml};

use crate::files::run;
use crate::fixtures::{draft_from_json, font, issue};

const PT_PER_MM: f32 = 72.0 / 25.4;

/// A string of exactly `n` characters cycling through `pattern`.
fn cycle(pattern: &str, n: usize) -> String {
    pattern.chars().cycle().take(n).collect()
}

/// An order with every field at the longest the order rules allow: names of 100 characters
/// (Han with punctuation and brackets; Latin words; an unbreakable Latin run), a remark of
/// 200 characters over five lines, 40-character specifications, 20-character units, quantities
/// and prices with 12 integer digits and 8 decimals, a 30-character drawer.
pub(crate) fn longest_order() -> String {
    let han = "上海云帆信息科技（集团）有限公司，华东区域数字化供应链管理服务中心；";
    let item = |name: String, spec: String, quantity: &str, price: &str| {
        serde_json::json!({
            "name": name, "tax_code": "3040201010000000000", "specification": spec,
            "unit": cycle("套件（含安装调试及培训服务）", 20), "quantity": quantity,
            "unit_price": price, "tax_rate": "6%"
        })
    };
    let mut order: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orders/basic.json"),
        )
        .unwrap(),
    )
    .unwrap();
    order["seller"]["name"] = cycle(han, 100).into();
    order["buyer"]["name"] = cycle(
        "Shenzhen Greenfield International Trading Co., Ltd. 深圳绿野国际贸易有限公司（香港）",
        100,
    )
    .into();
    order["items"] = serde_json::json!([
        item(
            cycle(han, 100),
            cycle("XJ2000-PRO/MAX-", 40),
            "999999.12345678",
            "0.12345678"
        ),
        item(
            cycle("Enterprise Resource Planning Subscription ", 100),
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ABCD".into(),
            "1",
            "99999999.99"
        ),
        item(
            cycle("运维服务，", 100),
            cycle("规格型号", 40),
            "123456789012.12345678",
            "0.00000001"
        ),
    ]);
    order["remarks"] = [
        cycle(
            "合同号：HT-2026-0101，项目地点：上海市浦东新区张江高科技园区；",
            120,
        ),
        cycle("收款人：王小明", 20),
        cycle("复核：李", 20),
        cycle("备注（续）", 20),
        cycle("完", 16),
    ]
    .join("\n")
    .into();
    order["drawer"] = cycle("欧阳诸葛司马上官", 30).into();
    order.as_object_mut().unwrap().remove("totals");
    order.to_string()
}

/// A word `pdftotext -bbox` found, in mm from the page's top-left corner.
#[derive(Debug)]
struct Word {
    page: usize,
    text: String,
    left: f32,
    top: f32,
    right: f32,
    bottom: f32,
}

fn attr(tag: &str, name: &str) -> f32 {
    let at = tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    let end = at + tag[at..].find('"').unwrap();
    tag[at..end].parse::<f32>().unwrap() / PT_PER_MM
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn words(bbox_html: &str) -> Vec<Word> {
    let mut out = Vec::new();
    for (page, chunk) in bbox_html.split("<page ").skip(1).enumerate() {
        for w in chunk.split("<word ").skip(1) {
            let (tag, rest) = w.split_once('>').unwrap();
            let text = unescape(rest.split_once("</word>").unwrap().0);
            out.push(Word {
                page,
                text,
                left: attr(tag, "xMin"),
                top: attr(tag, "yMin"),
                right: attr(tag, "xMax"),
                bottom: attr(tag, "yMax"),
            });
        }
    }
    out
}

/// How far a word's box may pass its region's edge: the font's ascent and descent boxes
/// (what poppler reports) are a little taller than the glyphs drawn.
const SLACK_MM: f32 = 0.3;

fn contains(r: &Region, w: &Word) -> bool {
    w.left >= r.left - SLACK_MM
        && w.right <= r.right + SLACK_MM
        && w.top >= r.top - SLACK_MM
        && w.bottom <= r.bottom + SLACK_MM
}

#[test]
fn the_regions_of_a_page_do_not_overlap() {
    let rs = regions();
    for (i, a) in rs.iter().enumerate() {
        assert!(a.left < a.right && a.top < a.bottom, "{a:?}");
        assert!(a.left >= 0.0 && a.right <= 210.0 && a.top >= 0.0 && a.bottom <= 140.0);
        for b in &rs[i + 1..] {
            assert!(!a.overlaps(b), "{} overlaps {}", a.name, b.name);
        }
    }
}

#[test]
fn every_field_at_its_longest_stays_inside_its_region() {
    let inv = issue(draft_from_json(&longest_order()), 990);
    let pdf = render_pdf(&inv, &render_xml(&inv, None), font()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("edge.pdf"), pdf).unwrap();
    let (ok, html) = run(tmp.path(), "pdftotext", &["-bbox", "edge.pdf", "-"]);
    assert!(ok, "{html}");
    let rs = regions();
    let found = words(&html);
    assert!(found.len() > 50, "{html}");
    let mut held: BTreeMap<(usize, &str), String> = BTreeMap::new();
    for w in &found {
        assert!(
            w.left >= 0.0 && w.top >= 0.0 && w.right <= 210.0 && w.bottom <= 140.0,
            "off the page: {w:?}"
        );
        let centre = |r: &&Region| {
            let (x, y) = ((w.left + w.right) / 2.0, (w.top + w.bottom) / 2.0);
            r.left <= x && x <= r.right && r.top <= y && y <= r.bottom
        };
        let region = rs
            .iter()
            .find(centre)
            .unwrap_or_else(|| panic!("in no region: {w:?}"));
        assert!(contains(region, w), "leaves {}: {w:?}", region.name);
        held.entry((w.page, region.name))
            .or_default()
            .push_str(&w.text);
    }
    // Each field is all there, in its region (spaces are where words part).
    let d = inv.draft();
    let fields = [
        ("seller.name", d.seller().name.clone()),
        ("buyer.name", d.buyer().name.clone()),
        ("remarks", d.remarks().unwrap().to_owned()),
        ("drawer", d.drawer().unwrap().to_owned()),
    ];
    let last = found.iter().map(|w| w.page).max().unwrap();
    for (region, text) in fields {
        let page = if region == "drawer" || region == "remarks" {
            last
        } else {
            0
        };
        let got = held.get(&(page, region)).cloned().unwrap_or_default();
        for c in text.chars().filter(|c| !c.is_whitespace()) {
            assert!(got.contains(c), "{region} lacks {c}: {got}");
        }
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        assert!(
            got.chars().filter(|c| !c.is_whitespace()).count() >= squeezed.chars().count(),
            "{region}: {got}"
        );
    }
    // Item names and specifications: every character on some page, in its column.
    let column = |name: &str| -> String {
        held.iter()
            .filter(|((_, r), _)| *r == name)
            .map(|(_, t)| t.as_str())
            .collect()
    };
    for line in d.lines() {
        let (names, specs) = (column("items.name"), column("items.specification"));
        for c in line.printed_name().chars().filter(|c| !c.is_whitespace()) {
            assert!(names.contains(c), "items.name lacks {c}");
        }
        for c in line.specification().unwrap().chars() {
            assert!(specs.contains(c), "items.specification lacks {c}");
        }
    }
}

//! The readable, terminal layout of an invoice: the same regions as the printed 数电票
//! (title, parties, items, 合计, 价税合计, 备注, 开票人), aligned for CJK text.

use std::fmt::Write;

use fapiao_model::{BuyerKind, InvoiceDraft, InvoiceKind, InvoiceNumber, Line, LineKind};
use time::PrimitiveDateTime;

/// Renders a draft for the terminal; with `numbered`, as the invoice with that number and time.
pub(crate) fn render_draft(
    d: &InvoiceDraft,
    numbered: Option<(&InvoiceNumber, PrimitiveDateTime)>,
) -> String {
    render_with_note(d, numbered, "（样张，未签名）")
}

/// Like [`render_draft`], with `note` after the number and date of a numbered invoice.
pub(crate) fn render_with_note(
    d: &InvoiceDraft,
    numbered: Option<(&InvoiceNumber, PrimitiveDateTime)>,
    note: &str,
) -> String {
    let mut s = String::new();
    let title = d.invoice_type().title();
    let kind = match d.kind() {
        InvoiceKind::Blue => "蓝字发票".to_owned(),
        InvoiceKind::Red(r) => format!(
            "红字发票 — 冲红原因 {} {}",
            r.reason.code(),
            r.reason.label()
        ),
    };
    match numbered {
        Some((number, at)) => {
            let _ = writeln!(
                s,
                "{title}    发票号码：{number}  开票日期：{}{note}",
                fapiao_model::datetime::format(at)
            );
        }
        None => {
            let _ = writeln!(s, "{title}    （预览：未编号、未签名）");
        }
    }
    let _ = writeln!(s, "{kind}");
    if let Some(id) = d.order_id() {
        let _ = writeln!(s, "订单号：{id}");
    }
    let _ = writeln!(s);

    let buyer = d.buyer();
    let buyer_id = match (buyer.kind, &buyer.taxpayer_id, &buyer.id_number) {
        (BuyerKind::Organization, Some(id), _) => id.to_string(),
        (BuyerKind::NaturalPerson, _, Some(id)) => format!("{}（自然人）", id.masked()),
        (BuyerKind::NaturalPerson, _, None) => "（自然人）".to_owned(),
        _ => String::new(),
    };
    let _ = writeln!(s, "购买方信息  名称：{}", buyer.name);
    let _ = writeln!(s, "            统一社会信用代码/纳税人识别号：{buyer_id}");
    let seller = d.seller();
    let _ = writeln!(s, "销售方信息  名称：{}", seller.name);
    let _ = writeln!(
        s,
        "            统一社会信用代码/纳税人识别号：{}",
        seller.taxpayer_id
    );
    let _ = writeln!(s);

    let headers = [
        "项目名称",
        "规格型号",
        "单位",
        "数量",
        "单价",
        "金额",
        "税率/征收率",
        "税额",
    ];
    let rows: Vec<[String; 8]> = d.lines().iter().map(row).collect();
    let mut widths = headers.map(width);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(width(cell));
        }
    }
    let right = [false, false, false, true, true, true, true, true];
    let line = |cells: &[String; 8], s: &mut String| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(&pad(cell, widths[i], right[i]));
            out.push_str("  ");
        }
        let _ = writeln!(s, "{}", out.trim_end());
    };
    line(&headers.map(str::to_owned), &mut s);
    for r in &rows {
        line(r, &mut s);
    }
    let t = d.totals();
    let _ = writeln!(s);
    let _ = writeln!(s, "合    计    金额 ¥{}    税额 ¥{}", t.amount, t.tax);
    let _ = writeln!(
        s,
        "价税合计（大写）⊗{}    （小写）¥{}",
        d.total_in_words(),
        t.total
    );
    if let Some(r) = d.remarks() {
        let _ = writeln!(s, "备    注    {r}");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "开票人：{}", d.drawer().unwrap_or("—"));
    s
}

fn row(l: &Line) -> [String; 8] {
    let mut cells = fapiao_render::line_cells(l);
    if l.kind() == LineKind::Discount {
        cells[0].push_str("（折扣）");
    }
    cells
}

/// Terminal columns of a string: East Asian wide and full-width characters take two.
fn width(s: &str) -> usize {
    s.chars().map(|c| if is_wide(c) { 2 } else { 1 }).sum()
}

fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF | 0xFE30..=0xFE4F | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6 | 0x20000..=0x3FFFD)
}

fn pad(s: &str, to: usize, right: bool) -> String {
    let fill = " ".repeat(to.saturating_sub(width(s)));
    if right {
        format!("{fill}{s}")
    } else {
        format!("{s}{fill}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cjk_characters_take_two_columns() {
        assert_eq!(width("ab"), 2);
        assert_eq!(width("信息技术"), 8);
        assert_eq!(width("（负数）"), 8);
        assert_eq!(pad("税额", 6, true), "  税额");
    }
}

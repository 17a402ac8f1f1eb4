//! The QR code content of a 数电票 and its drawing as vector modules.
//!
//! Content (research note §2): `01,<票种>,,<20-digit number>,<价税合计>,<YYYYMMDD>,,<tail>`
//! with 票种 `31` for 增值税专用发票 and `32` for 普通发票, the 价税合计 with 2 decimals (negative
//! on red invoices), and a 4-hex-digit tail. The real tail's algorithm is not public; ours is the
//! CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of everything before it, in upper-case hex.

use fapiao_model::{Invoice, InvoiceType};
use qrcode::canvas::{Canvas, MaskPattern};
use qrcode::{Color, EcLevel};

/// The QR text of an invoice.
#[must_use]
pub fn qr_content(invoice: &Invoice) -> String {
    let d = invoice.draft();
    let kind = match d.invoice_type() {
        InvoiceType::Special => "31",
        InvoiceType::Ordinary => "32",
    };
    let date = invoice.issued_at().date();
    let head = format!(
        "01,{kind},,{},{},{:04}{:02}{:02},,",
        invoice.number(),
        d.totals().total,
        date.year(),
        u8::from(date.month()),
        date.day()
    );
    let tail = crc16_ccitt_false(head.as_bytes());
    format!("{head}{tail:04X}")
}

/// CRC-16/CCITT-FALSE: check value for "123456789" is 0x29B1.
#[must_use]
pub fn crc16_ccitt_false(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The eight mask patterns, in the order of ISO/IEC 18004 (the first with the lowest penalty
/// wins a tie, as in the `qrcode` crate).
const MASKS: [MaskPattern; 8] = [
    MaskPattern::Checkerboard,
    MaskPattern::HorizontalLines,
    MaskPattern::VerticalLines,
    MaskPattern::DiagonalLines,
    MaskPattern::LargeCheckerboard,
    MaskPattern::Fields,
    MaskPattern::Diamonds,
    MaskPattern::Meadow,
];

/// The QR symbol (level M, as invoice QR codes use) as a row-major grid of dark modules, and
/// its width. Encoding is the `qrcode` crate's; the mask is chosen here by the same penalty
/// rules as its `apply_best_mask`, evaluated on a flat grid instead of eight canvas clones
/// scored through boxed closures, which was a fifth of a page's render time. The symbol is
/// identical to `QrCode::with_error_correction_level` (tested).
pub(crate) fn symbol(content: &str) -> (Vec<bool>, usize) {
    let level = EcLevel::M;
    let bits = qrcode::bits::encode_auto(content.as_bytes(), level)
        .expect("a QR payload under 100 ASCII bytes always fits");
    let version = bits.version();
    let (data, ec) = qrcode::ec::construct_codewords(&bits.into_bytes(), version, level)
        .expect("the version was chosen to fit the data");
    let mut canvas = Canvas::new(version, level);
    canvas.draw_all_functional_patterns();
    canvas.draw_data(&data, &ec);
    let width = version.width().unsigned_abs() as usize;
    let mut best: Option<(u32, Vec<bool>)> = None;
    for mask in MASKS {
        let mut masked = canvas.clone();
        masked.apply_mask(mask);
        let grid: Vec<bool> = masked
            .into_colors()
            .into_iter()
            .map(|c| c == Color::Dark)
            .collect();
        let score = penalty(&grid, width);
        if best.as_ref().is_none_or(|(s, _)| score < *s) {
            best = Some((score, grid));
        }
    }
    let (_, grid) = best.expect("eight masks were scored");
    (grid, width)
}

/// The mask penalty (ISO/IEC 18004 §7.8.3): runs of five or more, 2 × 2 blocks, finder-like
/// patterns, and the dark/light balance, scored as the `qrcode` crate scores them.
fn penalty(grid: &[bool], width: usize) -> u32 {
    let columns: Vec<bool> = (0..width * width)
        .map(|i| grid[(i % width) * width + i / width])
        .collect();
    let mut score = 0u32;
    for line in grid.chunks_exact(width).chain(columns.chunks_exact(width)) {
        score += line_penalty(line);
    }
    // The three finder patterns each match once per direction and side: 9 × 40.
    score = score.saturating_sub(360);
    for (row, next) in grid
        .chunks_exact(width)
        .zip(grid.chunks_exact(width).skip(1))
    {
        for x in 0..width - 1 {
            let c = row[x];
            if row[x + 1] == c && next[x] == c && next[x + 1] == c {
                score += 3;
            }
        }
    }
    let dark = grid.iter().filter(|d| **d).count();
    let ratio = dark * 200 / grid.len();
    score + u32::try_from(ratio.abs_diff(100)).unwrap_or(u32::MAX)
}

/// Runs of the same colour (a run of n ≥ 5 costs n − 2) and 1:1:3:1:1 finder-like patterns
/// (40 each, unless there are dark modules within four on both sides) along one row or column.
fn line_penalty(line: &[bool]) -> u32 {
    const FINDER: [bool; 7] = [true, false, true, true, true, false, true];
    let mut score = 0;
    for run in line.chunk_by(|a, b| a == b) {
        if run.len() >= 5 {
            score += u32::try_from(run.len()).unwrap_or(u32::MAX) - 2;
        }
    }
    for (j, window) in line.windows(7).enumerate() {
        if window != FINDER {
            continue;
        }
        let before = &line[j.saturating_sub(4)..j];
        let after = &line[(j + 7).min(line.len())..(j + 11).min(line.len())];
        if !before.contains(&true) || !after.contains(&true) {
            score += 40;
        }
    }
    score
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_catalogue_check_value() {
        assert_eq!(crc16_ccitt_false(b"123456789"), 0x29B1);
    }

    /// The mask chosen here is the one `qrcode`'s own `apply_best_mask` chooses, module for
    /// module, over payloads of every length an invoice QR can have and then some.
    #[test]
    fn symbol_matches_the_qrcode_crate() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..120 {
            for _ in 0..4 {
                let payload: String = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        char::from(b"0123456789ABCDEF,.-"[(seed % 19) as usize])
                    })
                    .collect();
                let reference =
                    qrcode::QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
                        .expect("fits");
                let expected: Vec<bool> = reference
                    .to_colors()
                    .into_iter()
                    .map(|c| c == Color::Dark)
                    .collect();
                let (grid, width) = symbol(&payload);
                assert_eq!(width, reference.width(), "{payload}");
                assert_eq!(grid, expected, "{payload:?}");
            }
        }
    }
}

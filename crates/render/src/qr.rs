//! The QR code content of a 数电票 and its drawing as vector modules.
//!
//! Content (research note §2): `01,<票种>,,<20-digit number>,<价税合计>,<YYYYMMDD>,,<tail>`
//! with 票种 `31` for 增值税专用发票 and `32` for 普通发票, the 价税合计 with 2 decimals (negative
//! on red invoices), and a 4-hex-digit tail. The real tail's algorithm is not public; ours is the
//! CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF) of everything before it, in upper-case hex.

use fapiao_model::{Invoice, InvoiceType};
use qrcode::{EcLevel, QrCode};

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

/// The dark modules of the QR code as (column, row), and the module count per side.
#[must_use]
pub(crate) fn modules(content: &str) -> (Vec<(usize, usize)>, usize) {
    // Level M, as invoice QR codes use; content is ASCII and short, so it always fits.
    let code = QrCode::with_error_correction_level(content.as_bytes(), EcLevel::M)
        .expect("a QR payload under 100 ASCII bytes always fits");
    let width = code.width();
    let colors = code.to_colors();
    let dark = colors
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == qrcode::Color::Dark)
        .map(|(i, _)| (i % width, i / width))
        .collect();
    (dark, width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_catalogue_check_value() {
        assert_eq!(crc16_ccitt_false(b"123456789"), 0x29B1);
    }
}

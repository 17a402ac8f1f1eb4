//! The invoice as the official 数电票 XML (`EInvoice`), element names and nesting as public
//! parsers of real files expect them (`docs/layout.md` documents every choice).
//!
//! The document is written compactly (no whitespace between elements), UTF-8, without a
//! namespace. That makes the signed bytes well defined: the issuing device signs the exact
//! bytes of `<Header>…</Header>`, `<EInvoiceData>…</EInvoiceData>`,
//! `<SellerAuthentication>…</SellerAuthentication>`, `<TaxSupervisionInfo>…</TaxSupervisionInfo>`
//! and `<SignatureTime>…</SignatureTime>`, concatenated in that order — the nodes the real
//! `TaxBureauSignature/Reference@URI` lists ([`signed_content`]).

use std::fmt::Write;

use fapiao_model::{Amount, Invoice, InvoiceKind, InvoiceType, Line, TaxRate, datetime};
use time::PrimitiveDateTime;
use time::macros::format_description;

/// Format version written in `Header/Version`.
pub const FORMAT_VERSION: &str = "0.32";
/// The SM2-with-SM3 signature algorithm OID written in `SignatureAlgorithm`.
pub const SM2_WITH_SM3: &str = "1.2.156.10197.1.501";
/// `Reference@URI`: the signed nodes, by the elements' own names (sample files from the field
/// spell them `/Einvoice/EinvoiceData`…, which names no element of the document; a verifier
/// accepts that spelling too, [`crate::verify::REFERENCE_URI_AS_SEEN`]).
pub const REFERENCE_URI: &str = "/EInvoice/Header|/EInvoice/EInvoiceData|/EInvoice/SellerAuthentication|/EInvoice/TaxSupervisionInfo|/EInvoice/TaxBureauSignature/SignatureTime";

/// The issuing device's signature carried in the signature element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSignature {
    /// When it was made (`SignatureTime`, China Standard Time).
    pub signed_at: PrimitiveDateTime,
    /// The DER SM2 signature over [`signed_content`] (`SignatureValue`, base64).
    pub value: Vec<u8>,
    /// The device's signing certificate, DER (`KeyInfo`, base64); empty to leave it out.
    pub certificate: Vec<u8>,
}

/// The bytes the issuing device signs: the listed nodes of the document as rendered for
/// `signature_time`.
#[must_use]
pub fn signed_content(invoice: &Invoice, signature_time: PrimitiveDateTime) -> Vec<u8> {
    let parts = Parts::of(invoice);
    let mut out = String::with_capacity(
        parts.header.len()
            + parts.data.len()
            + parts.authentication.len()
            + parts.supervision.len()
            + 128,
    );
    out.push_str(&parts.header);
    out.push_str(&parts.data);
    out.push_str(&parts.authentication);
    out.push_str(&parts.supervision);
    out.push_str(&signature_time_element(signature_time));
    out.into_bytes()
}

/// Renders the XML, with the signature element when a signature is given (an unsigned
/// document has no `TaxBureauSignature`).
#[must_use]
pub fn render_xml(invoice: &Invoice, signature: Option<&DeviceSignature>) -> String {
    let parts = Parts::of(invoice);
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"utf-8\" standalone=\"yes\"?>\n<EInvoice>");
    out.push_str(&parts.header);
    out.push_str(&parts.data);
    out.push_str(&parts.authentication);
    out.push_str(&parts.supervision);
    if let Some(sig) = signature {
        out.push_str("<TaxBureauSignature>");
        let _ = write!(out, "<Reference URI=\"{}\"/>", escape(REFERENCE_URI));
        elem(&mut out, "SignatureAlgorithm", SM2_WITH_SM3);
        elem(&mut out, "SignatureFormat", "DETACH");
        out.push_str(&signature_time_element(sig.signed_at));
        elem(&mut out, "SignatureValue", &base64(&sig.value));
        if sig.certificate.is_empty() {
            out.push_str("<KeyInfo/>");
        } else {
            elem(&mut out, "KeyInfo", &base64(&sig.certificate));
        }
        out.push_str("</TaxBureauSignature>");
    }
    out.push_str("</EInvoice>\n");
    out
}

/// 税务机关代码 of the issuing province: `1` + province code + `00000000`.
#[must_use]
pub fn tax_bureau_code(invoice: &Invoice) -> String {
    format!("1{:02}00000000", invoice.number().province().code())
}

/// 国家税务总局XX税务局 of the issuing province.
#[must_use]
pub fn tax_bureau_name(invoice: &Invoice) -> String {
    format!("国家税务总局{}税务局", invoice.number().province().name())
}

/// The rate as the XML writes it: `0.13`, `0.005`, `0`; 免税 and 不征税 as words.
#[must_use]
pub fn xml_rate(rate: TaxRate) -> String {
    match rate {
        TaxRate::Exempt | TaxRate::NonTaxable => rate.to_string(),
        r => r.ratio().normalize().to_string(),
    }
}

struct Parts {
    header: String,
    data: String,
    authentication: String,
    supervision: String,
}

impl Parts {
    fn of(inv: &Invoice) -> Self {
        let d = inv.draft();
        let mut header = String::from("<Header>");
        elem(&mut header, "EIid", inv.number().as_str());
        elem(
            &mut header,
            "EInvoiceTag",
            &format!("SWEI{:02}00", inv.number().province().code()),
        );
        elem(&mut header, "Version", FORMAT_VERSION);
        header.push_str("<InherentLabel>");
        label(
            &mut header,
            "InIssuType",
            if d.is_red() { "N" } else { "Y" },
            "是否蓝字发票标志",
        );
        label(&mut header, "EInvoiceType", "01", "电子发票");
        let (code, name) = match d.invoice_type() {
            InvoiceType::Special => ("01", "增值税专用发票"),
            InvoiceType::Ordinary => ("02", "普通发票"),
        };
        label(&mut header, "GeneralOrSpecialVAT", code, name);
        header.push_str("</InherentLabel>");
        header.push_str("<UndefinedLabel><Label>");
        elem(&mut header, "LabelType", "发票开具方式标签");
        elem(&mut header, "LabelCode", "2");
        elem(&mut header, "LabelName", "接口开票");
        header.push_str("</Label></UndefinedLabel></Header>");

        let mut data = String::from("<EInvoiceData><SellerInformation>");
        let s = d.seller();
        elem(&mut data, "SellerIdNum", s.taxpayer_id.as_str());
        elem(&mut data, "SellerName", &s.name);
        opt(&mut data, "SellerAddr", s.address.as_deref());
        opt(&mut data, "SellerTelNum", s.phone.as_deref());
        opt(&mut data, "SellerBankName", s.bank_name.as_deref());
        opt(&mut data, "SellerBankAccNum", s.bank_account.as_deref());
        data.push_str("</SellerInformation><BuyerInformation>");
        let b = d.buyer();
        let buyer_id = b
            .taxpayer_id
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .or_else(|| b.id_number.as_ref().map(|i| i.expose().to_owned()));
        opt(&mut data, "BuyerIdNum", buyer_id.as_deref());
        elem(&mut data, "BuyerName", &b.name);
        opt(&mut data, "BuyerAddr", b.address.as_deref());
        opt(&mut data, "BuyerTelNum", b.phone.as_deref());
        opt(&mut data, "BuyerBankName", b.bank_name.as_deref());
        opt(&mut data, "BuyerBankAccNum", b.bank_account.as_deref());
        data.push_str("</BuyerInformation><BasicInformation>");
        let t = d.totals();
        elem(&mut data, "TotalAmWithoutTax", &t.amount.to_string());
        elem(&mut data, "TotalTaxAm", &t.tax.to_string());
        elem(&mut data, "TotalTax-includedAmount", &t.total.to_string());
        elem(
            &mut data,
            "TotalTax-includedAmountInChinese",
            d.total_in_words(),
        );
        elem(&mut data, "Drawer", d.drawer().unwrap_or(""));
        elem(&mut data, "RequestTime", &datetime::format(inv.issued_at()));
        data.push_str("</BasicInformation>");
        for line in d.lines() {
            item(&mut data, line);
        }
        match d.kind() {
            InvoiceKind::Blue => data.push_str("<SpecificInformation/>"),
            InvoiceKind::Red(r) => {
                data.push_str("<SpecificInformation><RedEInvoice>");
                elem(&mut data, "OriginalInvoiceCode", r.blue_number.as_str());
                elem(&mut data, "CreditNoteNumber", r.form_number.as_str());
                data.push_str("</RedEInvoice></SpecificInformation>");
            }
        }
        data.push_str("<AdditionalInformation>");
        opt(&mut data, "Remark", d.remarks());
        data.push_str("</AdditionalInformation></EInvoiceData>");

        let authentication =
            "<SellerAuthentication><AuthenticationMethods>01</AuthenticationMethods></SellerAuthentication>".to_owned();

        let mut supervision = String::from("<TaxSupervisionInfo>");
        elem(&mut supervision, "InvoiceNumber", inv.number().as_str());
        let date = inv
            .issued_at()
            .date()
            .format(format_description!("[year]-[month]-[day]"))
            .expect("a date always formats");
        elem(&mut supervision, "IssueTime", &date);
        elem(&mut supervision, "TaxBureauCode", &tax_bureau_code(inv));
        elem(&mut supervision, "TaxBureauName", &tax_bureau_name(inv));
        supervision.push_str("</TaxSupervisionInfo>");
        Self {
            header,
            data,
            authentication,
            supervision,
        }
    }
}

fn item(out: &mut String, l: &Line) {
    out.push_str("<IssuItemInformation>");
    elem(out, "ItemName", &l.printed_name());
    opt(out, "SpecMod", l.specification());
    opt(out, "MeaUnits", l.unit());
    opt(
        out,
        "Quantity",
        l.quantity().map(|q| q.to_string()).as_deref(),
    );
    opt(
        out,
        "UnPrice",
        l.unit_price().map(|p| p.to_string()).as_deref(),
    );
    elem(out, "Amount", &l.amount().to_string());
    elem(out, "TaxRate", &xml_rate(l.tax_rate()));
    elem(out, "ComTaxAm", &l.tax().to_string());
    let total: Amount = l.total();
    elem(out, "TotaltaxIncludedAmount", &total.to_string());
    elem(out, "TaxClassificationCode", l.tax_code().as_str());
    out.push_str("</IssuItemInformation>");
}

fn signature_time_element(t: PrimitiveDateTime) -> String {
    let mut s = String::new();
    elem(&mut s, "SignatureTime", &datetime::format(t));
    s
}

fn label(out: &mut String, name: &str, code: &str, label_name: &str) {
    open_tag(out, name);
    elem(out, "LabelCode", code);
    elem(out, "LabelName", label_name);
    close_tag(out, name);
}

fn open_tag(out: &mut String, name: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
}

fn close_tag(out: &mut String, name: &str) {
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// `<name>value</name>`, the value escaped, appended to `out` (no intermediate strings: the
/// signed content is rendered on every signature and every verification).
fn elem(out: &mut String, name: &str, value: &str) {
    open_tag(out, name);
    escape_into(out, value);
    close_tag(out, name);
}

fn opt(out: &mut String, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        elem(out, name, v);
    }
}

/// XML character escaping for text and attribute values.
#[must_use]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

/// [`escape`], appended to `out`. The five characters are ASCII, never part of a multi-byte
/// UTF-8 sequence, so the text between them is copied as it is.
fn escape_into(out: &mut String, s: &str) {
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&apos;",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        out.push_str(entity);
        from = i + 1;
    }
    out.push_str(&s[from..]);
}

/// Standard base64 with padding (RFC 4648 §4).
#[must_use]
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let idx = |shift: u32| ALPHABET[((n >> shift) & 63) as usize] as char;
        out.push(idx(18));
        out.push(idx(12));
        out.push(if chunk.len() > 1 { idx(6) } else { '=' });
        out.push(if chunk.len() > 2 { idx(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn escaping_covers_markup_characters() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        // Multi-byte text around and between them is kept as it is.
        assert_eq!(
            escape("上海<云帆>&'科技'有限公司"),
            "上海&lt;云帆&gt;&amp;&apos;科技&apos;有限公司"
        );
        assert_eq!(escape(""), "");
        assert_eq!(escape("&"), "&amp;");
        assert_eq!(escape("发票"), "发票");
        let mut out = String::from("<x>");
        elem(&mut out, "Name", "A&B 公司");
        assert_eq!(out, "<x><Name>A&amp;B 公司</Name>");
    }
}

//! The invoice as an OFD (GB/T 33190-2016), the other layout format of the 数电票: the same
//! pages as the PDF (one layout, `page.rs`) on the 210 × 140 mm page, text objects in embedded
//! font subsets, rules as path objects, the QR code as an image object, the invoice's 发票标引
//! (`CustomTags`) pointing at the text objects of its fields, the fields again as `CustomData`
//! in `OFD.xml`, the signed XML attached — and a signature (§18): `Signatures.xml` lists one
//! `Signature.xml` whose `References` hold the SM3 digest of every other part, and whose exact
//! bytes the issuing device signs with SM2 (`SignedValue.dat`, DER `SEQUENCE {r, s}`, ID
//! `1234567812345678`). Deterministic like the PDF: the same invoice gives the same parts (only
//! the signature value differs between signings, SM2 drawing a fresh nonce).
//!
//! Rendering is in two steps, since the signing key is not this crate's: [`render_ofd`] gives
//! the parts and the bytes to sign ([`UnsignedOfd::signed_bytes`]); [`UnsignedOfd::sign`]
//! puts the signature in and packs the file.

mod font;
pub mod verify;
mod zip;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fapiao_model::Invoice;

use crate::RenderError;
use crate::layout::{PAGE_H, PAGE_W};
use crate::page::{Canvas, Color, PT_PER_MM, Plan, check_draft_glyphs};
use crate::text::{Measure, PdfFont, Run};
use crate::xml::{base64, escape};

/// The OFD namespace.
const NS: &str = "http://www.ofdspec.org/2016";
/// SM2 with SM3, and SM3 (GM/T 0006).
const SM2_SM3: &str = "1.2.156.10197.1.501";
const SM3: &str = "1.2.156.10197.1.401";
/// The signature: what the device signs (its exact bytes),
pub const SIGNATURE_XML: &str = "Doc_0/Signs/Sign_0/Signature.xml";
/// the signature value (DER `SEQUENCE {r, s}`),
pub const SIGNED_VALUE: &str = "Doc_0/Signs/Sign_0/SignedValue.dat";
/// and the list of signatures `OFD.xml` points at.
pub const SIGNATURES_XML: &str = "Doc_0/Signs/Signatures.xml";

/// A number of millimetres as OFD writes it: at most three decimals, no trailing zeros.
fn n(v: f32) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

fn rgb((r, g, b): Color) -> String {
    format!("{r} {g} {b}")
}

/// Pages as OFD content, with what the document needs to know of them.
struct OfdCanvas<'a> {
    /// The next object ID (IDs are unique in the document; 1–15 are the resources').
    next_id: u32,
    /// The objects of the page being drawn.
    objects: String,
    /// Face → (character → glyph in the full face).
    used: &'a mut BTreeMap<usize, BTreeMap<char, u16>>,
    /// Field → (page, object IDs), for the 发票标引.
    tags: &'a mut BTreeMap<&'static str, Vec<(usize, u32)>>,
    field: Option<&'static str>,
    page: usize,
}

/// The resource ID of face `k`'s subset.
fn font_id(face: usize) -> u32 {
    2 + u32::try_from(face).expect("a few faces")
}
/// The resource ID of the QR image (the same on every page).
const QR_ID: u32 = 8;

impl OfdCanvas<'_> {
    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

impl Canvas for OfdCanvas<'_> {
    fn glyphs(&mut self, x: f32, baseline: f32, size: f32, run: &Run<'_>, color: Color) {
        let id = self.id();
        let size_mm = size / PT_PER_MM;
        let width = run.width * size_mm;
        // The boundary holds the line box; text positions are relative to it.
        let (top, height) = (baseline - size_mm, size_mm * 1.25);
        let used = self.used.entry(run.face).or_default();
        let mut deltas = Vec::new();
        for (k, g) in run.glyphs.iter().enumerate() {
            if let Some(c) = run.text[g.text_range.clone()].chars().next() {
                used.insert(c, u16::try_from(g.glyph_id.to_u32()).unwrap_or(0));
            }
            if k + 1 < run.glyphs.len() {
                deltas.push(n(g.x_advance * size_mm));
            }
        }
        let _ = write!(
            self.objects,
            "<ofd:TextObject ID=\"{id}\" Boundary=\"{} {} {} {}\" Font=\"{}\" Size=\"{}\">\
             <ofd:FillColor Value=\"{}\"/><ofd:TextCode X=\"0\" Y=\"{}\"{}>{}</ofd:TextCode>\
             </ofd:TextObject>",
            n(x),
            n(top),
            n(width.max(0.001)),
            n(height),
            font_id(run.face),
            n(size_mm),
            rgb(color),
            n(size_mm),
            if deltas.is_empty() {
                String::new()
            } else {
                format!(" DeltaX=\"{}\"", deltas.join(" "))
            },
            escape(run.text),
        );
        // A field repeated on every page (number, parties, remarks) is indexed where it
        // first appears; one drawn over several lines or runs has a reference for each.
        if let Some(f) = self.field {
            let refs = self.tags.entry(f).or_default();
            if refs.first().is_none_or(|(page, _)| *page == self.page) {
                refs.push((self.page, id));
            }
        }
    }

    fn line(&mut self, (x1, y1): (f32, f32), (x2, y2): (f32, f32), width: f32) {
        let id = self.id();
        let (left, top) = (x1.min(x2), y1.min(y2));
        let _ = write!(
            self.objects,
            "<ofd:PathObject ID=\"{id}\" Boundary=\"{} {} {} {}\" LineWidth=\"{}\">\
             <ofd:StrokeColor Value=\"128 0 0\"/>\
             <ofd:AbbreviatedData>M {} {} L {} {}</ofd:AbbreviatedData></ofd:PathObject>",
            n(left),
            n(top),
            n((x2 - x1).abs().max(0.001)),
            n((y2 - y1).abs().max(0.001)),
            n(width / PT_PER_MM),
            n(x1 - left),
            n(y1 - top),
            n(x2 - left),
            n(y2 - top),
        );
    }

    fn qr(&mut self, _grid: &[bool], _modules: usize, (x, y): (f32, f32), side: f32) {
        let id = self.id();
        let _ = write!(
            self.objects,
            "<ofd:ImageObject ID=\"{id}\" Boundary=\"{} {} {s} {s}\" CTM=\"{s} 0 0 {s} 0 0\" \
             ResourceID=\"{}\"/>",
            n(x),
            n(y),
            QR_ID,
            s = n(side),
        );
    }

    fn field(&mut self, name: Option<&'static str>) {
        self.field = name;
    }
}

/// The QR symbol as a 1-bit greyscale PNG, one pixel a module (the quiet zone is the page's
/// white around the image object).
fn qr_png(content: &str) -> Result<Vec<u8>, RenderError> {
    let (grid, modules) = crate::qr::symbol(content);
    let side = u32::try_from(modules).map_err(|_| RenderError::Pdf("QR".into()))?;
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, side, side);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::One);
        let mut w = enc
            .write_header()
            .map_err(|e| RenderError::Pdf(format!("QR image: {e}")))?;
        let mut data = Vec::with_capacity(grid.len() / 8 + modules);
        for row in grid.chunks_exact(modules) {
            for byte in row.chunks(8) {
                let mut b = 0_u8;
                for (i, dark) in byte.iter().enumerate() {
                    if !dark {
                        b |= 0x80 >> i;
                    }
                }
                data.push(b);
            }
        }
        w.write_image_data(&data)
            .map_err(|e| RenderError::Pdf(format!("QR image: {e}")))?;
    }
    Ok(out)
}

/// An OFD rendered and waiting for its signature.
#[derive(Debug, Clone)]
pub struct UnsignedOfd {
    /// Every part but the signature's, in package order.
    parts: Vec<(String, Vec<u8>)>,
    /// `Signature.xml`: what the device signs.
    signature_xml: Vec<u8>,
}

impl UnsignedOfd {
    /// The bytes the issuing device signs: `Doc_0/Signs/Sign_0/Signature.xml` exactly.
    #[must_use]
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signature_xml
    }

    /// The OFD file with `signature` (DER `SEQUENCE {r, s}`, SM2 with SM3 over
    /// [`UnsignedOfd::signed_bytes`]) in `SignedValue.dat`.
    #[must_use]
    pub fn sign(mut self, signature: &[u8]) -> Vec<u8> {
        let signatures = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <ofd:Signatures xmlns:ofd=\"{NS}\"><ofd:MaxSignId>1</ofd:MaxSignId>\
             <ofd:Signature ID=\"1\" Type=\"Sign\" BaseLoc=\"Sign_0/Signature.xml\"/>\
             </ofd:Signatures>"
        );
        self.parts
            .push((SIGNATURES_XML.to_owned(), signatures.into_bytes()));
        self.parts
            .push((SIGNATURE_XML.to_owned(), self.signature_xml.clone()));
        self.parts
            .push((SIGNED_VALUE.to_owned(), signature.to_vec()));
        zip::write(&self.parts)
    }
}

/// Renders `invoice` as an OFD with `xml` (its signed XML) attached; see [`UnsignedOfd`].
///
/// # Errors
/// [`RenderError::MissingGlyph`] for a character no face draws, [`RenderError::Font`] if a
/// face cannot be subset.
pub fn render_ofd(
    invoice: &Invoice,
    xml: &str,
    font: &PdfFont,
) -> Result<UnsignedOfd, RenderError> {
    check_draft_glyphs(invoice.draft(), font)?;
    let measure = Measure::new(font);
    let plan = Plan::new(invoice, &measure);
    let mut used = BTreeMap::new();
    let mut tags = BTreeMap::new();
    let mut pages = Vec::new();
    let mut next_id = 100;
    for index in 0..plan.page_count() {
        let mut canvas = OfdCanvas {
            next_id,
            objects: String::new(),
            used: &mut used,
            tags: &mut tags,
            field: None,
            page: index,
        };
        plan.draw(&mut canvas, &measure, invoice, index);
        next_id = canvas.next_id;
        let layer = canvas.id();
        next_id += 1;
        pages.push(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ofd:Page xmlns:ofd=\"{NS}\"><ofd:Content>\
             <ofd:Layer ID=\"{layer}\">{}</ofd:Layer></ofd:Content></ofd:Page>",
            canvas.objects
        ));
    }
    let number = invoice.number().as_str();
    let d = invoice.draft();
    let t = d.totals();
    let issued = invoice.issued_at();
    let date = format!(
        "{}-{:02}-{:02}",
        issued.year(),
        u8::from(issued.month()),
        issued.day()
    );
    let mut parts: Vec<(String, Vec<u8>)> = Vec::new();

    // OFD.xml: the entry, with the fields readers look for.
    let buyer_id = d
        .buyer()
        .taxpayer_id
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    let mut custom = String::new();
    for (name, value) in [
        ("发票号码", number.to_owned()),
        ("开票日期", date.clone()),
        ("合计金额", t.amount.to_string()),
        ("合计税额", t.tax.to_string()),
        ("价税合计", t.total.to_string()),
        ("购买方名称", d.buyer().name.clone()),
        ("购买方纳税人识别号", buyer_id),
        ("销售方名称", d.seller().name.clone()),
        ("销售方纳税人识别号", d.seller().taxpayer_id.to_string()),
        ("开票人", d.drawer().unwrap_or("").to_owned()),
    ] {
        let _ = write!(
            custom,
            "<ofd:CustomData Name=\"{name}\">{}</ofd:CustomData>",
            escape(&value)
        );
    }
    let title = format!("{} {number}", d.invoice_type().title());
    parts.push((
        "OFD.xml".into(),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <ofd:OFD xmlns:ofd=\"{NS}\" Version=\"1.1\" DocType=\"OFD\"><ofd:DocBody>\
             <ofd:DocInfo><ofd:DocID>{}</ofd:DocID><ofd:Title>{}</ofd:Title>\
             <ofd:Author>{}</ofd:Author><ofd:CreationDate>{date}</ofd:CreationDate>\
             <ofd:Creator>Fapiao</ofd:Creator><ofd:CustomDatas>{custom}</ofd:CustomDatas>\
             </ofd:DocInfo><ofd:DocRoot>Doc_0/Document.xml</ofd:DocRoot>\
             <ofd:Signatures>Doc_0/Signs/Signatures.xml</ofd:Signatures></ofd:DocBody></ofd:OFD>",
            doc_id(number),
            escape(&title),
            escape(&d.seller().name),
        )
        .into_bytes(),
    ));

    // Document.xml.
    let mut page_list = String::new();
    for (k, _) in pages.iter().enumerate() {
        let _ = write!(
            page_list,
            "<ofd:Page ID=\"{}\" BaseLoc=\"Pages/Page_{k}/Content.xml\"/>",
            20 + k
        );
    }
    parts.push((
        "Doc_0/Document.xml".into(),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ofd:Document xmlns:ofd=\"{NS}\">\
             <ofd:CommonData><ofd:MaxUnitID>{}</ofd:MaxUnitID><ofd:PageArea>\
             <ofd:PhysicalBox>0 0 {} {}</ofd:PhysicalBox></ofd:PageArea>\
             <ofd:PublicRes>PublicRes.xml</ofd:PublicRes>\
             <ofd:DocumentRes>DocumentRes.xml</ofd:DocumentRes></ofd:CommonData>\
             <ofd:Pages>{page_list}</ofd:Pages>\
             <ofd:CustomTags>Tags/CustomTags.xml</ofd:CustomTags>\
             <ofd:Attachments>Attachs/Attachments.xml</ofd:Attachments></ofd:Document>",
            next_id,
            n(PAGE_W),
            n(PAGE_H),
        )
        .into_bytes(),
    ));

    // Fonts: one subset per face used.
    let mut fonts = String::new();
    let mut font_files = Vec::new();
    for (face, chars) in &used {
        let f = &font.faces[*face];
        let file = format!(
            "font_{face}.{}",
            if f.data.starts_with(b"OTTO") {
                "otf"
            } else {
                "ttf"
            }
        );
        let family = {
            use skrifa::MetadataProvider as _;
            skrifa::FontRef::from_index(&f.data, f.index)
                .ok()
                .and_then(|r| {
                    r.localized_strings(skrifa::string::StringId::FAMILY_NAME)
                        .english_or_first()
                        .map(|s| s.chars().collect::<String>())
                })
                .unwrap_or_else(|| format!("face{face}"))
        };
        let _ = write!(
            fonts,
            "<ofd:Font ID=\"{}\" FontName=\"{}\" FamilyName=\"{}\"><ofd:FontFile>{file}</ofd:FontFile></ofd:Font>",
            font_id(*face),
            escape(&family),
            escape(&family),
        );
        font_files.push((
            format!("Doc_0/Res/{file}"),
            font::subset(&f.data, f.index, chars)?,
        ));
    }
    parts.push((
        "Doc_0/PublicRes.xml".into(),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ofd:Res xmlns:ofd=\"{NS}\" BaseLoc=\"Res\">\
             <ofd:Fonts>{fonts}</ofd:Fonts></ofd:Res>"
        )
        .into_bytes(),
    ));
    parts.push((
        "Doc_0/DocumentRes.xml".into(),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ofd:Res xmlns:ofd=\"{NS}\" BaseLoc=\"Res\">\
             <ofd:MultiMedias><ofd:MultiMedia ID=\"{QR_ID}\" Type=\"Image\" Format=\"PNG\">\
             <ofd:MediaFile>qr.png</ofd:MediaFile></ofd:MultiMedia></ofd:MultiMedias></ofd:Res>"
        )
        .into_bytes(),
    ));
    parts.extend(font_files);
    parts.push((
        "Doc_0/Res/qr.png".into(),
        qr_png(&crate::qr::qr_content(invoice))?,
    ));
    for (k, page) in pages.into_iter().enumerate() {
        parts.push((
            format!("Doc_0/Pages/Page_{k}/Content.xml"),
            page.into_bytes(),
        ));
    }

    // The 发票标引: each field's text objects.
    let mut tree = String::new();
    for (field, refs) in &tags {
        let _ = write!(tree, "<fp:{field}>");
        for (page, id) in refs {
            let _ = write!(
                tree,
                "<ofd:ObjectRef PageRef=\"{}\">{id}</ofd:ObjectRef>",
                20 + page
            );
        }
        let _ = write!(tree, "</fp:{field}>");
    }
    parts.push((
        "Doc_0/Tags/CustomTags.xml".into(),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ofd:CustomTags xmlns:ofd=\"{NS}\">\
             <ofd:CustomTag NameSpace=\"{TAG_NS}\"><ofd:FileLoc>CustomTag.xml</ofd:FileLoc>\
             </ofd:CustomTag></ofd:CustomTags>"
        )
        .into_bytes(),
    ));
    parts.push((
        "Doc_0/Tags/CustomTag.xml".into(),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <fp:eInvoice xmlns:fp=\"{TAG_NS}\" xmlns:ofd=\"{NS}\">{tree}</fp:eInvoice>"
        )
        .into_bytes(),
    ));

    // The signed XML, attached.
    let attached = format!("dzfp_{number}.xml");
    parts.push((
        "Doc_0/Attachs/Attachments.xml".into(),
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ofd:Attachments xmlns:ofd=\"{NS}\">\
             <ofd:Attachment ID=\"1\" Name=\"{attached}\" Format=\"xml\" CreationDate=\"{date}\" \
             Size=\"{}\" Visible=\"false\"><ofd:FileLoc>{attached}</ofd:FileLoc></ofd:Attachment>\
             </ofd:Attachments>",
            n(xml.len() as f32 / 1024.0)
        )
        .into_bytes(),
    ));
    parts.push((format!("Doc_0/Attachs/{attached}"), xml.as_bytes().to_vec()));

    // Signature.xml: the SM3 digest of every part above.
    let mut references = String::new();
    for (name, data) in &parts {
        use sm3::Digest as _;
        let _ = write!(
            references,
            "<ofd:Reference FileRef=\"/{}\"><ofd:CheckValue>{}</ofd:CheckValue></ofd:Reference>",
            escape(name),
            base64(&sm3::Sm3::digest(data)),
        );
    }
    let signature_xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ofd:Signature xmlns:ofd=\"{NS}\">\
         <ofd:SignedInfo><ofd:Provider ProviderName=\"Fapiao\" Version=\"1\"/>\
         <ofd:SignatureMethod>{SM2_SM3}</ofd:SignatureMethod>\
         <ofd:SignatureDateTime>{}{:02}{:02}{:02}{:02}{:02}+0800</ofd:SignatureDateTime>\
         <ofd:References CheckMethod=\"{SM3}\">{references}</ofd:References></ofd:SignedInfo>\
         <ofd:SignedValue>/{SIGNED_VALUE}</ofd:SignedValue></ofd:Signature>",
        issued.year(),
        u8::from(issued.month()),
        issued.day(),
        issued.hour(),
        issued.minute(),
        issued.second(),
    )
    .into_bytes();
    Ok(UnsignedOfd {
        parts,
        signature_xml,
    })
}

/// The namespace of the 发票标引 tree (the e-invoice OFD tag schema readers know).
const TAG_NS: &str = "http://www.edrm.org.cn/schema/e-invoice/2019";

/// A document id: the SM3 of the number, as 32 hex digits.
fn doc_id(number: &str) -> String {
    use sm3::Digest as _;
    sm3::Sm3::digest(number.as_bytes())[..16]
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The parts of an OFD package, in order, each checked against its CRC (`None`: not a ZIP
/// package Fapiao can read) — for tools that look inside.
#[must_use]
pub fn parts(ofd: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    zip::read(ofd)
}

/// Packs `parts` as an OFD package the way [`render_ofd`] does.
#[must_use]
pub fn pack(parts: &[(String, Vec<u8>)]) -> Vec<u8> {
    zip::write(parts)
}

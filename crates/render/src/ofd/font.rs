//! A face's subset for an OFD: the glyphs its text uses (`subsetter`, which writes subsets for
//! PDF and so drops `cmap`), with a `cmap` of our own put back — an OFD's text is characters,
//! which a reader maps to glyphs through the font's `cmap` (format 4 for the Basic
//! Multilingual Plane, format 12 for every character, CJK Extension B included).

use std::collections::BTreeMap;

use crate::RenderError;

/// The subset of face `data` (face `index`) holding the glyphs of `chars` (character → glyph
/// in the full face), with a `cmap` mapping each character to its glyph in the subset.
pub(crate) fn subset(
    data: &[u8],
    index: u32,
    chars: &BTreeMap<char, u16>,
) -> Result<Vec<u8>, RenderError> {
    let mut remapper = subsetter::GlyphRemapper::new();
    for gid in chars.values() {
        remapper.remap(*gid);
    }
    let sub = subsetter::subset(data, index, &remapper).map_err(|_| RenderError::Font)?;
    let mapped: BTreeMap<u32, u16> = chars
        .iter()
        .filter_map(|(c, g)| Some((u32::from(*c), remapper.get(*g)?)))
        .collect();
    with_table(&sub, *b"cmap", &cmap(&mapped)).ok_or(RenderError::Font)
}

fn be16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_be_bytes());
}

fn be32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_be_bytes());
}

/// A `cmap` table: (3,1) format 4 over the BMP characters, (3,10) format 12 over all.
fn cmap(map: &BTreeMap<u32, u16>) -> Vec<u8> {
    // Format 4: one segment per character, and the closing 0xFFFF segment.
    let bmp: Vec<(u16, u16)> = map
        .iter()
        .filter_map(|(c, g)| Some((u16::try_from(*c).ok().filter(|c| *c != 0xFFFF)?, *g)))
        .collect();
    let segs = u16::try_from(bmp.len() + 1).expect("a subset of an invoice's characters");
    let mut f4 = Vec::new();
    let len4 = 16 + 8 * usize::from(segs);
    be16(&mut f4, 4);
    be16(&mut f4, u16::try_from(len4).expect("small"));
    be16(&mut f4, 0);
    be16(&mut f4, segs * 2);
    let floor = 1_u16 << (15 - segs.leading_zeros());
    be16(&mut f4, floor * 2);
    be16(
        &mut f4,
        u16::try_from(floor.trailing_zeros()).expect("small"),
    );
    be16(&mut f4, segs * 2 - floor * 2);
    for (c, _) in &bmp {
        be16(&mut f4, *c);
    }
    be16(&mut f4, 0xFFFF);
    be16(&mut f4, 0);
    for (c, _) in &bmp {
        be16(&mut f4, *c);
    }
    be16(&mut f4, 0xFFFF);
    for (c, g) in &bmp {
        be16(&mut f4, g.wrapping_sub(*c));
    }
    be16(&mut f4, 1);
    for _ in 0..segs {
        be16(&mut f4, 0);
    }
    // Format 12: one group per character.
    let mut f12 = Vec::new();
    be16(&mut f12, 12);
    be16(&mut f12, 0);
    be32(&mut f12, u32::try_from(16 + 12 * map.len()).expect("small"));
    be32(&mut f12, 0);
    be32(&mut f12, u32::try_from(map.len()).expect("small"));
    for (c, g) in map {
        be32(&mut f12, *c);
        be32(&mut f12, *c);
        be32(&mut f12, u32::from(*g));
    }
    let mut t = Vec::new();
    be16(&mut t, 0);
    be16(&mut t, 2);
    let first = 4 + 2 * 8;
    for (platform, encoding, offset) in [(3, 1, first), (3, 10, first + f4.len())] {
        be16(&mut t, platform);
        be16(&mut t, encoding);
        be32(&mut t, u32::try_from(offset).expect("small"));
    }
    t.extend_from_slice(&f4);
    t.extend_from_slice(&f12);
    t
}

fn checksum(data: &[u8]) -> u32 {
    data.chunks(4).fold(0_u32, |sum, c| {
        let mut w = [0_u8; 4];
        w[..c.len()].copy_from_slice(c);
        sum.wrapping_add(u32::from_be_bytes(w))
    })
}

/// The sfnt `font` with table `tag` added (or replaced), the directory sorted, every table
/// 4-byte aligned and checksummed, and `head.checkSumAdjustment` set.
fn with_table(font: &[u8], tag: [u8; 4], table: &[u8]) -> Option<Vec<u8>> {
    let version = font.get(0..4)?;
    let n = usize::from(u16::from_be_bytes(font.get(4..6)?.try_into().ok()?));
    let mut tables: BTreeMap<[u8; 4], Vec<u8>> = BTreeMap::new();
    for i in 0..n {
        let rec = font.get(12 + 16 * i..28 + 16 * i)?;
        let t: [u8; 4] = rec[0..4].try_into().ok()?;
        let offset = usize::try_from(u32::from_be_bytes(rec[8..12].try_into().ok()?)).ok()?;
        let len = usize::try_from(u32::from_be_bytes(rec[12..16].try_into().ok()?)).ok()?;
        tables.insert(t, font.get(offset..offset.checked_add(len)?)?.to_vec());
    }
    tables.insert(tag, table.to_vec());
    if let Some(head) = tables.get_mut(b"head") {
        head.get_mut(8..12)?.copy_from_slice(&[0; 4]);
    }
    let count = u16::try_from(tables.len()).ok()?;
    let floor = 1_u16 << (15 - count.leading_zeros());
    let mut out = Vec::new();
    out.extend_from_slice(version);
    be16(&mut out, count);
    be16(&mut out, floor * 16);
    be16(&mut out, u16::try_from(floor.trailing_zeros()).ok()?);
    be16(&mut out, count * 16 - floor * 16);
    let mut offset = 12 + 16 * tables.len();
    let mut head_at = None;
    for (t, data) in &tables {
        if t == b"head" {
            head_at = Some(offset);
        }
        out.extend_from_slice(t);
        be32(&mut out, checksum(data));
        be32(&mut out, u32::try_from(offset).ok()?);
        be32(&mut out, u32::try_from(data.len()).ok()?);
        offset += data.len().next_multiple_of(4);
    }
    for data in tables.values() {
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    }
    if let Some(at) = head_at {
        let adjustment = 0xB1B0_AFBA_u32.wrapping_sub(checksum(&out));
        out.get_mut(at + 8..at + 12)?
            .copy_from_slice(&adjustment.to_be_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use skrifa::MetadataProvider as _;

    /// The subset maps each character to a glyph of the same advance as in the full face,
    /// through the `cmap` put back (read by skrifa, an independent reader of it).
    #[test]
    fn the_subset_maps_its_characters() {
        let full = skrifa::FontRef::new(crate::BUNDLED_FONT).unwrap();
        let text = "电子发票（普通发票）ABC¥0123";
        let chars: std::collections::BTreeMap<char, u16> = text
            .chars()
            .map(|c| {
                let g = full.charmap().map(c).unwrap().to_u32();
                (c, u16::try_from(g).unwrap())
            })
            .collect();
        let sub = super::subset(crate::BUNDLED_FONT, 0, &chars).unwrap();
        assert!(sub.len() < 40_000, "{}", sub.len());
        let font = skrifa::FontRef::new(&sub).unwrap();
        let size = skrifa::instance::Size::new(1.0);
        let loc = skrifa::instance::LocationRef::default();
        for c in text.chars() {
            let g = font
                .charmap()
                .map(c)
                .unwrap_or_else(|| panic!("{c} unmapped"));
            let want = full.charmap().map(c).unwrap();
            assert_eq!(
                font.glyph_metrics(size, loc).advance_width(g),
                full.glyph_metrics(size, loc).advance_width(want),
                "{c}"
            );
        }
        assert!(font.charmap().map('X').is_none());
    }
}

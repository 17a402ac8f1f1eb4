//! The ZIP container of an OFD (GB/T 33190 §7.1): entries in a fixed order, deflated (or
//! stored when deflating does not pay), with one fixed timestamp — the same parts give the
//! same bytes. And the reading back the verifier needs: entries by name, each checked
//! against its CRC.

use std::io::{Read as _, Write as _};

/// DOS date and time of every entry: 2000-01-01 00:00 (ZIP has no time zone; the invoice's
/// own time is inside it).
const DOS_TIME: u16 = 0;
const DOS_DATE: u16 = (20 << 9) | (1 << 5) | 1;

/// Writes `entries` (name, bytes) as a ZIP archive, in the order given.
pub(crate) fn write(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let crc = crc32fast::hash(data);
        let deflated = {
            let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
            e.write_all(data).expect("writing to memory");
            e.finish().expect("writing to memory")
        };
        let (method, body): (u16, &[u8]) = if deflated.len() < data.len() {
            (8, &deflated)
        } else {
            (0, data)
        };
        let offset = u32::try_from(out.len()).expect("an OFD under 4 GiB");
        let name_len = u16::try_from(name.len()).expect("a short name");
        // What the local header and the central record both say, from "version needed"
        // (2.0) and the flags (UTF-8 names, bit 11) to the name's length.
        let common = |v: &mut Vec<u8>| {
            for half in [20_u16, 0x0800, method, DOS_TIME, DOS_DATE] {
                v.extend_from_slice(&half.to_le_bytes());
            }
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&u32::try_from(body.len()).expect("small").to_le_bytes());
            v.extend_from_slice(&u32::try_from(data.len()).expect("small").to_le_bytes());
            v.extend_from_slice(&name_len.to_le_bytes());
        };
        // Local header; no extra field.
        out.extend_from_slice(&0x0403_4b50_u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(&0_u16.to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(body);
        // Central directory record: made by version 2.0; no extra, comment, disk or attributes.
        central.extend_from_slice(&0x0201_4b50_u32.to_le_bytes());
        central.extend_from_slice(&20_u16.to_le_bytes());
        common(&mut central);
        central.extend_from_slice(&[0; 12]);
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let count = u16::try_from(entries.len()).expect("a few entries");
    let at = u32::try_from(out.len()).expect("an OFD under 4 GiB");
    let size = u32::try_from(central.len()).expect("small");
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50_u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(&0_u16.to_le_bytes());
    out
}

/// The largest part a reader inflates: an invoice's parts are kilobytes (its fonts tens of
/// them); a part declaring more is refused rather than inflated (a ZIP bomb).
const MAX_PART: usize = 16 << 20;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The entries of a ZIP archive, by the central directory, in its order: each inflated and
/// checked against its CRC-32. `None` for anything else (encrypted, ZIP64, multi-disk,
/// names twice, a CRC that does not match, a part over 16 MiB).
pub(crate) fn read(zip: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let end = (0..=zip.len().checked_sub(22)?)
        .rev()
        .find(|&i| u32_at(zip, i) == Some(0x0605_4b50))?;
    let count = usize::from(u16_at(zip, end + 10)?);
    let mut at = usize::try_from(u32_at(zip, end + 16)?).ok()?;
    let mut out: Vec<(String, Vec<u8>)> = Vec::with_capacity(count);
    for _ in 0..count {
        if u32_at(zip, at)? != 0x0201_4b50 || u16_at(zip, at + 8)? & 1 != 0 {
            return None;
        }
        let method = u16_at(zip, at + 10)?;
        let crc = u32_at(zip, at + 16)?;
        let compressed = usize::try_from(u32_at(zip, at + 20)?).ok()?;
        let size = usize::try_from(u32_at(zip, at + 24)?).ok()?;
        if size > MAX_PART {
            return None;
        }
        let name_len = usize::from(u16_at(zip, at + 28)?);
        let extra = usize::from(u16_at(zip, at + 30)?) + usize::from(u16_at(zip, at + 32)?);
        let local = usize::try_from(u32_at(zip, at + 42)?).ok()?;
        let name = std::str::from_utf8(zip.get(at + 46..at + 46 + name_len)?)
            .ok()?
            .to_owned();
        at += 46 + name_len + extra;
        if u32_at(zip, local)? != 0x0403_4b50 {
            return None;
        }
        let start = local
            + 30
            + usize::from(u16_at(zip, local + 26)?)
            + usize::from(u16_at(zip, local + 28)?);
        let body = zip.get(start..start.checked_add(compressed)?)?;
        let data = match method {
            0 => body.to_vec(),
            8 => {
                let mut data = Vec::with_capacity(size);
                flate2::read::DeflateDecoder::new(body)
                    .take(u64::try_from(size).ok()? + 1)
                    .read_to_end(&mut data)
                    .ok()?;
                data
            }
            _ => return None,
        };
        if data.len() != size
            || crc32fast::hash(&data) != crc
            || out.iter().any(|(n, _)| *n == name)
        {
            return None;
        }
        out.push((name, data));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn what_is_written_reads_back() {
        let entries = vec![
            ("OFD.xml".to_owned(), b"<ofd/>".repeat(50)),
            ("Doc_0/一.bin".to_owned(), (0..=255).collect::<Vec<u8>>()),
            ("empty".to_owned(), Vec::new()),
        ];
        let zip = super::write(&entries);
        assert_eq!(super::read(&zip).unwrap(), entries);
        assert_eq!(zip, super::write(&entries));
        let mut bad = zip.clone();
        let at = zip.windows(6).position(|w| w == b"Doc_0/").unwrap() + 40;
        bad[at] ^= 1;
        assert_eq!(super::read(&bad), None);
    }

    /// A part larger than a reader inflates is refused (a ZIP bomb: 16 MiB of zeros deflate
    /// to 16 KiB), one at the limit read.
    #[test]
    fn a_part_over_the_limit_is_refused() {
        let at_limit = super::write(&[("big".to_owned(), vec![0; super::MAX_PART])]);
        assert!(at_limit.len() < 100_000);
        assert!(super::read(&at_limit).is_some());
        let over = super::write(&[("big".to_owned(), vec![0; super::MAX_PART + 1])]);
        assert_eq!(super::read(&over), None);
    }
}

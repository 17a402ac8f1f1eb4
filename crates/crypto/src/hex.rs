//! Hex text to bytes: certificate serials, master keys, published test vectors.

use zeroize::Zeroizing;

/// The bytes that hex text spells, ignoring whitespace; `None` for an odd number of digits or
/// anything that is not a hex digit. The bytes are zeroized on drop (a master key is one), and
/// so is a partial result on failure.
#[must_use]
pub fn decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(text.len() / 2));
    let mut high = None;
    for c in text.chars().filter(|c| !c.is_whitespace()) {
        let digit = u8::try_from(c.to_digit(16)?).ok()?;
        match high.take() {
            None => high = Some(digit),
            Some(h) => bytes.push((h << 4) | digit),
        }
    }
    high.is_none().then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_hex_and_refuses_the_rest() {
        assert_eq!(
            decode("00ff 7A\n10").unwrap().as_slice(),
            [0x00, 0xff, 0x7a, 0x10]
        );
        assert_eq!(decode("").unwrap().as_slice(), [] as [u8; 0]);
        assert!(decode("abc").is_none());
        assert!(decode("0g").is_none());
        assert!(decode("+1").is_none());
        assert!(decode("é1").is_none());
    }
}

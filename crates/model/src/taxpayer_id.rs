//! Who a party is: [`TaxpayerId`] (统一社会信用代码/纳税人识别号) and, for natural-person
//! buyers, [`PersonalIdNumber`] (公民身份号码).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The 31 characters of GB 32100-2015 (digits and capitals without I, O, S, V, Z), in the
/// order of their values 0–30.
pub const USCC_ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";

/// GB 32100-2015 §5 weights for positions 1–17 (3^(i-1) mod 31).
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// A taxpayer identifier: the 18-character unified social credit code (统一社会信用代码,
/// GB 32100-2015, check character verified) or a legacy taxpayer identification number of 15,
/// 17 or 20 characters (accepted as such, only its character set checked).
///
/// Input is trimmed and upper-cased before checking; the stored form is canonical.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TaxpayerId {
    value: String,
}

/// What kind of identifier a [`TaxpayerId`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaxpayerIdKind {
    /// 18-character unified social credit code (统一社会信用代码).
    UnifiedSocialCreditCode,
    /// 15-, 17- or 20-character taxpayer identification number issued before the USCC.
    Legacy,
}

/// Why a taxpayer identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaxpayerIdError {
    /// Not 18 (USCC) nor 15, 17 or 20 (legacy) characters.
    #[error(
        "has {len} characters; a unified social credit code has 18 (legacy numbers 15, 17 or 20)"
    )]
    Length {
        /// Characters found.
        len: usize,
    },
    /// A character outside the allowed set at a 1-based position.
    #[error("character `{character}` at position {position} is not allowed{hint}")]
    Character {
        /// 1-based position.
        position: usize,
        /// The refused character.
        character: char,
        /// Extra explanation for the letters the standard leaves out.
        hint: &'static str,
    },
    /// Positions 3–8 of a USCC are the administrative division code and must be digits.
    #[error("positions 3-8 must be the 6-digit administrative division code")]
    DivisionCode,
    /// The 18th character does not match GB 32100's check character.
    #[error("check character is `{found}` but GB 32100 gives `{expected}`")]
    CheckCharacter {
        /// The check character computed from positions 1–17.
        expected: char,
        /// The 18th character given.
        found: char,
    },
}

impl TaxpayerId {
    /// Parses and checks a taxpayer identifier.
    ///
    /// # Errors
    /// [`TaxpayerIdError`] naming the first rule the text breaks.
    pub fn parse(text: &str) -> Result<Self, TaxpayerIdError> {
        let value = text.trim().to_ascii_uppercase();
        let chars: Vec<char> = value.chars().collect();
        match chars.len() {
            18 => check_uscc(&chars)?,
            15 | 17 | 20 => {
                if let Some((i, &c)) = chars
                    .iter()
                    .enumerate()
                    .find(|(_, c)| !c.is_ascii_alphanumeric())
                {
                    return Err(TaxpayerIdError::Character {
                        position: i + 1,
                        character: c,
                        hint: "",
                    });
                }
            }
            len => return Err(TaxpayerIdError::Length { len }),
        }
        Ok(Self { value })
    }

    /// The kind of identifier.
    #[must_use]
    pub fn kind(&self) -> TaxpayerIdKind {
        if self.value.len() == 18 {
            TaxpayerIdKind::UnifiedSocialCreditCode
        } else {
            TaxpayerIdKind::Legacy
        }
    }

    /// The identifier text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

/// Computes the GB 32100-2015 check character for the first 17 characters of a USCC.
///
/// Returns `None` if `first17` is not 17 characters of [`USCC_ALPHABET`].
#[must_use]
pub fn uscc_check_character(first17: &str) -> Option<char> {
    let mut sum = 0_u32;
    let mut count = 0;
    for (c, w) in first17.chars().zip(USCC_WEIGHTS) {
        sum += uscc_value(c)? * w;
        count += 1;
    }
    if count != 17 || first17.chars().count() != 17 {
        return None;
    }
    let check = (31 - sum % 31) % 31;
    USCC_ALPHABET.chars().nth(check as usize)
}

fn uscc_value(c: char) -> Option<u32> {
    USCC_ALPHABET
        .chars()
        .position(|a| a == c)
        .and_then(|p| u32::try_from(p).ok())
}

fn check_uscc(chars: &[char]) -> Result<(), TaxpayerIdError> {
    for (i, &c) in chars.iter().enumerate() {
        if uscc_value(c).is_none() {
            let hint = if matches!(c, 'I' | 'O' | 'S' | 'V' | 'Z') {
                " (GB 32100 leaves out I, O, S, V and Z)"
            } else {
                ""
            };
            return Err(TaxpayerIdError::Character {
                position: i + 1,
                character: c,
                hint,
            });
        }
    }
    if !chars[2..8].iter().all(char::is_ascii_digit) {
        return Err(TaxpayerIdError::DivisionCode);
    }
    let first17: String = chars[..17].iter().collect();
    let expected = uscc_check_character(&first17).expect("all 17 characters were just checked");
    if chars[17] != expected {
        return Err(TaxpayerIdError::CheckCharacter {
            expected,
            found: chars[17],
        });
    }
    Ok(())
}

impl fmt::Display for TaxpayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl AsRef<str> for TaxpayerId {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl FromStr for TaxpayerId {
    type Err = TaxpayerIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TaxpayerId {
    type Error = TaxpayerIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TaxpayerId> for String {
    fn from(t: TaxpayerId) -> Self {
        t.value
    }
}

/// A citizen identity number (公民身份号码, GB 11643-1999): 17 digits and an ISO 7064
/// MOD 11-2 check character (digit or `X`). Used for natural-person buyers; personal data, so
/// it is masked wherever it is shown (see [`PersonalIdNumber::masked`]).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PersonalIdNumber {
    value: String,
}

/// Why a citizen identity number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersonalIdNumberError {
    /// Not 17 digits followed by a digit or `X`.
    #[error("must be 17 digits followed by a digit or X")]
    Format,
    /// The check character does not match GB 11643.
    #[error("check character does not match GB 11643")]
    CheckCharacter,
}

impl PersonalIdNumber {
    /// Parses and checks a citizen identity number.
    ///
    /// # Errors
    /// [`PersonalIdNumberError`] when the format or check character is wrong.
    pub fn parse(text: &str) -> Result<Self, PersonalIdNumberError> {
        const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
        const CHECK: &[u8; 11] = b"10X98765432";
        let value = text.trim().to_ascii_uppercase();
        let bytes = value.as_bytes();
        if bytes.len() != 18
            || !bytes[..17].iter().all(u8::is_ascii_digit)
            || !(bytes[17].is_ascii_digit() || bytes[17] == b'X')
        {
            return Err(PersonalIdNumberError::Format);
        }
        let sum: u32 = bytes[..17]
            .iter()
            .zip(WEIGHTS)
            .map(|(b, w)| u32::from(b - b'0') * w)
            .sum();
        if CHECK[(sum % 11) as usize] != bytes[17] {
            return Err(PersonalIdNumberError::CheckCharacter);
        }
        Ok(Self { value })
    }

    /// The full number. Treat as personal data: never log it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The number with the birth date and sequence hidden: `110105********123X`.
    #[must_use]
    pub fn masked(&self) -> String {
        format!("{}********{}", &self.value[..6], &self.value[14..])
    }
}

impl fmt::Debug for PersonalIdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PersonalIdNumber({})", self.masked())
    }
}

impl TryFrom<String> for PersonalIdNumber {
    type Error = PersonalIdNumberError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<PersonalIdNumber> for String {
    fn from(p: PersonalIdNumber) -> Self {
        p.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_uscc_is_accepted_and_canonicalised() {
        let id = TaxpayerId::parse(" 91110000600037341l ").unwrap();
        assert_eq!(id.as_str(), "91110000600037341L");
        assert_eq!(id.kind(), TaxpayerIdKind::UnifiedSocialCreditCode);
    }

    #[test]
    fn a_wrong_check_character_is_refused_with_the_expected_one() {
        assert_eq!(
            TaxpayerId::parse("91110000600037341N"),
            Err(TaxpayerIdError::CheckCharacter {
                expected: 'L',
                found: 'N'
            })
        );
    }

    #[test]
    fn letters_left_out_by_the_standard_are_refused() {
        let err = TaxpayerId::parse("9111000060003IOZSV").unwrap_err();
        assert!(matches!(
            err,
            TaxpayerIdError::Character {
                position: 14,
                character: 'I',
                ..
            }
        ));
        assert!(err.to_string().contains("leaves out I, O, S, V and Z"));
    }

    #[test]
    fn division_code_must_be_digits() {
        assert_eq!(
            TaxpayerId::parse("91A10000600037341L"),
            Err(TaxpayerIdError::DivisionCode)
        );
    }

    #[test]
    fn legacy_numbers_are_typed_as_legacy() {
        for legacy in [
            "110108600037341",
            "11010819800101001",
            "11010819800101001X01",
        ] {
            let id = TaxpayerId::parse(legacy).unwrap();
            assert_eq!(id.kind(), TaxpayerIdKind::Legacy, "{legacy}");
        }
        assert!(matches!(
            TaxpayerId::parse("1101086000-7341"),
            Err(TaxpayerIdError::Character { position: 11, .. })
        ));
        assert_eq!(
            TaxpayerId::parse("1234"),
            Err(TaxpayerIdError::Length { len: 4 })
        );
    }

    #[test]
    fn personal_id_numbers_check_gb_11643() {
        // GB 11643-1999 annex example: 11010519491231002X
        let id = PersonalIdNumber::parse("11010519491231002x").unwrap();
        assert_eq!(id.masked(), "110105********002X");
        assert!(!format!("{id:?}").contains("19491231"));
        assert_eq!(
            PersonalIdNumber::parse("110105194912310021"),
            Err(PersonalIdNumberError::CheckCharacter)
        );
        assert_eq!(
            PersonalIdNumber::parse("1101051949123100"),
            Err(PersonalIdNumberError::Format)
        );
    }
}

//! Masking of personal data for logs, error messages and list views (the full values stay in
//! the signed invoice, sealed at rest, and go only to their owner).
//!
//! - phone `13812341234` → `138****1234`; short numbers keep their last 4 only;
//! - bank account → `****0004` (the last 4);
//! - e-mail `wangxm@mail.example` → `w*****@mail.example`;
//! - person's name `王小明` → `王**`;
//! - citizen identity number → `310115********1239` ([`crate::PersonalIdNumber::masked`]);
//! - address → its first 6 characters and `****`.

use crate::invoice::{Buyer, BuyerKind};

fn stars(n: usize) -> String {
    "*".repeat(n)
}

/// `138****1234`.
#[must_use]
pub fn phone(p: &str) -> String {
    let chars: Vec<char> = p.chars().collect();
    if chars.len() >= 11 {
        let head: String = chars[..3].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}{}{tail}", stars(chars.len() - 7))
    } else {
        last4(&chars)
    }
}

fn last4(chars: &[char]) -> String {
    let keep = chars.len().min(4).min(chars.len().saturating_sub(2));
    let tail: String = chars[chars.len() - keep..].iter().collect();
    format!("{}{tail}", stars(chars.len() - keep))
}

/// `****0004`: the last 4 digits.
#[must_use]
pub fn bank_account(a: &str) -> String {
    let chars: Vec<char> = a.chars().filter(|c| !c.is_whitespace()).collect();
    last4(&chars)
}

/// `w*****@mail.example`.
#[must_use]
pub fn email(e: &str) -> String {
    match e.split_once('@') {
        Some((local, domain)) => {
            let mut c = local.chars();
            let first = c.next().map(String::from).unwrap_or_default();
            format!("{first}{}@{domain}", stars(c.count()))
        }
        None => stars(e.chars().count()),
    }
}

/// `王**`: a person's name keeps its first character.
#[must_use]
pub fn person_name(n: &str) -> String {
    let mut c = n.chars();
    let first = c.next().map(String::from).unwrap_or_default();
    format!("{first}{}", stars(c.count()))
}

/// The first 6 characters of an address, then `****`.
#[must_use]
pub fn address(a: &str) -> String {
    let head: String = a.chars().take(6).collect();
    format!("{head}****")
}

/// The buyer's name as a list may show it: an organisation's in full, a person's masked.
#[must_use]
pub fn buyer_name(b: &Buyer) -> String {
    match b.kind {
        BuyerKind::Organization => b.name.clone(),
        BuyerKind::NaturalPerson => person_name(&b.name),
    }
}

/// The buyer's identifier as a list may show it: an organisation's taxpayer id in full, a
/// person's identity number masked.
#[must_use]
pub fn buyer_id(b: &Buyer) -> Option<String> {
    b.taxpayer_id
        .as_ref()
        .map(|t| t.as_str().to_owned())
        .or_else(|| b.id_number.as_ref().map(crate::PersonalIdNumber::masked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_as_documented() {
        assert_eq!(phone("13812341234"), "138****1234");
        assert_eq!(phone("0571-88000004"), "057******0004");
        assert_eq!(phone("88000004"), "****0004");
        assert_eq!(phone("123"), "**3");
        assert_eq!(
            bank_account("1202 0000 0000 0000 004"),
            "***************0004"
        );
        assert_eq!(bank_account("12"), "**");
        assert_eq!(email("wangxm@mail.example"), "w*****@mail.example");
        assert_eq!(email("nope"), "****");
        assert_eq!(person_name("王小明"), "王**");
        assert_eq!(address("杭州市西湖区文三路 90 号"), "杭州市西湖区****");
    }
}

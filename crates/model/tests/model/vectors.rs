//! Published vectors: real USCCs and the PBoC upper-case examples.

use fapiao_model::{
    Amount, TaxpayerId, TaxpayerIdError, TaxpayerIdKind, USCC_ALPHABET, parse_chinese_upper,
    to_chinese_upper,
};

use crate::helpers::data_lines;

#[test]
fn every_published_real_uscc_is_accepted() {
    let codes = data_lines("uscc-valid.txt");
    assert!(codes.len() >= 50);
    for code in &codes {
        let id = TaxpayerId::parse(code).unwrap_or_else(|e| panic!("{code}: {e}"));
        assert_eq!(id.kind(), TaxpayerIdKind::UnifiedSocialCreditCode);
    }
}

#[test]
fn every_published_uscc_with_another_check_character_is_refused() {
    for code in data_lines("uscc-valid.txt") {
        let (body, check) = code.split_at(17);
        for c in USCC_ALPHABET.chars().filter(|c| c.to_string() != check) {
            let forged = format!("{body}{c}");
            assert!(
                matches!(
                    TaxpayerId::parse(&forged),
                    Err(TaxpayerIdError::CheckCharacter { .. })
                ),
                "{forged} was accepted"
            );
        }
    }
}

#[test]
fn the_pboc_upper_case_examples_are_written_exactly() {
    let rows = data_lines("upper-case.tsv");
    assert!(rows.len() >= 10);
    for row in rows {
        let (amount, expected) = row.split_once('\t').unwrap();
        let amount = Amount::parse(amount).unwrap();
        assert_eq!(to_chinese_upper(amount), expected, "{amount}");
        assert_eq!(parse_chinese_upper(expected), Some(amount), "{expected}");
    }
}

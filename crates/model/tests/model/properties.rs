//! Property tests: the arithmetic and red rules hold for generated inputs, not only examples.

use fapiao_model::red::{
    Confirmation, Initiator, PartialReversal, RedError, RedLetterForm, RedLetterFormNumber,
    RedReason, RedScope, check_red, plan_red, remaining,
};
use fapiao_model::{
    Amount, Invoice, InvoiceDraft, TaxRate, TaxpayerId, TaxpayerIdError, USCC_ALPHABET,
    parse_chinese_upper, to_chinese_upper, uscc_check_character,
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::json;

use crate::helpers::{issue, validate_json};

fn fen(n: i64) -> Amount {
    Amount::parse(&Decimal::new(n, 2).to_string()).unwrap()
}

fn rate() -> impl Strategy<Value = TaxRate> {
    prop::sample::select(TaxRate::ALL.to_vec())
}

/// The rates a code of the official table allows (0 % and 0.5 % none does).
fn line_rate() -> impl Strategy<Value = TaxRate> {
    prop::sample::select(
        TaxRate::ALL
            .into_iter()
            .filter(|r| !matches!(r, TaxRate::Zero | TaxRate::HalfPercent))
            .collect::<Vec<_>>(),
    )
}

prop_compose! {
    /// One line of an order: quantity 1–1000, unit price 0.01–99 999.99, a rate, one of two codes.
    fn line()(qty in 1_u32..1000, price_fen in 1_i64..10_000_000, rate in line_rate(), code in 0_usize..2) -> serde_json::Value {
        let price = Decimal::new(price_fen, 2);
        let amount = (Decimal::from(qty) * price).round_dp(2);
        // A code of the official table that allows the rate (one of two where there are two).
        let code = match rate {
            TaxRate::Thirteen => ["1030206020000000000", "1030206010000000000"][code],
            TaxRate::Nine | TaxRate::Exempt => ["1010101010000000000", "1010101020000000000"][code],
            TaxRate::Five => ["3040502020102000000", "3040502020200000000"][code],
            TaxRate::NonTaxable => ["6010000000000000000", "6010000000000000000"][code],
            _ => ["3040201010000000000", "3040201030000000000"][code],
        };
        json!({ "name": "商品", "tax_code": code, "quantity": qty.to_string(), "unit_price": price.to_string(),
                "amount": amount.to_string(), "tax_rate": rate.code() })
    }
}

fn order(lines: Vec<serde_json::Value>, inclusive: bool) -> String {
    json!({
        "order_id": "P-1", "invoice_type": "ordinary",
        "price_mode": if inclusive { "tax_inclusive" } else { "tax_exclusive" },
        "seller": { "taxpayer_id": "91310115MA1FP0001X", "name": "卖方" },
        "buyer": { "taxpayer_id": "91110108MA01XY002C", "name": "买方" },
        "items": lines,
    })
    .to_string()
}

fn blue_from(lines: Vec<serde_json::Value>, inclusive: bool) -> Invoice {
    issue(validate_json(&order(lines, inclusive)).unwrap(), 1)
}

fn form(blue: &Invoice, scope: RedScope) -> RedLetterForm {
    let number = RedLetterFormNumber::parse("31011526112000123456").unwrap();
    let f = RedLetterForm::open(
        number,
        blue.number().clone(),
        RedReason::SalesReturn,
        Initiator::Seller,
        Confirmation::Required,
        scope,
    );
    f.unwrap().confirm().unwrap()
}

fn sum_lines(d: &InvoiceDraft) -> (Amount, Amount) {
    (
        d.lines().iter().map(|l| l.amount()).sum(),
        d.lines().iter().map(|l| l.tax()).sum(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn upper_case_reads_back_to_the_same_amount(n in -999_999_999_999_999_i64..=999_999_999_999_999) {
        let a = fen(n);
        prop_assert_eq!(parse_chinese_upper(&to_chinese_upper(a)), Some(a));
    }

    #[test]
    fn inclusive_splits_never_lose_a_fen(n in 1_i64..100_000_000_000, r in rate()) {
        let inclusive = fen(n);
        let (excl, tax) = r.split_inclusive(inclusive);
        prop_assert_eq!(excl + tax, inclusive);
        // The tax differs from round(excl × r) by at most a fen.
        let direct = r.tax_on_exclusive(excl);
        prop_assert!((tax - direct).abs() <= fen(1), "{} vs {}", tax, direct);
    }

    #[test]
    fn lines_sum_to_totals(lines in prop::collection::vec(line(), 1..20), inclusive in any::<bool>()) {
        let d = validate_json(&order(lines.clone(), inclusive)).unwrap();
        let (amount, tax) = sum_lines(&d);
        let t = d.totals();
        prop_assert_eq!((t.amount, t.tax, t.total), (amount, tax, amount + tax));
        if inclusive {
            // The invoice total equals what the ERP charged, to the fen.
            let charged: Amount = lines.iter().map(|l| Amount::parse(l["amount"].as_str().unwrap()).unwrap()).sum();
            prop_assert_eq!(t.total, charged);
        }
        prop_assert_eq!(parse_chinese_upper(d.total_in_words()), Some(t.total));
    }

    #[test]
    fn reds_never_exceed_the_blue(
        lines in prop::collection::vec(line(), 1..6),
        requests in prop::collection::vec((0_usize..6, 1_i64..2_000_000), 0..12),
    ) {
        let blue = blue_from(lines, false);
        let count = blue.draft().lines().len();
        let mut reds: Vec<Invoice> = Vec::new();
        for (i, (line, amount)) in requests.into_iter().enumerate() {
            let parts = vec![PartialReversal { line: u32::try_from(line % count + 1).unwrap(), amount: Some(fen(amount)), quantity: None }];
            match plan_red(&blue, &reds, &form(&blue, RedScope::Partial(parts)), None, None) {
                Ok(red) => {
                    prop_assert!(check_red(&red, &blue, &reds).is_ok());
                    prop_assert!(red.lines().iter().all(|l| l.amount().is_negative()));
                    reds.push(issue(red, 2 + i as u64));
                }
                Err(RedError::ExceedsRemaining { .. } | RedError::FullyReversed { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
            for b in remaining(&blue, &reds).unwrap() {
                prop_assert!(!b.amount.is_negative() && !b.tax.is_negative(), "{b:?}");
            }
        }
        // A full red takes exactly the rest; afterwards nothing is left and nothing more is allowed.
        let left: Amount = remaining(&blue, &reds).unwrap().iter().map(|b| b.amount + b.tax).sum();
        if left.is_zero() {
            return Ok(());
        }
        let last = plan_red(&blue, &reds, &form(&blue, RedScope::Full), None, None).unwrap();
        prop_assert_eq!(last.totals().total, -left);
        reds.push(issue(last, 99));
        let total_red: Amount = reds.iter().map(|r| r.draft().totals().total).sum();
        prop_assert_eq!(total_red, -blue.draft().totals().total);
        let again = plan_red(&blue, &reds, &form(&blue, RedScope::Full), None, None);
        let refused = matches!(again, Err(RedError::FullyReversed { .. }));
        prop_assert!(refused);
    }

    #[test]
    fn a_uscc_with_its_check_character_replaced_is_rejected(
        head in prop::collection::vec(prop::sample::select(USCC_ALPHABET.chars().collect::<Vec<_>>()), 2),
        division in 0_u32..1_000_000,
        tail in prop::collection::vec(prop::sample::select(USCC_ALPHABET.chars().collect::<Vec<_>>()), 9),
        replacement in prop::sample::select(USCC_ALPHABET.chars().collect::<Vec<_>>()),
    ) {
        let body: String = head.iter().collect::<String>() + &format!("{division:06}") + &tail.iter().collect::<String>();
        let check = uscc_check_character(&body).unwrap();
        let genuine = format!("{body}{check}");
        prop_assert!(TaxpayerId::parse(&genuine).is_ok());
        if replacement != check {
            let forged = format!("{body}{replacement}");
            let rejected = matches!(TaxpayerId::parse(&forged), Err(TaxpayerIdError::CheckCharacter { .. }));
            prop_assert!(rejected, "{} accepted", forged);
        }
    }
}

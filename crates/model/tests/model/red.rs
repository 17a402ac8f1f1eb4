//! Red invoices against blue ones: full, partial by amount and by quantity, discounts, the
//! form workflow, and the checks that catch a red that breaks the rules.

use fapiao_model::red::{
    Confirmation, Initiator, PartialReversal, RedError, RedLetterForm, RedLetterFormNumber,
    RedLetterFormStatus, RedReason, RedScope, check_red, plan_red, remaining,
};
use fapiao_model::{Amount, Invoice, InvoiceKind, InvoiceNumber, Quantity};

use crate::helpers::{draft, issue};

fn amount(s: &str) -> Amount {
    Amount::parse(s).unwrap()
}

fn form(
    blue: &InvoiceNumber,
    reason: RedReason,
    confirmation: Confirmation,
    scope: RedScope,
) -> RedLetterForm {
    let f = RedLetterForm::open(
        RedLetterFormNumber::parse("31011526112000123456").unwrap(),
        blue.clone(),
        reason,
        Initiator::Seller,
        confirmation,
        scope,
    )
    .unwrap();
    if confirmation == Confirmation::Required {
        f.confirm().unwrap()
    } else {
        f
    }
}

fn full(blue: &Invoice) -> RedLetterForm {
    form(
        blue.number(),
        RedReason::IssuingError,
        Confirmation::NotRequired,
        RedScope::Full,
    )
}

fn partial(blue: &Invoice, parts: Vec<PartialReversal>) -> RedLetterForm {
    form(
        blue.number(),
        RedReason::SalesReturn,
        Confirmation::Required,
        RedScope::Partial(parts),
    )
}

fn by_amount(line: u32, a: &str) -> PartialReversal {
    PartialReversal {
        line,
        amount: Some(amount(a)),
        quantity: None,
    }
}

fn by_quantity(line: u32, q: &str) -> PartialReversal {
    PartialReversal {
        line,
        amount: None,
        quantity: Some(Quantity::parse(q).unwrap()),
    }
}

/// A red's 开票人 is the one the request names, else the blue invoice's (a red without one
/// printed an empty 开票人).
#[test]
fn a_red_has_the_drawer_it_names_or_the_blue_ones() {
    let blue = issue(draft("basic.json"), 1);
    assert_eq!(blue.draft().drawer(), Some("李静"));
    let red = plan_red(&blue, &[], &full(&blue), None, None).unwrap();
    assert_eq!(red.drawer(), Some("李静"));
    let red = plan_red(&blue, &[], &full(&blue), None, Some("王芳".into())).unwrap();
    assert_eq!(red.drawer(), Some("王芳"));
    // What an order's drawer may not be, a red's may not either.
    for bad in [
        "王".repeat(31),
        "王\u{202E}芳".to_owned(),
        "王\n芳".to_owned(),
    ] {
        assert!(matches!(
            plan_red(&blue, &[], &full(&blue), None, Some(bad)),
            Err(RedError::Drawer(_))
        ));
    }
}

#[test]
fn a_full_red_negates_everything_and_carries_the_official_remark() {
    let blue = issue(draft("basic.json"), 1);
    let red = plan_red(&blue, &[], &full(&blue), None, Some("李静".into())).unwrap();
    assert_eq!(red.totals().total, amount("-16960.00"));
    assert_eq!(red.total_in_words(), "（负数）壹万陆仟玖佰陆拾圆整");
    assert_eq!(red.lines()[1].quantity().unwrap().to_string(), "-12");
    assert_eq!(red.lines()[1].unit_price().unwrap().to_string(), "500");
    assert_eq!(
        red.remarks().unwrap(),
        "被红冲蓝字数电发票号码：26312000000000000001 红字发票信息确认单编号：31011526112000123456"
    );
    assert!(matches!(red.kind(), InvoiceKind::Red(r) if r.blue_number == *blue.number()));
    assert_eq!(red.seller(), blue.draft().seller());
    check_red(&red, &blue, &[]).unwrap();

    let red = issue(red, 2);
    assert!(
        remaining(&blue, std::slice::from_ref(&red))
            .unwrap()
            .iter()
            .all(|b| b.amount.is_zero() && b.tax.is_zero())
    );
    assert!(matches!(
        plan_red(&blue, &[red], &full(&blue), None, None),
        Err(RedError::FullyReversed { .. })
    ));
}

#[test]
fn a_red_of_a_red_is_refused() {
    let blue = issue(draft("basic.json"), 1);
    let red = issue(plan_red(&blue, &[], &full(&blue), None, None).unwrap(), 2);
    assert!(matches!(
        plan_red(&red, &[], &full(&red), None, None),
        Err(RedError::RedOfRed { .. })
    ));
}

#[test]
fn issuing_error_and_unconfirmed_forms_allow_full_reds_only() {
    let blue = issue(draft("basic.json"), 1);
    let number = RedLetterFormNumber::parse("31011526112000123456").unwrap();
    let scope = RedScope::Partial(vec![by_amount(1, "1.00")]);
    for (reason, confirmation) in [
        (RedReason::IssuingError, Confirmation::Required),
        (RedReason::SalesReturn, Confirmation::NotRequired),
    ] {
        let r = RedLetterForm::open(
            number.clone(),
            blue.number().clone(),
            reason,
            Initiator::Seller,
            confirmation,
            scope.clone(),
        );
        assert!(
            matches!(r, Err(RedError::PartialNotAllowed { .. })),
            "{reason:?} {confirmation:?}"
        );
    }
}

#[test]
fn partial_reds_by_amount_accumulate_and_never_exceed_the_line() {
    let blue = issue(draft("basic.json"), 1);
    let first = plan_red(
        &blue,
        &[],
        &partial(&blue, vec![by_amount(1, "4000")]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        (first.totals().amount, first.totals().tax),
        (amount("-4000.00"), amount("-240.00"))
    );
    check_red(&first, &blue, &[]).unwrap();
    let first = issue(first, 2);
    let reds = [first];

    let left = remaining(&blue, &reds).unwrap();
    assert_eq!(
        (left[0].amount, left[0].tax, left[0].untouched),
        (amount("6000.00"), amount("360.00"), false)
    );

    let over = plan_red(
        &blue,
        &reds,
        &partial(&blue, vec![by_amount(1, "6000.01")]),
        None,
        None,
    );
    assert!(
        matches!(over, Err(RedError::ExceedsRemaining { line: 1, .. })),
        "{over:?}"
    );

    // The rest, by full red: line 1's remainder and line 2 mirrored with its quantity.
    let rest = plan_red(&blue, &reds, &full(&blue), None, None).unwrap();
    assert_eq!(rest.totals().total, amount("-12720.00"));
    assert_eq!(rest.lines()[0].quantity(), None);
    check_red(&rest, &blue, &reds).unwrap();
}

#[test]
fn partial_reds_by_quantity_use_the_blue_unit_price() {
    let blue = issue(draft("basic.json"), 1);
    let red = plan_red(
        &blue,
        &[],
        &partial(&blue, vec![by_quantity(2, "3")]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        (red.totals().amount, red.totals().tax),
        (amount("-1500.00"), amount("-90.00"))
    );
    let reds = [issue(red, 2)];
    assert_eq!(
        remaining(&blue, &reds).unwrap()[1]
            .quantity
            .unwrap()
            .to_string(),
        "9"
    );
    let over = plan_red(
        &blue,
        &reds,
        &partial(&blue, vec![by_quantity(2, "10")]),
        None,
        None,
    );
    assert!(
        matches!(over, Err(RedError::ExceedsRemaining { line: 2, .. })),
        "{over:?}"
    );
    // The last 9 take exactly what remains, with no rounding left over.
    let last = plan_red(
        &blue,
        &reds,
        &partial(&blue, vec![by_quantity(2, "9")]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(last.totals().amount, amount("-4500.00"));
}

#[test]
fn malformed_partial_requests_are_refused() {
    let blue = issue(draft("discount.json"), 1);
    let cases = [
        (vec![], "NoLines"),
        (vec![by_amount(2, "1")], "DiscountLine"),
        (vec![by_amount(9, "1")], "UnknownLine"),
        (vec![by_amount(1, "1"), by_amount(1, "1")], "DuplicateLine"),
        (
            vec![PartialReversal {
                line: 1,
                amount: None,
                quantity: None,
            }],
            "AmountOrQuantity",
        ),
        (vec![by_amount(1, "0")], "NotPositive"),
    ];
    for (parts, expected) in cases {
        let err = plan_red(&blue, &[], &partial(&blue, parts), None, None).unwrap_err();
        assert!(
            format!("{err:?}").starts_with(expected),
            "{expected}: {err:?}"
        );
    }
}

#[test]
fn a_discounted_line_is_reversed_net_of_its_discount() {
    let blue = issue(draft("discount.json"), 1);
    let red = plan_red(&blue, &[], &full(&blue), None, None).unwrap();
    assert_eq!(red.lines().len(), 2);
    assert_eq!(
        (red.lines()[0].amount(), red.lines()[0].tax()),
        (amount("-2250.00"), amount("-292.50"))
    );
    assert_eq!(red.lines()[0].quantity(), None);
    assert_eq!(red.lines()[1].quantity().unwrap().to_string(), "-40");
    assert_eq!(red.totals().total, -blue.draft().totals().total);
    let over = plan_red(
        &blue,
        &[],
        &partial(&blue, vec![by_amount(1, "2250.01")]),
        None,
        None,
    );
    assert!(matches!(over, Err(RedError::ExceedsRemaining { .. })));
}

#[test]
fn only_usable_forms_for_this_blue_are_accepted() {
    let blue = issue(draft("basic.json"), 1);
    let other = issue(draft("basic.json"), 9);
    let waiting = RedLetterForm::open(
        RedLetterFormNumber::parse("31011526112000123456").unwrap(),
        blue.number().clone(),
        RedReason::SalesAllowance,
        Initiator::Buyer,
        Confirmation::Required,
        RedScope::Full,
    )
    .unwrap();
    assert_eq!(waiting.status(), RedLetterFormStatus::AwaitingSeller);
    assert!(matches!(
        plan_red(&blue, &[], &waiting, None, None),
        Err(RedError::FormNotUsable { status: "03" })
    ));
    assert!(matches!(
        plan_red(&other, &[], &full(&blue), None, None),
        Err(RedError::FormForAnotherInvoice { .. })
    ));
    let confirmed = waiting.confirm().unwrap();
    assert!(plan_red(&blue, &[], &confirmed, None, None).is_ok());
    let withdrawn = confirmed.withdraw().unwrap();
    assert_eq!(
        withdrawn.status(),
        RedLetterFormStatus::WithdrawnAfterConfirmation
    );
    assert!(matches!(
        withdrawn.confirm(),
        Err(RedError::FormTransition { from: "09", .. })
    ));
    assert!(matches!(
        full(&blue).deny(),
        Err(RedError::FormTransition { from: "01", .. })
    ));
}

#[test]
fn check_red_catches_reds_planned_on_a_stale_history() {
    let blue = issue(draft("basic.json"), 1);
    let a = plan_red(
        &blue,
        &[],
        &partial(&blue, vec![by_amount(1, "4000")]),
        None,
        None,
    )
    .unwrap();
    // Planned concurrently, without seeing `a`.
    let b = plan_red(
        &blue,
        &[],
        &partial(&blue, vec![by_amount(1, "6000.01")]),
        None,
        None,
    )
    .unwrap();
    let a = issue(a, 2);
    assert!(matches!(
        check_red(&b, &blue, std::slice::from_ref(&a)),
        Err(RedError::ExceedsRemaining { line: 1, .. })
    ));

    // A reason-01 red planned before `a` no longer reverses everything once `a` exists: it is
    // too much; one planned after `a` but checked without it is too little.
    let stale_full = plan_red(&blue, &[], &full(&blue), None, None).unwrap();
    assert!(matches!(
        check_red(&stale_full, &blue, std::slice::from_ref(&a)),
        Err(RedError::ExceedsRemaining { .. })
    ));
    let after_a = plan_red(&blue, std::slice::from_ref(&a), &full(&blue), None, None).unwrap();
    assert!(matches!(
        check_red(&after_a, &blue, &[]),
        Err(RedError::NotFull)
    ));
}

#[test]
fn check_red_requires_a_red_of_this_blue_with_the_same_parties() {
    let blue = issue(draft("basic.json"), 1);
    assert!(matches!(
        check_red(blue.draft(), &blue, &[]),
        Err(RedError::NotRedAgainst { .. })
    ));
    let red = plan_red(&blue, &[], &full(&blue), None, None).unwrap();
    let impostor = issue(draft("special.json"), 1);
    assert!(matches!(
        check_red(&red, &impostor, &[]),
        Err(RedError::PartiesDiffer)
    ));
}

#[test]
fn invoices_round_trip_through_json_and_edits_are_caught() {
    let blue = issue(draft("discount.json"), 1);
    let red = issue(
        plan_red(&blue, &[], &full(&blue), None, Some("陈晓".into())).unwrap(),
        2,
    );
    for inv in [&blue, &red, &issue(draft("natural-person.json"), 3)] {
        let json = serde_json::to_string(inv).unwrap();
        assert_eq!(&Invoice::from_json(&json).unwrap(), inv);
    }
    let json = serde_json::to_string(&blue).unwrap();
    let edited = json.replacen("\"total\":\"4454.46\"", "\"total\":\"4454.47\"", 1);
    assert_ne!(edited, json);
    let err = Invoice::from_json(&edited).unwrap_err();
    assert!(
        err.has("totals.total", fapiao_model::FindingCode::TotalsMismatch),
        "{err}"
    );
    let edited = json.replacen("\"tax\":\"325.00\"", "\"tax\":\"335.00\"", 1);
    assert_ne!(edited, json);
    assert!(Invoice::from_json(&edited).is_err());
    assert!(Invoice::from_json("{}").is_err());
}

#[test]
fn a_seller_opens_forms_numbered_by_division_code_and_day() {
    let day = time::macros::date!(2026 - 11 - 24);
    let prefix = RedLetterFormNumber::day_prefix("91310115MA1FP0001X", day);
    assert_eq!(prefix, "310115261124");
    assert_eq!(
        RedLetterFormNumber::day_prefix("9131X115MA1FP0001X", day),
        "000000261124",
        "a division code that is not digits"
    );
    let n = RedLetterFormNumber::in_day(&prefix, 90_000_001).unwrap();
    assert_eq!(n.as_str(), "31011526112490000001");
    assert_eq!(
        RedLetterFormNumber::in_day(&prefix, 123_456_789),
        Err(RedError::FormNumber)
    );
    let blue = issue(draft("basic.json"), 1);
    let parts = vec![by_amount(1, "10.00")];
    let confirmed = RedLetterForm::open_by_seller(
        n.clone(),
        blue.number().clone(),
        RedReason::SalesReturn,
        RedScope::Partial(parts.clone()),
        true,
    )
    .unwrap();
    assert_eq!(confirmed.status(), RedLetterFormStatus::Confirmed);
    let unconfirmed = RedLetterForm::open_by_seller(
        n.clone(),
        blue.number().clone(),
        RedReason::IssuingError,
        RedScope::Full,
        false,
    )
    .unwrap();
    assert_eq!(
        unconfirmed.status(),
        RedLetterFormStatus::NoConfirmationNeeded
    );
    assert!(matches!(
        RedLetterForm::open_by_seller(
            n,
            blue.number().clone(),
            RedReason::SalesReturn,
            RedScope::Partial(parts),
            false,
        ),
        Err(RedError::PartialNotAllowed { .. })
    ));
}

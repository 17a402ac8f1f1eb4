//! The example orders and every validation rule, each shown failing with its code and path.

use fapiao_model::{
    Amount, BuyerKind, FindingCode, InvoiceType, LineKind, TaxRate, ValidationErrors,
};
use serde_json::{Value, json};

use crate::helpers::{draft, example, validate_json};

fn amount(s: &str) -> Amount {
    Amount::parse(s).unwrap()
}

fn totals(name: &str) -> (String, String, String, String) {
    let d = draft(name);
    let t = d.totals();
    (
        t.amount.to_string(),
        t.tax.to_string(),
        t.total.to_string(),
        d.total_in_words().to_owned(),
    )
}

#[test]
fn basic_order_computes_tax_per_line_and_totals() {
    let d = draft("basic.json");
    assert_eq!(d.invoice_type(), InvoiceType::Ordinary);
    assert_eq!(
        d.lines()[0].printed_name(),
        "*信息技术服务*订单管理系统定制开发"
    );
    // Amount omitted: 12 × 500.
    assert_eq!(d.lines()[1].amount(), amount("6000.00"));
    assert_eq!(d.lines()[1].tax(), amount("360.00"));
    assert_eq!(
        totals("basic.json"),
        (
            "16000.00".into(),
            "960.00".into(),
            "16960.00".into(),
            "壹万陆仟玖佰陆拾圆整".into()
        )
    );
}

#[test]
fn special_order_uses_the_catalog_default_rate() {
    let d = draft("special.json");
    assert_eq!(d.invoice_type(), InvoiceType::Special);
    assert_eq!(d.lines()[1].tax_rate(), TaxRate::Six);
    assert_eq!(
        totals("special.json"),
        (
            "13620.00".into(),
            "1560.60".into(),
            "15180.60".into(),
            "壹万伍仟壹佰捌拾圆零陆角".into()
        )
    );
}

#[test]
fn tax_inclusive_order_is_split_into_exclusive_amounts() {
    let d = draft("inclusive.json");
    // 1374 / 1.06 = 1296.2264… and 458 / 1.06 = 432.0754716981…
    assert_eq!(
        (d.lines()[0].amount(), d.lines()[0].tax()),
        (amount("1296.23"), amount("77.77"))
    );
    assert_eq!(
        d.lines()[0].unit_price().unwrap().to_string(),
        "432.0754717"
    );
    assert_eq!(
        (d.lines()[1].amount(), d.lines()[1].tax()),
        (amount("223.40"), amount("13.40"))
    );
    assert_eq!(totals("inclusive.json").2, "1610.80");
}

#[test]
fn discount_line_inherits_code_and_rate_and_reduces_totals() {
    let d = draft("discount.json");
    let discount = &d.lines()[1];
    assert_eq!(discount.kind(), LineKind::Discount);
    assert_eq!(discount.printed_name(), "*调味品*陈醋");
    assert_eq!(
        (discount.amount(), discount.tax()),
        (amount("-250.00"), amount("-32.50"))
    );
    assert_eq!(totals("discount.json").0, "3942.00");
    assert_eq!(totals("discount.json").1, "512.46");
}

#[test]
fn natural_person_buyer_and_non_taxable_line() {
    let d = draft("natural-person.json");
    assert_eq!(d.buyer().kind, BuyerKind::NaturalPerson);
    assert_eq!(
        d.buyer().id_number.as_ref().unwrap().masked(),
        "310115********1239"
    );
    assert_eq!(d.lines()[1].tax_rate(), TaxRate::NonTaxable);
    assert_eq!(d.lines()[1].tax(), Amount::ZERO);
    assert_eq!(totals("natural-person.json").2, "798.00");
}

#[test]
fn the_invalid_example_reports_every_finding_with_its_path() {
    let err = validate_json(&example("invalid.json")).unwrap_err();
    let expected = [
        ("seller.taxpayer_id", FindingCode::TaxpayerIdCheckCharacter),
        ("buyer.name", FindingCode::Required),
        ("buyer.address", FindingCode::RequiredForSpecialInvoice),
        ("buyer.phone", FindingCode::RequiredForSpecialInvoice),
        ("buyer.bank_name", FindingCode::RequiredForSpecialInvoice),
        ("buyer.bank_account", FindingCode::RequiredForSpecialInvoice),
        ("items[0].tax_rate", FindingCode::InvalidTaxRate),
        ("items[0].amount", FindingCode::QuantityPriceMismatch),
        ("items[1].amount", FindingCode::DiscountExceedsLine),
        ("items[2].colour", FindingCode::UnknownField),
        ("items[2].amount", FindingCode::DecimalMustBeString),
    ];
    for (path, code) in expected {
        assert!(err.has(path, code), "missing {path} {code:?} in {err}");
    }
    assert_eq!(err.findings().len(), expected.len(), "{err}");
}

/// A valid ordinary order to mutate.
fn base() -> Value {
    json!({
        "order_id": "T-1",
        "invoice_type": "ordinary",
        "price_mode": "tax_exclusive",
        "seller": { "taxpayer_id": "91310115MA1FP0001X", "name": "上海云帆信息科技有限公司" },
        "buyer": { "taxpayer_id": "91110108MA01XY002C", "name": "北京华章商贸有限公司" },
        "items": [
            { "name": "开发", "tax_code": "3040201010000000000", "quantity": "2", "unit_price": "50", "amount": "100.00" }
        ]
    })
}

fn errors(v: &Value) -> ValidationErrors {
    validate_json(&v.to_string()).unwrap_err()
}

#[test]
fn the_base_order_is_valid() {
    let d = validate_json(&base().to_string()).unwrap();
    assert_eq!(d.totals().total, amount("106.00"));
}

#[test]
fn stated_totals_that_disagree_are_rejected() {
    let mut v = base();
    v["totals"] = json!({ "amount": "100.00", "tax": "6.01", "total": "106.00" });
    let e = errors(&v);
    assert!(e.has("totals.tax", FindingCode::TotalsMismatch), "{e}");
    assert_eq!(e.findings().len(), 1);
}

#[test]
fn amounts_with_three_decimals_are_rejected() {
    let mut v = base();
    v["items"][0]["amount"] = json!("100.001");
    assert!(errors(&v).has("items[0].amount", FindingCode::TooManyDecimalPlaces));
}

#[test]
fn quantity_without_price_is_rejected() {
    let mut v = base();
    v["items"][0].as_object_mut().unwrap().remove("unit_price");
    assert!(errors(&v).has("items[0].unit_price", FindingCode::QuantityWithoutPrice));
}

#[test]
fn unknown_tax_code_is_a_finding() {
    let mut v = base();
    v["items"][0]["tax_code"] = json!("3999999990000000000");
    assert!(errors(&v).has("items[0].tax_code", FindingCode::UnknownTaxCode));
    v["items"][0]["tax_code"] = json!("30402010100");
    assert!(errors(&v).has("items[0].tax_code", FindingCode::InvalidTaxCode));
}

/// Codes of the official table across its six 篇 are accepted with the table's 简称 and rate.
#[test]
fn official_codes_of_every_part_print_their_short_name() {
    for (code, rate, printed) in [
        ("1010115010100000000", "9%", "*水果*苹果"),
        ("1030206020000000000", "13%", "*调味品*苹果"),
        ("2020000000000000000", "13%", "*劳务*苹果"),
        ("3040201010000000000", "6%", "*信息技术服务*苹果"),
        ("4010100000000000000", "6%", "*无形资产*苹果"),
        ("5010101000000000000", "9%", "*不动产*苹果"),
        ("6010000000000000000", "不征税", "*预付卡销售*苹果"),
    ] {
        let mut v = base();
        v["items"][0]["tax_code"] = json!(code);
        v["items"][0]["name"] = json!("苹果");
        let d = validate_json(&v.to_string()).unwrap_or_else(|e| panic!("{code}: {e:?}"));
        let line = &d.lines()[0];
        assert_eq!(line.tax_rate().to_string(), rate, "{code}");
        assert_eq!(line.printed_name(), printed, "{code}");
    }
}

/// A group code (汇总项), a rate the code does not allow and a code listing two rates without
/// one chosen are each a finding on the field; 免税 and the small-scale 征收率 where allowed.
#[test]
fn codes_must_be_leaves_and_rates_must_be_the_codes() {
    let mut v = base();
    v["items"][0]["tax_code"] = json!("1030206000000000000");
    let e = errors(&v);
    assert!(
        e.has("items[0].tax_code", FindingCode::GroupTaxCode),
        "{e:?}"
    );

    let mut v = base();
    v["items"][0]["tax_rate"] = json!("13%");
    let e = errors(&v);
    assert!(
        e.has("items[0].tax_rate", FindingCode::RateNotAllowed),
        "{e:?}"
    );

    let mut v = base();
    v["items"][0]["tax_code"] = json!("1010101010000000000");
    v["items"][0]["tax_rate"] = json!("6%");
    assert!(errors(&v).has("items[0].tax_rate", FindingCode::RateNotAllowed));
    for ok in ["9%", "免税", "3%", "1%"] {
        v["items"][0]["tax_rate"] = json!(ok);
        assert!(validate_json(&v.to_string()).is_ok(), "稻谷 at {ok}");
    }
    // 免税 is not for software.
    let mut v = base();
    v["items"][0]["tax_rate"] = json!("exempt");
    assert!(errors(&v).has("items[0].tax_rate", FindingCode::RateNotAllowed));
    // 拖拉机-like codes list 13% and 9%: the line must say which.
    let two = fapiao_model::TaxCatalog::builtin();
    let two = two
        .search("1", 5000)
        .into_iter()
        .find(|e| e.rates.iter().filter(|r| r.is_percent()).count() == 2 && !e.group)
        .unwrap()
        .code
        .as_str()
        .to_owned();
    let mut v = base();
    v["items"][0]["tax_code"] = json!(two);
    assert!(errors(&v).has("items[0].tax_rate", FindingCode::RateNotAllowed));
    v["items"][0]["tax_rate"] = json!("9%");
    assert!(validate_json(&v.to_string()).is_ok());
}

/// What would reorder or hide text on an invoice is refused with the field and the
/// character; 生僻字 (Extension A 䶮, Extension B 𠮷) and GB 18030 symbols pass validation.
#[test]
fn direction_controls_and_emoji_are_refused_rare_characters_are_not() {
    for (bad, named) in [
        ("北京\u{202E}公司", "U+202E"),
        ("北京😀公司", "U+1F600"),
        ("北京\u{200D}公司", "U+200D"),
        ("北京\u{E000}公司", "U+E000"),
    ] {
        let mut v = base();
        v["buyer"]["name"] = json!(bad);
        let e = errors(&v);
        assert!(
            e.has("buyer.name", FindingCode::UnsupportedCharacter),
            "{e:?}"
        );
        assert!(format!("{e:?}").contains(named), "{e:?}");
    }
    let mut v = base();
    v["buyer"]["name"] = json!("𠮷䶮★有限公司");
    assert!(validate_json(&v.to_string()).is_ok());
}

#[test]
fn discount_rules_are_enforced() {
    let mut v = base();
    v["items"] = json!([{ "kind": "discount", "amount": "-1.00" }]);
    assert!(errors(&v).has("items[0].kind", FindingCode::DiscountWithoutLine));

    let mut v = base();
    v["items"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "kind": "discount", "amount": "-1.00", "tax_rate": "13%" }));
    assert!(errors(&v).has("items[1].tax_rate", FindingCode::DiscountMismatch));

    let mut v = base();
    v["items"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "kind": "discount", "amount": "1.00" }));
    assert!(errors(&v).has("items[1].amount", FindingCode::MustBeNegative));

    let mut v = base();
    v["items"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "kind": "discount", "amount": "-1.00", "quantity": "1" }));
    assert!(errors(&v).has("items[1].quantity", FindingCode::NotAllowed));

    // Two discounts in a row: the second discounts nothing.
    let mut v = base();
    let items = v["items"].as_array_mut().unwrap();
    items.push(json!({ "kind": "discount", "amount": "-1.00" }));
    items.push(json!({ "kind": "discount", "amount": "-1.00" }));
    assert!(errors(&v).has("items[2].kind", FindingCode::DiscountWithoutLine));

    // Exactly the line's amount is allowed (a 100 % discount) as long as the invoice total stays positive.
    let mut v = base();
    let items = v["items"].as_array_mut().unwrap();
    items.push(json!({ "kind": "discount", "amount": "-100.00" }));
    items.push(json!({ "name": "维护", "tax_code": "3040201030000000000", "amount": "10.00" }));
    assert_eq!(
        validate_json(&v.to_string()).unwrap().totals().amount,
        amount("10.00")
    );
}

#[test]
fn a_zero_or_negative_invoice_is_rejected() {
    let mut v = base();
    v["items"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "kind": "discount", "amount": "-100.00" }));
    assert!(errors(&v).has("items", FindingCode::MustBePositive));
    let mut v = base();
    v["items"][0] = json!({ "name": "开发", "tax_code": "3040201010000000000", "amount": "-5.00" });
    assert!(errors(&v).has("items[0].amount", FindingCode::MustBePositive));
}

#[test]
fn special_invoices_need_an_organisation_buyer_with_full_details() {
    let mut v = base();
    v["invoice_type"] = json!("special");
    v["buyer"] = json!({ "kind": "natural_person", "name": "王小明" });
    let e = errors(&v);
    assert!(e.has("buyer.kind", FindingCode::NotAllowed), "{e}");
    assert!(
        e.has("buyer.bank_account", FindingCode::RequiredForSpecialInvoice),
        "{e}"
    );
}

#[test]
fn organisation_buyers_need_a_taxpayer_id_and_natural_persons_must_not_give_one() {
    let mut v = base();
    v["buyer"].as_object_mut().unwrap().remove("taxpayer_id");
    assert!(errors(&v).has("buyer.taxpayer_id", FindingCode::Required));
    let mut v = base();
    v["buyer"]["kind"] = json!("natural_person");
    assert!(errors(&v).has("buyer.taxpayer_id", FindingCode::NotAllowed));
    v["buyer"].as_object_mut().unwrap().remove("taxpayer_id");
    v["buyer"]["id_number"] = json!("310115199003071230");
    assert!(errors(&v).has("buyer.id_number", FindingCode::InvalidPersonalId));
}

#[test]
fn required_choices_and_ids_are_reported() {
    let e = errors(&json!({}));
    for path in [
        "order_id",
        "invoice_type",
        "price_mode",
        "seller",
        "buyer",
        "items",
    ] {
        assert!(e.has(path, FindingCode::Required), "{path}: {e}");
    }
    let mut v = base();
    v["price_mode"] = json!("gross");
    v["order_id"] = json!("has space");
    let e = errors(&v);
    assert!(e.has("price_mode", FindingCode::InvalidChoice));
    assert!(e.has("order_id", FindingCode::InvalidText));
}

#[test]
fn texts_are_length_checked_and_free_of_control_characters() {
    let mut v = base();
    v["buyer"]["name"] = json!("名".repeat(101));
    v["remarks"] = json!("a\u{0007}b");
    let e = errors(&v);
    assert!(e.has("buyer.name", FindingCode::InvalidText));
    assert!(e.has("remarks", FindingCode::InvalidText));
}

#[test]
fn line_count_is_bounded() {
    let mut v = base();
    v["items"] = json!([]);
    assert!(errors(&v).has("items", FindingCode::LineCount));
    let line = base()["items"][0].clone();
    v["items"] = Value::Array(vec![line; fapiao_model::MAX_LINES + 1]);
    assert!(errors(&v).has("items", FindingCode::LineCount));
}

#[test]
fn a_document_of_the_wrong_shape_is_one_malformed_finding() {
    for bad in ["not json", "[]", r#"{"items": {"name": "x"}}"#] {
        let e = validate_json(bad).unwrap_err();
        assert_eq!(e.findings().len(), 1, "{bad}");
        assert_eq!(
            e.findings()[0].code,
            FindingCode::MalformedDocument,
            "{bad}"
        );
    }
}

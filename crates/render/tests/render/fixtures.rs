//! Invoices to render: every example order, reds, a 60-line invoice, signed by an SM2 device.

use std::path::PathBuf;
use std::sync::OnceLock;

use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{Ca, CertificateRequest, PrivateKey, Profile, Role, Subject, Suite};
use fapiao_model::red::{
    Confirmation, Initiator, PartialReversal, RedLetterForm, RedLetterFormNumber, RedReason,
    RedScope, plan_red,
};
use fapiao_model::{Amount, Invoice, InvoiceDraft, InvoiceNumber, Order, TaxCatalog};
use fapiao_render::{DeviceSignature, PdfFont, bundled_font, signed_content};
use time::macros::datetime;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

pub(crate) const ISSUED: PrimitiveDateTime = datetime!(2026-11-20 10:15:30);

pub(crate) fn font() -> &'static PdfFont {
    static FONT: OnceLock<PdfFont> = OnceLock::new();
    FONT.get_or_init(|| bundled_font().unwrap())
}

fn example(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/orders")
            .join(name),
    )
    .unwrap()
}

pub(crate) fn draft_from_json(json: &str) -> InvoiceDraft {
    Order::from_json(json)
        .unwrap()
        .validate(&TaxCatalog::builtin())
        .unwrap()
}

pub(crate) fn issue(draft: InvoiceDraft, seq: u64) -> Invoice {
    Invoice::issue(
        draft,
        InvoiceNumber::parse(&format!("26312{seq:015}")).unwrap(),
        ISSUED,
    )
    .unwrap()
}

/// The SM2 issuing device of the tests: key and certificate.
pub(crate) struct Device {
    pub(crate) key: PrivateKey,
    pub(crate) cert_der: Vec<u8>,
}

pub(crate) fn device() -> &'static Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(|| {
        let now: OffsetDateTime = datetime!(2026-11-20 00:00:00 UTC);
        let root = Subject {
            role: Role::Ca,
            name: "Render Test Root".into(),
            taxpayer_id: None,
        };
        let ca_key = PrivateKey::generate(Suite::Gm.key_algorithm(), &mut system_rng());
        let ca = Ca::create_root(
            &root,
            ca_key,
            now - Duration::days(1),
            now + Duration::days(365),
            &mut system_rng(),
        )
        .unwrap();
        let key = PrivateKey::generate(Suite::Gm.key_algorithm(), &mut system_rng());
        let req = CertificateRequest {
            subject: Subject {
                role: Role::Device,
                name: "device-1".into(),
                taxpayer_id: Some("91310115MA1FP0001X".into()),
            },
            profile: Profile::Signing,
            public_key: key.public_key(),
            not_before: now - Duration::days(1),
            not_after: now + Duration::days(365),
        };
        let cert = ca.issue(&req, &mut system_rng()).unwrap();
        Device {
            key,
            cert_der: cert.der().to_vec(),
        }
    })
}

pub(crate) fn sign(invoice: &Invoice) -> DeviceSignature {
    let signed_at = ISSUED + Duration::seconds(2);
    let value = device()
        .key
        .sign(&signed_content(invoice, signed_at))
        .unwrap();
    DeviceSignature {
        signed_at,
        value,
        certificate: device().cert_der.clone(),
    }
}

/// A 60-line order.
pub(crate) fn sixty_lines() -> String {
    let mut order: serde_json::Value = serde_json::from_str(&example("basic.json")).unwrap();
    let items: Vec<serde_json::Value> = (1..=60)
        .map(|i| {
            serde_json::json!({
                "name": format!("系统模块{i:02}定制开发"), "tax_code": "3040201010000000000",
                "unit": "项", "quantity": "1", "unit_price": format!("{}", 100 * i), "tax_rate": "6%"
            })
        })
        .collect();
    order["items"] = serde_json::Value::Array(items);
    order.as_object_mut().unwrap().remove("totals");
    order.to_string()
}

/// Every case the layout must handle, with a short name.
pub(crate) fn cases() -> Vec<(&'static str, Invoice)> {
    let basic = issue(draft_from_json(&example("basic.json")), 101);
    let special = issue(draft_from_json(&example("special.json")), 102);
    let form_number = RedLetterFormNumber::parse("31011526112000123456").unwrap();
    let full = RedLetterForm::open(
        form_number.clone(),
        basic.number().clone(),
        RedReason::IssuingError,
        Initiator::Seller,
        Confirmation::NotRequired,
        RedScope::Full,
    )
    .unwrap();
    let red = issue(
        plan_red(&basic, &[], &full, None, Some("李静".into())).unwrap(),
        201,
    );
    let parts = vec![PartialReversal {
        line: 1,
        amount: None,
        quantity: Some(fapiao_model::Quantity::parse("20").unwrap()),
    }];
    let partial = RedLetterForm::open(
        form_number,
        special.number().clone(),
        RedReason::SalesReturn,
        Initiator::Seller,
        Confirmation::Required,
        RedScope::Partial(parts),
    )
    .unwrap()
    .confirm()
    .unwrap();
    let partial_red = issue(
        plan_red(&special, &[], &partial, None, Some("陈晓".into())).unwrap(),
        202,
    );
    assert_eq!(
        partial_red.draft().totals().amount,
        Amount::parse("-1770.00").unwrap()
    );
    vec![
        ("basic", basic),
        ("special", special),
        (
            "inclusive",
            issue(draft_from_json(&example("inclusive.json")), 103),
        ),
        (
            "discount",
            issue(draft_from_json(&example("discount.json")), 104),
        ),
        (
            "natural-person",
            issue(draft_from_json(&example("natural-person.json")), 105),
        ),
        ("red-full", red),
        ("red-partial", partial_red),
        ("sixty-lines", issue(draft_from_json(&sixty_lines()), 106)),
    ]
}

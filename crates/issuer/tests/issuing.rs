//! The issuing device: numbers, signatures, and what recipients check.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{
    Ca, CertificateRequest, PathError, PrivateKey, Profile, Revocation, Role, Subject, Suite,
    TrustStore,
};
use fapiao_issuer::{IssueError, IssuingDevice, NumberBlock, verify};
use fapiao_model::red::{
    Confirmation, Initiator, RedLetterForm, RedLetterFormNumber, RedReason, RedScope, plan_red,
};
use fapiao_model::{Invoice, InvoiceDraft, Order, ProvinceCode, TaxCatalog};
use time::macros::datetime;
use time::{Duration, OffsetDateTime, PrimitiveDateTime};

const NOW: OffsetDateTime = datetime!(2026-11-20 02:15:30 UTC);
const ISSUED: PrimitiveDateTime = datetime!(2026-11-20 10:15:30);
const SELLER: &str = "91310115MA1FP0001X";

struct Pki {
    ca: Ca,
    revoked: Vec<Revocation>,
}

impl Pki {
    fn new() -> Self {
        let key = PrivateKey::generate(Suite::Gm.key_algorithm(), &mut system_rng());
        let s = Subject {
            role: Role::Ca,
            name: "Issuer Test Root".into(),
            taxpayer_id: None,
        };
        Self {
            ca: Ca::create_root(
                &s,
                key,
                NOW - Duration::days(1),
                NOW + Duration::days(365),
                &mut system_rng(),
            )
            .unwrap(),
            revoked: vec![],
        }
    }
    fn device(&self, taxpayer_id: &str) -> IssuingDevice {
        let key = PrivateKey::generate(Suite::Gm.key_algorithm(), &mut system_rng());
        let req = CertificateRequest {
            subject: Subject {
                role: Role::Device,
                name: "device-1".into(),
                taxpayer_id: Some(taxpayer_id.into()),
            },
            profile: Profile::Signing,
            public_key: key.public_key(),
            not_before: NOW - Duration::days(1),
            not_after: NOW + Duration::days(30),
        };
        IssuingDevice::new(key, self.ca.issue(&req, &mut system_rng()).unwrap()).unwrap()
    }
    fn trust(&self) -> TrustStore {
        let mut t = TrustStore::new(vec![self.ca.certificate().clone()]).unwrap();
        t.add_crl(
            self.ca
                .crl(
                    &self.revoked,
                    1 + self.revoked.len() as u64,
                    NOW - Duration::hours(1),
                    NOW + Duration::days(7),
                )
                .unwrap(),
        );
        t
    }
}

fn draft() -> InvoiceDraft {
    let json = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/orders/basic.json"
    ))
    .unwrap();
    Order::from_json(&json)
        .unwrap()
        .validate(&TaxCatalog::builtin())
        .unwrap()
}

fn block() -> NumberBlock {
    NumberBlock::new(26, ProvinceCode::parse("31").unwrap(), 2, 1000, 1002).unwrap()
}

#[test]
fn a_block_hands_out_each_number_once_and_then_stops() {
    let mut b = block();
    let numbers: Vec<String> = (0..3).map(|_| b.take().unwrap().to_string()).collect();
    assert_eq!(
        numbers,
        [
            "26312000000000001000",
            "26312000000000001001",
            "26312000000000001002"
        ]
    );
    assert!(matches!(
        b.take(),
        Err(IssueError::Exhausted { last: 1002 })
    ));
    assert_eq!(b.remaining(), 0);
    let resumed =
        NumberBlock::resume(26, ProvinceCode::parse("31").unwrap(), 2, 1000, 1002, 1002).unwrap();
    assert_eq!(resumed.remaining(), 1);
    assert!(resumed.contains(&fapiao_model::InvoiceNumber::parse("26312000000000001000").unwrap()));
    assert!(
        !resumed.contains(&fapiao_model::InvoiceNumber::parse("26312000000000001003").unwrap())
    );
    assert!(
        NumberBlock::resume(26, ProvinceCode::parse("31").unwrap(), 2, 1000, 1002, 1004).is_err()
    );
}

#[test]
fn issued_invoices_verify_at_the_recipient_and_edits_do_not() {
    let pki = Pki::new();
    let device = pki.device(SELLER);
    let mut b = block();
    let signed = device.issue(draft(), &mut b, ISSUED).unwrap();
    assert_eq!(signed.invoice.number().to_string(), "26312000000000001000");
    verify(&signed, &pki.trust(), NOW).unwrap();

    // The same invoice with one edited field no longer verifies.
    let json = serde_json::to_string(&signed.invoice)
        .unwrap()
        .replace("李静", "王五");
    let mut edited = signed.clone();
    edited.invoice = Invoice::from_json(&json).unwrap();
    assert_eq!(
        verify(&edited, &pki.trust(), NOW),
        Err(IssueError::BadSignature)
    );

    // A red invoice against it is issued and verified the same way.
    let form = RedLetterForm::open(
        RedLetterFormNumber::parse("31011526112000123456").unwrap(),
        signed.invoice.number().clone(),
        RedReason::IssuingError,
        Initiator::Seller,
        Confirmation::NotRequired,
        RedScope::Full,
    )
    .unwrap();
    let red = device
        .issue(
            plan_red(&signed.invoice, &[], &form, None, None).unwrap(),
            &mut b,
            ISSUED,
        )
        .unwrap();
    verify(&red, &pki.trust(), NOW).unwrap();
}

#[test]
fn a_device_signs_only_for_its_own_enterprise() {
    let pki = Pki::new();
    let other = pki.device("91110108MA01XY002C");
    let mut b = block();
    let err = other.issue(draft(), &mut b, ISSUED).unwrap_err();
    assert!(matches!(err, IssueError::WrongEnterprise { .. }), "{err:?}");
    assert_eq!(
        b.remaining(),
        3,
        "no number is consumed by a refusal before numbering"
    );
}

#[test]
fn a_revoked_or_foreign_device_is_refused_by_the_recipient() {
    let mut pki = Pki::new();
    let device = pki.device(SELLER);
    let signed = device.issue(draft(), &mut block(), ISSUED).unwrap();
    let stranger = Pki::new();
    assert!(matches!(
        verify(&signed, &stranger.trust(), NOW),
        Err(IssueError::Certificate(_))
    ));
    let cert = fapiao_crypto::Certificate::from_der(&signed.signature.certificate).unwrap();
    pki.revoked.push(Revocation {
        serial: cert.serial().to_vec(),
        revoked_at: NOW - Duration::minutes(5),
    });
    assert!(matches!(
        verify(&signed, &pki.trust(), NOW),
        Err(IssueError::Certificate(PathError::Revoked { .. }))
    ));
}

#[test]
fn a_number_consumed_by_a_failed_issue_is_reported_void() {
    let pki = Pki::new();
    let device = pki.device(SELLER);
    let mut b = block();
    // Issued in 2027 with a 2026 block: the number does not fit the date.
    let (err, void) = device
        .issue_or_void(draft(), &mut b, datetime!(2027-01-01 00:00:01))
        .unwrap_err();
    assert!(matches!(err, IssueError::Number(_)), "{err:?}");
    let void = void.unwrap();
    assert_eq!(void.number.to_string(), "26312000000000001000");
    assert!(void.reason.contains("issue year"), "{}", void.reason);
    assert_eq!(b.remaining(), 2);
}

#[test]
fn only_sm2_device_signing_certificates_make_a_device() {
    let pki = Pki::new();
    let key = PrivateKey::generate(Suite::Gm.key_algorithm(), &mut system_rng());
    let req = CertificateRequest {
        subject: Subject {
            role: Role::Platform,
            name: "p".into(),
            taxpayer_id: None,
        },
        profile: Profile::Signing,
        public_key: key.public_key(),
        not_before: NOW - Duration::days(1),
        not_after: NOW + Duration::days(1),
    };
    let cert = pki.ca.issue(&req, &mut system_rng()).unwrap();
    assert_eq!(
        IssuingDevice::new(key, cert).unwrap_err(),
        IssueError::DeviceCertificate
    );
}

#[test]
fn a_device_signs_the_layout_of_only_the_invoices_it_signed() {
    let pki = Pki::new();
    let device = pki.device(SELLER);
    let signed = device.issue(draft(), &mut block(), ISSUED).unwrap();
    let bytes = b"<ofd:Signature/>";
    let value = device.sign_ofd(&signed, bytes).unwrap();
    device
        .certificate()
        .public_key()
        .unwrap()
        .verify(bytes, &value)
        .unwrap();
    // The same enterprise's device with another key (a replaced one) signs nothing of it.
    let replaced = pki.device(SELLER);
    assert!(matches!(
        replaced.sign_ofd(&signed, bytes),
        Err(IssueError::OtherDevice)
    ));
}

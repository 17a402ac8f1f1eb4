//! Number allocation and issuing (numbering + the device's SM2 signature), and the recipients'
//! check of an issued invoice (`cargo bench -p fapiao-issuer`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{
    Ca, CertificateRequest, PrivateKey, Profile, Role, Subject, Suite, TrustStore,
};
use fapiao_issuer::{IssuingDevice, NumberBlock, verify};
use fapiao_model::{Order, ProvinceCode, TaxCatalog};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-11-20 02:15:30 UTC);

fn bench(c: &mut Criterion) {
    let province = ProvinceCode::parse("31").expect("province");
    c.bench_function("number/take", |b| {
        let mut block = NumberBlock::new(26, province, 2, 1, 999_999_999_999).expect("block");
        b.iter(|| black_box(block.take().expect("a number")));
    });

    let root = Subject {
        role: Role::Ca,
        name: "Bench Root".into(),
        taxpayer_id: None,
    };
    let ca = Ca::create_root(
        &root,
        PrivateKey::generate(Suite::Gm.key_algorithm(), &mut system_rng()),
        NOW - Duration::days(1),
        NOW + Duration::days(365),
        &mut system_rng(),
    )
    .expect("root");
    let key = PrivateKey::generate(Suite::Gm.key_algorithm(), &mut system_rng());
    let req = CertificateRequest {
        subject: Subject {
            role: Role::Device,
            name: "device-1".into(),
            taxpayer_id: Some("91310115MA1FP0001X".into()),
        },
        profile: Profile::Signing,
        public_key: key.public_key(),
        not_before: NOW - Duration::days(1),
        not_after: NOW + Duration::days(30),
    };
    let device =
        IssuingDevice::new(key, ca.issue(&req, &mut system_rng()).expect("cert")).expect("device");
    let mut trust = TrustStore::new(vec![ca.certificate().clone()]).expect("trust");
    trust.add_crl(
        ca.crl(&[], 1, NOW - Duration::hours(1), NOW + Duration::days(7))
            .expect("crl"),
    );
    let json = std::fs::read_to_string(format!(
        "{}/../../examples/orders/basic.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("example order");
    let draft = Order::from_json(&json)
        .expect("json")
        .validate(&TaxCatalog::builtin())
        .expect("valid");
    let issued_at = datetime!(2026-11-20 10:15:30);
    let mut block = NumberBlock::new(26, province, 2, 1, 999_999_999_999).expect("block");
    c.bench_function("issue/number+sign", |b| {
        b.iter(|| {
            device
                .issue(black_box(draft.clone()), &mut block, issued_at)
                .expect("issued")
        })
    });
    let signed = device
        .issue(draft.clone(), &mut block, issued_at)
        .expect("issued");
    c.bench_function("issue/verify (path remembered)", |b| {
        b.iter(|| verify(black_box(&signed), &trust, NOW).expect("verifies"))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(300));
    targets = bench
}
criterion_main!(benches);

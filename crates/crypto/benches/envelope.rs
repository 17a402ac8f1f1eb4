//! Sign, verify, seal and open, once per suite (`cargo bench -p fapiao-crypto`).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fapiao_crypto::envelope::{Header, LocalParty, MemoryReplayGuard, Message, Opener, seal};
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{
    Ca, CertificateRequest, PrivateKey, Profile, Revocation, Role, Subject, Suite, TrustStore,
};
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = time::macros::datetime!(2026-11-20 10:00:00 UTC);

fn party(ca: &Ca, suite: Suite, role: Role, name: &str) -> LocalParty {
    let issue = |profile: Profile| {
        let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
        let req = CertificateRequest {
            subject: Subject {
                role,
                name: name.into(),
                taxpayer_id: None,
            },
            profile,
            public_key: key.public_key(),
            not_before: NOW - Duration::days(1),
            not_after: NOW + Duration::days(365),
        };
        (key, ca.issue(&req, &mut system_rng()).expect("issue"))
    };
    let (sk, sc) = issue(Profile::Signing);
    let (ek, ec) = issue(Profile::Encryption);
    LocalParty::new(suite, sk, sc, ek, ec, Vec::new()).expect("party")
}

fn bench(c: &mut Criterion) {
    // A realistic invoice-sized payload (about 2 KB of JSON).
    let payload = format!("{{\"invoice\":\"{}\"}}", "x".repeat(2000)).into_bytes();
    for suite in Suite::ALL {
        let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
        let root = Subject {
            role: Role::Ca,
            name: "Bench Root".into(),
            taxpayer_id: None,
        };
        let ca = Ca::create_root(
            &root,
            key,
            NOW - Duration::days(1),
            NOW + Duration::days(3650),
            &mut system_rng(),
        )
        .expect("root");
        let (cloud, platform) = (
            party(&ca, suite, Role::Cloud, "cloud-1"),
            party(&ca, suite, Role::Platform, "platform-1"),
        );
        let mut trust = TrustStore::new(vec![ca.certificate().clone()]).expect("trust");
        let none: [Revocation; 0] = [];
        trust.add_crl(
            ca.crl(&none, 1, NOW - Duration::hours(1), NOW + Duration::days(7))
                .expect("crl"),
        );

        let signer = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
        let signature = signer.sign(&payload).expect("sign");
        c.bench_function(&format!("{suite}/sign"), |b| {
            b.iter(|| signer.sign(black_box(&payload)))
        });
        let public = signer.public_key();
        c.bench_function(&format!("{suite}/verify"), |b| {
            b.iter(|| public.verify(black_box(&payload), &signature))
        });

        let m = Message {
            header: Header {
                protocol_version: 1,
                sender: cloud.identity().into(),
                recipient: platform.identity().into(),
                message_type: "order.issue".into(),
                message_id: "bench".into(),
                created_at: NOW,
            },
            payload: payload.clone(),
        };
        c.bench_function(&format!("{suite}/seal"), |b| {
            b.iter(|| {
                seal(
                    &cloud,
                    platform.encryption_certificate(),
                    black_box(&m),
                    &mut system_rng(),
                )
            })
        });
        let sealed = seal(
            &cloud,
            platform.encryption_certificate(),
            &m,
            &mut system_rng(),
        )
        .expect("seal");
        c.bench_function(&format!("{suite}/open"), |b| {
            b.iter(|| {
                // A fresh guard each time: the same envelope is opened repeatedly.
                let guard = MemoryReplayGuard::new();
                Opener::new(&platform, &trust, &guard)
                    .open(black_box(&sealed), NOW)
                    .expect("open")
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);

//! Fuzzes envelope opening (both suites) with untrusted bytes: it must never panic.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run envelope_open` from this directory.
#![no_main]

use std::convert::Infallible;
use std::sync::OnceLock;

use fapiao_crypto::envelope::{LocalParty, MemoryReplayGuard, Opener, seal, Header, Message};
use fapiao_crypto::{Ca, CertificateRequest, PrivateKey, Profile, Revocation, Role, Subject, Suite, TrustStore};
use libfuzzer_sys::fuzz_target;
use rand_core::{TryCryptoRng, TryRng};
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const NOW: OffsetDateTime = datetime!(2026-11-20 10:00:00 UTC);

/// A deterministic generator so every run sees the same keys (fuzzing only, not for keys in use).
struct SplitMix(u64);

impl TryRng for SplitMix {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.try_next_u64()? >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Ok(z ^ (z >> 31))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        for chunk in dst.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}
impl TryCryptoRng for SplitMix {}

struct Setup {
    parties: Vec<(LocalParty, TrustStore)>,
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let mut rng = SplitMix(42);
        let mut parties = Vec::new();
        for suite in Suite::ALL {
            let root = Subject { role: Role::Ca, name: "Fuzz Root".into(), taxpayer_id: None };
            let key = PrivateKey::generate(suite.key_algorithm(), &mut rng);
            let ca = Ca::create_root(&root, key, NOW - Duration::days(1), NOW + Duration::days(30), &mut rng).unwrap();
            let party = |name: &str, rng: &mut SplitMix| {
                let mut issue = |profile: Profile| {
                    let key = PrivateKey::generate(suite.key_algorithm(), rng);
                    let req = CertificateRequest {
                        subject: Subject { role: Role::Platform, name: name.into(), taxpayer_id: None },
                        profile,
                        public_key: key.public_key(),
                        not_before: NOW - Duration::days(1),
                        not_after: NOW + Duration::days(30),
                    };
                    let cert = ca.issue(&req, rng).unwrap();
                    (key, cert)
                };
                let (sk, sc) = issue(Profile::Signing);
                let (ek, ec) = issue(Profile::Encryption);
                LocalParty::new(suite, sk, sc, ek, ec, Vec::new()).unwrap()
            };
            let me = party("platform-1", &mut rng);
            let mut trust = TrustStore::new(vec![ca.certificate().clone()]).unwrap();
            let none: [Revocation; 0] = [];
            trust.add_crl(ca.crl(&none, 1, NOW - Duration::hours(1), NOW + Duration::days(7)).unwrap());
            // Write a valid envelope as a seed when asked (FAPIAO_FUZZ_SEED_DIR).
            if let Some(dir) = std::env::var_os("FAPIAO_FUZZ_SEED_DIR") {
                let peer = party("platform-2", &mut rng);
                let m = Message {
                    header: Header {
                        protocol_version: 1,
                        sender: peer.identity().into(),
                        recipient: me.identity().into(),
                        message_type: "seed".into(),
                        message_id: "seed".into(),
                        created_at: NOW,
                    },
                    payload: b"{\"seed\":true}".to_vec(),
                };
                let env = seal(&peer, me.encryption_certificate(), &m, &mut rng).unwrap();
                let _ = std::fs::write(std::path::Path::new(&dir).join(format!("seed-{suite}")), env);
            }
            parties.push((me, trust));
        }
        Setup { parties }
    })
}

fuzz_target!(|data: &[u8]| {
    for (me, trust) in &setup().parties {
        let guard = MemoryReplayGuard::new();
        let _ = Opener::new(me, trust, &guard).open(data, NOW);
    }
});

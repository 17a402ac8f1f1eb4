//! The crypto bound of one invoice ([`crypto_bound`]): what `fapiao bench` sets the pipeline's
//! CPU time against.

use super::*;

/// The cryptography one invoice needs in the current design, back to back in one thread:
/// CPU per invoice (ms). An invoice travels in the exchanges of its flow ([`Exchanges`]) —
/// sync: cloud→platform (the order), platform→tax (the upload), platform→cloud (the status
/// notice); async: agent→cloud (the pull of its queued order), agent→tax (the upload),
/// agent→platform (the report of the invoice and of tax's receipt), platform→cloud (the
/// notice carrying the invoice), agent→cloud (the acknowledgement) — each a request and an
/// answer envelope: a seal (sign, wrap the content key to the recipient, encrypt) and an open
/// (unwrap, decrypt, verify, validate the signer's certificate path) each. A batch of `k`
/// invoices shares one exchange whose envelopes carry the `k` invoices' bytes, so an invoice
/// pays `exchanges` of each (`1/k`) plus its own bytes. Every invoice also has its own two
/// signatures (the issuing device's on the invoice, SM2 in both suites as every device key
/// is; tax's on the receipt, in the suite) and their verifications with the signer's path
/// ([`Exchanges::checks`]). And data at rest ([`Exchanges::at_rest`]): each value sealed
/// under its role's data key (SM4-GCM or AES-256-GCM, the suite's) and opened where the flow
/// reads it again, and the ERP key's stored secret opened once per ERP request to check the
/// request's MAC.
///
/// # Errors
/// Key generation or a cryptographic step fails.
pub(crate) fn crypto_bound(
    suite: Suite,
    iterations: u32,
    exchanges: Exchanges,
) -> Result<CryptoBound> {
    let now = time::macros::datetime!(2026-11-20 10:00:00 UTC);
    let day = time::Duration::days(1);
    let root = |suite: Suite| -> Result<Ca> {
        let subject = Subject {
            role: Role::Ca,
            name: format!("Bench Root {suite}"),
            taxpayer_id: None,
        };
        let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
        Ok(Ca::create_root(
            &subject,
            key,
            now - day,
            now + day * 3650,
            &mut system_rng(),
        )?)
    };
    let ca = root(suite)?;
    // Devices sign with SM2 under the GM root whatever the message suite.
    let gm_ca = if suite == Suite::Gm {
        None
    } else {
        Some(root(Suite::Gm)?)
    };
    let device_ca = gm_ca.as_ref().unwrap_or(&ca);
    let issue = |ca: &Ca, role: Role, name: &str, profile: Profile| -> Result<_> {
        let algorithm = if role == Role::Device {
            KeyAlgorithm::Sm2
        } else {
            suite.key_algorithm()
        };
        let key = PrivateKey::generate(algorithm, &mut system_rng());
        let taxpayer_id = (role == Role::Device).then(|| DEMO_ENTERPRISES[0].taxpayer_id.into());
        let req = CertificateRequest {
            subject: Subject {
                role,
                name: name.into(),
                taxpayer_id,
            },
            profile,
            public_key: key.public_key(),
            not_before: now - day,
            not_after: now + day * 365,
        };
        let cert = ca.issue(&req, &mut system_rng())?;
        Ok((key, cert))
    };
    let party = |role: Role, name: &str| -> Result<LocalParty> {
        let (sk, sc) = issue(&ca, role, name, Profile::Signing)?;
        let (ek, ec) = issue(&ca, role, name, Profile::Encryption)?;
        Ok(LocalParty::new(suite, sk, sc, ek, ec, Vec::new())?)
    };
    let (a, b) = (
        party(Role::Cloud, "cloud-1")?,
        party(Role::Platform, "platform-1")?,
    );
    let signers = [
        issue(device_ca, Role::Device, "device", Profile::Signing)?,
        issue(&ca, Role::Tax, "tax", Profile::Signing)?,
    ];
    let none: [Revocation; 0] = [];
    let mut roots = vec![ca.certificate().clone()];
    roots.extend(gm_ca.iter().map(|c| c.certificate().clone()));
    let mut trust = TrustStore::new(roots)?;
    for ca in std::iter::once(&ca).chain(&gm_ca) {
        trust.add_crl(ca.crl(&none, 1, now - time::Duration::hours(1), now + day * 7)?);
    }
    let kinds = exchanges.kinds();
    let at_rest_values = exchanges.at_rest();
    let payload = vec![b'x'; 3000];
    let message = |id: String, payload: &[u8]| Message {
        header: Header {
            protocol_version: 1,
            sender: a.identity().into(),
            recipient: b.identity().into(),
            message_type: "order.issue".into(),
            message_id: id,
            created_at: now,
        },
        payload: payload.to_vec(),
    };
    let data_key = {
        let algorithm = AeadAlgorithm::for_suite(suite);
        let mut raw = vec![0_u8; algorithm.key_len()];
        system_rng().fill_bytes(&mut raw);
        AeadKey::new(algorithm, &raw)?
    };
    // A value sealed at rest, as the vault does it: a fresh nonce, the column as associated
    // data with the row; then opened again `opens` times.
    let at_rest = |value: &[u8], opens: u32| -> Result<()> {
        let mut nonce = [0_u8; NONCE_LEN];
        system_rng().fill_bytes(&mut nonce);
        let sealed = data_key.seal(&nonce, b"invoices.record|k1|26312000000000000001", value);
        for _ in 0..opens {
            data_key.open(&nonce, b"invoices.record|k1|26312000000000000001", &sealed)?;
        }
        Ok(())
    };
    let secret = [b's'; 43];
    let guard = MemoryReplayGuard::new();
    let exchange = |id: String, payload: &[u8]| -> Result<()> {
        let sealed = seal(
            &a,
            b.encryption_certificate(),
            &message(id, payload),
            &mut system_rng(),
        )?;
        Opener::new(&b, &trust, &guard).open(&sealed, now)?;
        Ok(())
    };
    let started = cpu_thread_time();
    // The exchanges owed so far, per kind (and ERP requests, last): one is made each time a
    // whole one is owed.
    let mut owed = vec![0.0_f64; kinds.len() + 1];
    for i in 0..iterations {
        for (k, &(share, request, answer)) in kinds.iter().enumerate() {
            if share <= 0.0 {
                continue;
            }
            owed[k] += share;
            while owed[k] >= 1.0 - 1e-9 {
                owed[k] -= 1.0;
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "a positive byte count below 2^32"
                )]
                let bytes = |per_invoice: f64| vec![b'x'; (per_invoice / share) as usize];
                exchange(format!("x{i}-{k}-q"), &bytes(request))?;
                exchange(format!("x{i}-{k}-a"), &bytes(answer))?;
            }
        }
        // The ERP request's MAC key, opened from cloud's store.
        let requests = owed.len() - 1;
        owed[requests] += exchanges.erp;
        while owed[requests] >= 1.0 - 1e-9 {
            owed[requests] -= 1.0;
            at_rest(&secret, 1)?;
        }
        for &(bytes, opens) in &at_rest_values {
            at_rest(&payload[..bytes.min(payload.len())], opens)?;
        }
        for (key, cert) in &signers {
            let signature = key.sign(&payload)?;
            for _ in 0..exchanges.checks() {
                trust.validate(cert, &[], Purpose::Signing, now)?;
                cert.public_key()?.verify(&payload, &signature)?;
            }
        }
    }
    let ms = (cpu_thread_time() - started).as_secs_f64() * 1e3 / f64::from(iterations);
    #[expect(clippy::cast_precision_loss, reason = "a core count")]
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    Ok(CryptoBound {
        suite: suite.to_string(),
        exchanges,
        ms_per_invoice: ms,
        ceiling_per_second: cores * 1e3 / ms,
    })
}

/// This thread's CPU time (`/proc/thread-self/schedstat`, nanoseconds on the CPU).
fn cpu_thread_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or_else(cpu_time, Duration::from_nanos)
}

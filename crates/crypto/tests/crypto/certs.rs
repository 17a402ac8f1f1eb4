//! Certificates and CRLs as OpenSSL sees them.

use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{
    CertError, CertificateRequest, PrivateKey, Profile, Role, SM2_DISTID, Subject, Suite,
};

use crate::helpers::{NOW, Pki, openssl, subject, write};

/// `openssl verify` at the tests' fixed time, which their certificates and CRLs are made for
/// (OpenSSL otherwise checks them against the wall clock: the CRL's next update is a week
/// after [`NOW`]).
fn verify_at_now(args: &[&str]) -> (bool, String) {
    let at = NOW.unix_timestamp().to_string();
    openssl(&[&["verify", "-attime", &at], args].concat())
}

#[test]
fn p256_chain_is_accepted_by_openssl_for_each_purpose() {
    let pki = Pki::new(Suite::Intl);
    let dir = tempfile::tempdir().unwrap();
    let root = write(
        dir.path(),
        "root.pem",
        pki.ca.certificate().to_pem().unwrap(),
    );
    let server = Profile::TlsServer {
        dns_names: vec!["localhost".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    for (profile, purpose) in [
        (server, "sslserver"),
        (Profile::TlsClient, "sslclient"),
        (Profile::Signing, "any"),
        (Profile::Encryption, "any"),
    ] {
        let (_, cert) = pki.issue(Role::Platform, "platform-1", profile);
        let leaf = write(dir.path(), "leaf.pem", cert.to_pem().unwrap());
        let (ok, out) = verify_at_now(&["-purpose", purpose, "-CAfile", &root, &leaf]);
        assert!(ok, "{purpose}: {out}");
    }
    // A client certificate is not a server certificate.
    let (_, client) = pki.issue(Role::Cloud, "cloud-1", Profile::TlsClient);
    let leaf = write(dir.path(), "client.pem", client.to_pem().unwrap());
    assert!(!verify_at_now(&["-purpose", "sslserver", "-CAfile", &root, &leaf]).0);
}

#[test]
fn sm2_certificates_verify_in_openssl_with_the_standard_distinguishing_id() {
    let pki = Pki::new(Suite::Gm);
    let dir = tempfile::tempdir().unwrap();
    let root = write(
        dir.path(),
        "root.pem",
        pki.ca.certificate().to_pem().unwrap(),
    );
    let (_, cert) = pki.issue(Role::Device, "device-1", Profile::Signing);
    let leaf = write(dir.path(), "leaf.pem", cert.to_pem().unwrap());
    let distid = format!("distid:{SM2_DISTID}");
    let (ok, out) = verify_at_now(&["-vfyopt", &distid, "-CAfile", &root, &leaf]);
    assert!(ok, "{out}");
    // The wrong ID fails: the ID really is bound into the signature.
    assert!(
        !verify_at_now(&[
            "-vfyopt",
            "distid:0000000000000000",
            "-CAfile",
            &root,
            &leaf
        ])
        .0
    );
    let (ok, text) = openssl(&["x509", "-in", &leaf, "-noout", "-text", "-nameopt", "utf8"]);
    assert!(ok);
    assert!(text.contains("SM2-with-SM3"), "{text}");
    assert!(
        text.contains("Digital Signature, Non Repudiation"),
        "{text}"
    );
    assert!(
        text.contains("OU=device") && text.contains("91310115MA1FP0001X"),
        "{text}"
    );
}

#[test]
fn openssl_reports_a_revoked_p256_certificate_from_our_crl() {
    let mut pki = Pki::new(Suite::Intl);
    let (_, good) = pki.issue(Role::Cloud, "cloud-1", Profile::TlsClient);
    let (_, bad) = pki.issue(Role::Cloud, "cloud-2", Profile::TlsClient);
    pki.revoke(&bad);
    let dir = tempfile::tempdir().unwrap();
    let root = write(
        dir.path(),
        "root.pem",
        pki.ca.certificate().to_pem().unwrap(),
    );
    let crl = write(dir.path(), "crl.pem", pki.crl().to_pem().unwrap());
    assert!(openssl(&["crl", "-in", &crl, "-CAfile", &root, "-noout", "-verify"]).0);
    let good = write(dir.path(), "good.pem", good.to_pem().unwrap());
    let bad = write(dir.path(), "bad.pem", bad.to_pem().unwrap());
    let (ok, out) = verify_at_now(&["-crl_check", "-CRLfile", &crl, "-CAfile", &root, &good]);
    assert!(ok, "{out}");
    let (ok, out) = verify_at_now(&["-crl_check", "-CRLfile", &crl, "-CAfile", &root, &bad]);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
}

#[test]
fn encrypted_keys_open_in_openssl() {
    for suite in Suite::ALL {
        let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
        let pem = key
            .to_encrypted_pem(b"s3cret pass", &mut system_rng())
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "key.pem", pem.as_bytes());
        let (ok, out) = openssl(&[
            "pkey",
            "-in",
            &path,
            "-passin",
            "pass:s3cret pass",
            "-pubout",
        ]);
        assert!(ok, "{suite}: {out}");
        assert!(
            out.contains(&String::from_utf8(pem_public(&key)).unwrap()),
            "{suite}: {out}"
        );
        assert!(!openssl(&["pkey", "-in", &path, "-passin", "pass:wrong", "-noout"]).0);
    }
}

fn pem_public(key: &PrivateKey) -> Vec<u8> {
    let der = key.public_key().to_spki_der().unwrap();
    der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, &der)
        .unwrap()
        .into_bytes()
}

#[test]
fn issuance_refuses_profile_and_key_mismatches() {
    let gm = Pki::new(Suite::Gm);
    let intl = Pki::new(Suite::Intl);
    let p256 =
        PrivateKey::generate(fapiao_crypto::KeyAlgorithm::P256, &mut system_rng()).public_key();
    let sm2 =
        PrivateKey::generate(fapiao_crypto::KeyAlgorithm::Sm2, &mut system_rng()).public_key();
    let req = |subject: Subject, profile: Profile, public_key| CertificateRequest {
        subject,
        profile,
        public_key,
        not_before: NOW,
        not_after: NOW + time::Duration::days(1),
    };
    let cases = [
        (
            &gm,
            req(
                subject(Role::Platform, "p"),
                Profile::TlsClient,
                p256.clone(),
            ),
        ),
        (
            &intl,
            req(
                subject(Role::Platform, "p"),
                Profile::TlsClient,
                sm2.clone(),
            ),
        ),
        (
            &gm,
            req(subject(Role::Platform, "p"), Profile::Signing, p256),
        ),
        (
            &intl,
            req(
                subject(Role::Platform, "p"),
                Profile::Encryption,
                sm2.clone(),
            ),
        ),
        (
            &gm,
            req(subject(Role::Platform, "p"), Profile::Root, sm2.clone()),
        ),
        (
            &gm,
            req(
                Subject {
                    role: Role::Device,
                    name: "d".into(),
                    taxpayer_id: None,
                },
                Profile::Signing,
                sm2.clone(),
            ),
        ),
        (
            &gm,
            req(
                Subject {
                    role: Role::Cloud,
                    name: "c".into(),
                    taxpayer_id: Some("x".into()),
                },
                Profile::Signing,
                sm2.clone(),
            ),
        ),
        (
            &gm,
            req(
                Subject {
                    role: Role::Ca,
                    name: "c".into(),
                    taxpayer_id: None,
                },
                Profile::Signing,
                sm2,
            ),
        ),
    ];
    for (i, (pki, r)) in cases.into_iter().enumerate() {
        let err = pki.ca.issue(&r, &mut system_rng()).unwrap_err();
        assert!(
            matches!(
                err,
                CertError::ProfileKeyMismatch { .. }
                    | CertError::ProfileNotIssuable { .. }
                    | CertError::TaxpayerId { .. }
            ),
            "case {i}: {err:?}"
        );
    }
}

#[test]
fn subjects_round_trip_with_role_and_taxpayer_id() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (_, cert) = pki.issue(Role::Agent, "上海云帆-前置机-01", Profile::Signing);
        let s = cert.subject().unwrap();
        assert_eq!(
            (s.role, s.name.as_str(), s.taxpayer_id.as_deref()),
            (
                Role::Agent,
                "上海云帆-前置机-01",
                Some("91310115MA1FP0001X")
            )
        );
        assert_eq!(s.identity(), "agent:上海云帆-前置机-01");
        assert!(
            cert.describe()
                .contains("usage:       digitalSignature, nonRepudiation")
        );
    }
}

/// Parsing the same DER again gives the same certificate (from the parsed cache); a DER
/// altered by one byte is parsed on its own — to another certificate, or refused — and a
/// malformed one is refused every time.
#[test]
fn certificates_parsed_again_are_the_same_and_altered_ones_are_not() {
    use fapiao_crypto::Certificate;
    let pki = Pki::new(Suite::Gm);
    let (_, cert) = pki.issue(Role::Device, "device-cache", Profile::Signing);
    let der = cert.der().to_vec();
    let (a, b) = (
        Certificate::from_der(&der).unwrap(),
        Certificate::from_der(&der).unwrap(),
    );
    assert_eq!(a, cert);
    assert_eq!(a, b);
    assert_eq!(a.subject().unwrap().name, "device-cache");
    // The subject's last byte of the common name, altered.
    let at = der
        .windows(b"device-cache".len())
        .position(|w| w == b"device-cache")
        .unwrap()
        + b"device-cache".len()
        - 1;
    let mut altered = der.clone();
    altered[at] = b'X';
    let other = Certificate::from_der(&altered).unwrap();
    assert_ne!(other, cert);
    assert_eq!(other.subject().unwrap().name, "device-cachX");
    assert_eq!(Certificate::from_der(&der).unwrap(), cert);
    for _ in 0..2 {
        assert!(Certificate::from_der(&der[..der.len() - 1]).is_err());
    }
}

#[test]
fn people_hold_a_tls_client_certificate_only() {
    let pki = Pki::new(Suite::Intl);
    for role in [Role::Operator, Role::Auditor, Role::Monitor] {
        assert!(role.is_person() && !role.is_enterprise());
        assert_eq!(Role::parse(role.name()), Some(role));
        let (_, cert) = pki.issue(role, "zhang.wei", Profile::TlsClient);
        assert_eq!(
            cert.subject().unwrap().identity(),
            format!("{role}:zhang.wei")
        );
        let key = PrivateKey::generate(fapiao_crypto::KeyAlgorithm::P256, &mut system_rng());
        for profile in [Profile::Signing, Profile::Encryption] {
            let req = CertificateRequest {
                subject: subject(role, "zhang.wei"),
                profile,
                public_key: key.public_key(),
                not_before: NOW,
                not_after: NOW + time::Duration::days(30),
            };
            assert!(
                matches!(
                    pki.ca.issue(&req, &mut system_rng()),
                    Err(CertError::ProfileNotIssuable { .. })
                ),
                "{role}"
            );
        }
    }
    for role in [
        Role::Cloud,
        Role::Platform,
        Role::Tax,
        Role::Agent,
        Role::Device,
    ] {
        assert!(!role.is_person());
    }
}

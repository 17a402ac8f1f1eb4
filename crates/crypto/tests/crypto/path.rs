//! Path validation: every check fails with its own error, per suite.

use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{
    Ca, CertificateRequest, PathError, PrivateKey, Profile, Purpose, Role, Subject, Suite,
    TrustStore,
};
use time::Duration;

use crate::helpers::{NOW, Pki, subject};

#[test]
fn a_fresh_certificate_validates_for_its_purpose_only() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let trust = pki.trust();
        let (_, sign) = pki.issue(Role::Platform, "platform-1", Profile::Signing);
        let (_, enc) = pki.issue(Role::Platform, "platform-1", Profile::Encryption);
        let path = trust.validate(&sign, &[], Purpose::Signing, NOW).unwrap();
        assert_eq!(path.len(), 2);
        trust.validate(&enc, &[], Purpose::Encryption, NOW).unwrap();
        assert!(
            matches!(
                trust.validate(&enc, &[], Purpose::Signing, NOW),
                Err(PathError::WrongUsage { .. })
            ),
            "{suite}"
        );
        assert!(
            matches!(
                trust.validate(&sign, &[], Purpose::Encryption, NOW),
                Err(PathError::WrongUsage { .. })
            ),
            "{suite}"
        );
    }
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused_with_their_times() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (_, old) = pki.issue_with(
            Role::Cloud,
            "c",
            Profile::Signing,
            NOW - Duration::days(10),
            NOW - Duration::days(1),
        );
        let err = pki
            .trust()
            .validate(&old, &[], Purpose::Signing, NOW)
            .unwrap_err();
        assert!(
            matches!(err, PathError::Expired { now, .. } if now == NOW),
            "{err:?}"
        );
        let (_, future) = pki.issue_with(
            Role::Cloud,
            "c",
            Profile::Signing,
            NOW + Duration::days(1),
            NOW + Duration::days(10),
        );
        assert!(matches!(
            pki.trust().validate(&future, &[], Purpose::Signing, NOW),
            Err(PathError::NotYetValid { .. })
        ));
    }
}

#[test]
fn revoked_certificates_are_refused_and_only_the_newest_crl_counts() {
    for suite in Suite::ALL {
        let mut pki = Pki::new(suite);
        let (_, cert) = pki.issue(Role::Cloud, "c", Profile::Signing);
        let before = pki.crl();
        pki.revoke(&cert);
        let mut trust = pki.trust();
        // The stale CRL, listed first, must not hide the revocation.
        trust.set_crls(vec![before, pki.crl()]);
        assert!(
            matches!(
                trust.validate(&cert, &[], Purpose::Signing, NOW),
                Err(PathError::Revoked { .. })
            ),
            "{suite}"
        );
    }
}

#[test]
fn a_missing_or_stale_crl_fails_closed() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (_, cert) = pki.issue(Role::Cloud, "c", Profile::Signing);
        let no_crl = TrustStore::new(vec![pki.ca.certificate().clone()]).unwrap();
        assert!(matches!(
            no_crl.validate(&cert, &[], Purpose::Signing, NOW),
            Err(PathError::CrlMissing { .. })
        ));
        let later = NOW + Duration::days(8);
        let (_, long) = pki.issue_with(
            Role::Cloud,
            "c",
            Profile::Signing,
            NOW,
            NOW + Duration::days(30),
        );
        assert!(matches!(
            pki.trust().validate(&long, &[], Purpose::Signing, later),
            Err(PathError::CrlExpired { .. })
        ));
        // A CRL signed by another CA is not this CA's CRL.
        let mut forged = TrustStore::new(vec![pki.ca.certificate().clone()]).unwrap();
        forged.add_crl(Pki::new(suite).crl());
        assert!(matches!(
            forged.validate(&cert, &[], Purpose::Signing, NOW),
            Err(PathError::CrlMissing { .. })
        ));
    }
}

#[test]
fn certificates_of_another_ca_or_with_a_forged_issuer_are_refused() {
    for suite in Suite::ALL {
        let ours = Pki::new(suite);
        let theirs = Pki::new(suite);
        let (_, foreign) = theirs.issue(Role::Cloud, "c", Profile::Signing);
        // Same issuer name, other key: the name matches, the signature does not.
        assert!(
            matches!(
                ours.trust().validate(&foreign, &[], Purpose::Signing, NOW),
                Err(PathError::BadSignature { .. })
            ),
            "{suite}"
        );
        let stranger = {
            let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
            let s = Subject {
                role: Role::Ca,
                name: "Elsewhere Root".into(),
                taxpayer_id: None,
            };
            Ca::create_root(
                &s,
                key,
                NOW - Duration::days(1),
                NOW + Duration::days(10),
                &mut system_rng(),
            )
            .unwrap()
        };
        let key = PrivateKey::generate(suite.key_algorithm(), &mut system_rng());
        let req = CertificateRequest {
            subject: subject(Role::Cloud, "c"),
            profile: Profile::Signing,
            public_key: key.public_key(),
            not_before: NOW - Duration::days(1),
            not_after: NOW + Duration::days(1),
        };
        let other = stranger.issue(&req, &mut system_rng()).unwrap();
        assert!(matches!(
            ours.trust().validate(&other, &[], Purpose::Signing, NOW),
            Err(PathError::UnknownIssuer { .. })
        ));
    }
}

#[test]
fn a_leaf_cannot_act_as_an_issuer_and_roots_must_be_cas() {
    let pki = Pki::new(Suite::Intl);
    let (_, leaf) = pki.issue(Role::Cloud, "c", Profile::Signing);
    assert!(matches!(
        TrustStore::new(vec![leaf]),
        Err(PathError::BadTrustAnchor { .. })
    ));
}

/// The verified-signature cache saves only public-key operations: after a certificate has been
/// validated (and its signatures remembered), a CRL revoking it, the passing of its expiry, or
/// a stale CRL still fail the next validation; a certificate from another CA with the same
/// issuer name is never taken from the cache; and a clone shares what is remembered.
#[test]
fn the_signature_cache_never_outlives_a_revocation_or_an_expiry() {
    for suite in Suite::ALL {
        let mut pki = Pki::new(suite);
        let (_, cert) = pki.issue(Role::Cloud, "c", Profile::Signing);
        let mut trust = pki.trust();
        trust.validate(&cert, &[], Purpose::Signing, NOW).unwrap();
        let remembered = trust.signature_cache().len();
        assert!(
            remembered >= 2,
            "certificate and CRL signatures: {remembered}"
        );
        // Validating again verifies nothing new.
        trust.validate(&cert, &[], Purpose::Signing, NOW).unwrap();
        assert_eq!(trust.signature_cache().len(), remembered);

        // Past the certificate's end: refused although its signature is remembered.
        let later = NOW + Duration::days(400);
        assert!(
            matches!(
                trust.validate(&cert, &[], Purpose::Signing, later),
                Err(PathError::Expired { .. } | PathError::CrlExpired { .. })
            ),
            "{suite}"
        );
        // Past the CRL's next update: fails closed.
        assert!(
            matches!(
                trust.validate(&cert, &[], Purpose::Signing, NOW + Duration::days(30)),
                Err(PathError::CrlExpired { .. })
            ),
            "{suite}"
        );

        // Revoked: the newest CRL (its own signature verified once) refuses it at once. A
        // clone shares the cache, as every role's clones of its store do.
        pki.revoke(&cert);
        let shared = trust.clone();
        trust.add_crl(pki.crl());
        assert!(
            matches!(
                trust.validate(&cert, &[], Purpose::Signing, NOW),
                Err(PathError::Revoked { .. })
            ),
            "{suite}"
        );
        assert!(shared.signature_cache().len() > remembered);

        // Another CA's certificate under the same issuer name is refused, cached or not.
        let theirs = Pki::new(suite);
        let (_, foreign) = theirs.issue(Role::Cloud, "c", Profile::Signing);
        for _ in 0..2 {
            assert!(matches!(
                trust.validate(&foreign, &[], Purpose::Signing, NOW),
                Err(PathError::BadSignature { .. })
            ));
        }
    }
}

#[test]
fn what_a_certificate_signed_before_its_revocation_stays_valid_later() {
    use fapiao_crypto::Revocation;
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (_, cert) = pki.issue(Role::Cloud, "c", Profile::Signing);
        let revoked_at = NOW + Duration::days(20);
        // A CRL of a month later that lists the certificate from day 20.
        let later = pki
            .ca
            .crl(
                &[Revocation {
                    serial: cert.serial().to_vec(),
                    revoked_at,
                }],
                2,
                NOW + Duration::days(30),
                NOW + Duration::days(37),
            )
            .unwrap();
        let mut trust = TrustStore::new(vec![pki.ca.certificate().clone()]).unwrap();
        trust.add_crl(pki.crl());
        trust.add_crl(later);
        // Now (day 31) it is revoked; at day 5 it was valid, and the newer CRL says so
        // without being "not current" at day 5; at day 25 it was already revoked.
        let day = |d| NOW + Duration::days(d);
        assert!(matches!(
            trust.validate(&cert, &[], Purpose::Signing, day(31)),
            Err(PathError::Revoked { .. })
        ));
        assert!(matches!(
            trust.validate(&cert, &[], Purpose::Signing, day(5)),
            Err(PathError::CrlExpired { .. })
        ));
        trust
            .validate_at(&cert, &[], Purpose::Signing, day(5))
            .unwrap();
        assert!(matches!(
            trust.validate_at(&cert, &[], Purpose::Signing, revoked_at),
            Err(PathError::Revoked { .. })
        ));
        assert!(matches!(
            trust.validate_at(&cert, &[], Purpose::Signing, day(25)),
            Err(PathError::Revoked { .. })
        ));
        // Without a CRL issued since or current then, the status at day 50 is unknown.
        assert!(matches!(
            trust.validate_at(&cert, &[], Purpose::Signing, day(50)),
            Err(PathError::CrlExpired { .. })
        ));
        // The certificate's own validity still counts at the time.
        assert!(matches!(
            trust.validate_at(&cert, &[], Purpose::Signing, day(400)),
            Err(PathError::Expired { .. })
        ));
    }
}

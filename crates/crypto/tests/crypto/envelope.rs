//! Sealing and opening: round trips and every opening check, once per suite.

use fapiao_crypto::envelope::{
    self, Header, MemoryReplayGuard, Message, OpenError, Opener, hazmat, seal,
};
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{PathError, Profile, Role, Suite};
use time::Duration;

use crate::helpers::{NOW, Pki, message, open_fresh, party};

#[test]
fn sealed_messages_open_with_their_header_and_payload() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (cloud, platform) = (
            party(&pki, Role::Cloud, "cloud-1"),
            party(&pki, Role::Platform, "platform-1"),
        );
        let msg = message(&cloud, &platform, "m-1");
        let sealed = seal(
            &cloud,
            platform.encryption_certificate(),
            &msg,
            &mut system_rng(),
        )
        .unwrap();
        let opened = open_fresh(&pki, &platform, &sealed).unwrap();
        assert_eq!(opened.message, msg, "{suite}");
        assert_eq!(opened.signer_subject.identity(), "cloud:cloud-1");
        // The payload is not visible in the envelope.
        assert!(
            !sealed.windows(8).any(|w| w == &msg.payload[..8]),
            "{suite}"
        );
    }
}

#[test]
fn garbage_and_the_other_suite_are_malformed() {
    let gm = Pki::new(Suite::Gm);
    let intl = Pki::new(Suite::Intl);
    let (a, b) = (
        party(&intl, Role::Cloud, "c"),
        party(&intl, Role::Platform, "p"),
    );
    let intl_env = seal(
        &a,
        b.encryption_certificate(),
        &message(&a, &b, "1"),
        &mut system_rng(),
    )
    .unwrap();
    let gm_platform = party(&gm, Role::Platform, "p");
    let trust = gm.trust();
    let guard = MemoryReplayGuard::new();
    let opener = Opener::new(&gm_platform, &trust, &guard);
    assert_eq!(
        opener.open(b"not an envelope", NOW).unwrap_err(),
        OpenError::Malformed
    );
    assert_eq!(
        opener.open(&intl_env, NOW).unwrap_err(),
        OpenError::Malformed
    );
}

#[test]
fn an_envelope_for_someone_else_is_not_for_us() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (cloud, platform, tax) = (
            party(&pki, Role::Cloud, "c"),
            party(&pki, Role::Platform, "p"),
            party(&pki, Role::Tax, "t"),
        );
        let sealed = seal(
            &cloud,
            tax.encryption_certificate(),
            &message(&cloud, &tax, "1"),
            &mut system_rng(),
        )
        .unwrap();
        assert_eq!(
            open_fresh(&pki, &platform, &sealed).unwrap_err(),
            OpenError::NotForUs,
            "{suite}"
        );
    }
}

#[test]
fn a_message_re_encrypted_to_another_recipient_is_refused() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (cloud, platform, tax) = (
            party(&pki, Role::Cloud, "c"),
            party(&pki, Role::Platform, "p"),
            party(&pki, Role::Tax, "t"),
        );
        let sealed = seal(
            &cloud,
            platform.encryption_certificate(),
            &message(&cloud, &platform, "1"),
            &mut system_rng(),
        )
        .unwrap();
        // The platform decrypts and forwards the cloud's signed message to tax.
        let signed = hazmat::decrypt(&platform, &sealed).unwrap();
        let forwarded = hazmat::encrypt(
            suite,
            tax.encryption_certificate(),
            &signed,
            &mut system_rng(),
        )
        .unwrap();
        let err = open_fresh(&pki, &tax, &forwarded).unwrap_err();
        assert_eq!(
            err,
            OpenError::WrongRecipient {
                recipient: "platform:p".into()
            },
            "{suite}"
        );
        assert_eq!(err.peer_code(), "envelope_rejected");
    }
}

#[test]
fn a_changed_payload_breaks_the_signature() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (cloud, platform) = (
            party(&pki, Role::Cloud, "c"),
            party(&pki, Role::Platform, "p"),
        );
        let msg = message(&cloud, &platform, "1");
        let mut signed = hazmat::sign(&cloud, &msg).unwrap().to_vec();
        let at = signed.windows(5).position(|w| w == b"16960").unwrap();
        signed[at] = b'9';
        let forged = hazmat::encrypt(
            suite,
            platform.encryption_certificate(),
            &signed,
            &mut system_rng(),
        )
        .unwrap();
        assert_eq!(
            open_fresh(&pki, &platform, &forged).unwrap_err(),
            OpenError::BadSignature,
            "{suite}"
        );
    }
}

#[test]
fn a_sender_claiming_another_identity_is_refused() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (cloud, platform) = (
            party(&pki, Role::Cloud, "c"),
            party(&pki, Role::Platform, "p"),
        );
        let mut msg = message(&cloud, &platform, "1");
        msg.header.sender = "tax:t".into();
        assert!(
            seal(
                &cloud,
                platform.encryption_certificate(),
                &msg,
                &mut system_rng()
            )
            .is_err()
        );
        let signed = hazmat::sign(&cloud, &msg).unwrap();
        let env = hazmat::encrypt(
            suite,
            platform.encryption_certificate(),
            &signed,
            &mut system_rng(),
        )
        .unwrap();
        assert!(
            matches!(
                open_fresh(&pki, &platform, &env),
                Err(OpenError::SenderMismatch { .. })
            ),
            "{suite}"
        );
    }
}

#[test]
fn signer_certificates_must_be_valid_unrevoked_and_for_signing() {
    for suite in Suite::ALL {
        let mut pki = Pki::new(suite);
        let platform = party(&pki, Role::Platform, "p");
        let open = |pki: &Pki, from: &envelope::LocalParty| {
            let env = seal(
                from,
                platform.encryption_certificate(),
                &message(from, &platform, "1"),
                &mut system_rng(),
            )
            .unwrap();
            open_fresh(pki, &platform, &env).unwrap_err()
        };
        // Expired.
        let (sk, sc) = pki.issue_with(
            Role::Cloud,
            "c",
            Profile::Signing,
            NOW - Duration::days(30),
            NOW - Duration::days(1),
        );
        let (ek, ec) = pki.issue(Role::Cloud, "c", Profile::Encryption);
        let expired =
            envelope::LocalParty::new(suite, sk, sc, ek.clone(), ec.clone(), vec![]).unwrap();
        assert!(
            matches!(
                open(&pki, &expired),
                OpenError::Certificate(PathError::Expired { .. })
            ),
            "{suite}"
        );
        // Wrong usage: an encryption certificate used to sign.
        let wrong = envelope::LocalParty::new(
            suite,
            ek.clone(),
            ec.clone(),
            ek.clone(),
            ec.clone(),
            vec![],
        )
        .unwrap();
        assert!(
            matches!(
                open(&pki, &wrong),
                OpenError::Certificate(PathError::WrongUsage { .. })
            ),
            "{suite}"
        );
        // Unknown CA.
        let stranger = party(&Pki::new(suite), Role::Cloud, "c");
        assert!(
            matches!(
                open(&pki, &stranger),
                OpenError::Certificate(
                    PathError::BadSignature { .. } | PathError::UnknownIssuer { .. }
                )
            ),
            "{suite}"
        );
        // Revoked.
        let cloud = party(&pki, Role::Cloud, "c");
        pki.revoke(cloud.signing_certificate());
        assert!(
            matches!(
                open(&pki, &cloud),
                OpenError::Certificate(PathError::Revoked { .. })
            ),
            "{suite}"
        );
    }
}

#[test]
fn unsupported_versions_stale_messages_and_replays_are_refused() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (cloud, platform) = (
            party(&pki, Role::Cloud, "c"),
            party(&pki, Role::Platform, "p"),
        );
        let trust = pki.trust();
        let guard = MemoryReplayGuard::new();
        let opener = Opener::new(&platform, &trust, &guard);
        let sealed = |m: &Message| {
            seal(
                &cloud,
                platform.encryption_certificate(),
                m,
                &mut system_rng(),
            )
            .unwrap()
        };

        let mut v2 = message(&cloud, &platform, "v2");
        v2.header.protocol_version = 2;
        assert!(matches!(
            opener.open(&sealed(&v2), NOW),
            Err(OpenError::UnsupportedVersion { version: 2, .. })
        ));
        let newer = Opener::new(&platform, &trust, &guard).versions(1..=2);
        newer.open(&sealed(&v2), NOW).unwrap();

        let mut old = message(&cloud, &platform, "old");
        old.header.created_at = NOW - Duration::minutes(6);
        assert!(
            matches!(
                opener.open(&sealed(&old), NOW),
                Err(OpenError::Stale {
                    window_seconds: 300,
                    ..
                })
            ),
            "{suite}"
        );
        let mut future = message(&cloud, &platform, "future");
        future.header.created_at = NOW + Duration::minutes(6);
        assert!(matches!(
            opener.open(&sealed(&future), NOW),
            Err(OpenError::Stale { .. })
        ));
        let wide = Opener::new(&platform, &trust, &guard).freshness(Duration::minutes(10));
        wide.open(&sealed(&old), NOW).unwrap();

        let once = sealed(&message(&cloud, &platform, "once"));
        opener.open(&once, NOW).unwrap();
        let err = opener.open(&once, NOW + Duration::seconds(1)).unwrap_err();
        assert_eq!(
            err,
            OpenError::Replayed {
                sender: "cloud:c".into(),
                message_id: "once".into()
            },
            "{suite}"
        );
        // The same id sealed afresh is a replay too.
        assert!(matches!(
            opener.open(&sealed(&message(&cloud, &platform, "once")), NOW),
            Err(OpenError::Replayed { .. })
        ));
    }
}

/// A guard whose ids expire long before the map could double sweeps them a minute after its
/// last sweep all the same: its size follows the live ids, not twice them.
#[test]
fn the_memory_replay_guard_sweeps_at_least_every_minute() {
    use fapiao_crypto::envelope::ReplayGuard;
    let guard = MemoryReplayGuard::new();
    let floor = MemoryReplayGuard::SWEEP_FLOOR;
    let remember = |id: String, expires, now| {
        guard
            .check_and_remember("cloud:c", &id, expires, now)
            .unwrap()
    };
    for i in 0..floor {
        assert!(remember(format!("live-{i}"), NOW + Duration::days(1), NOW));
    }
    // At the floor: swept (nothing expired), the next sweep due at twice this or a minute on.
    let at = NOW + Duration::seconds(1);
    assert!(remember("first".into(), NOW + Duration::days(1), at));
    for i in 0..floor / 2 {
        assert!(remember(
            format!("short-{i}"),
            at + Duration::seconds(1),
            at
        ));
    }
    assert_eq!(guard.len(), floor + 1 + floor / 2);
    // Far below twice the live ids, but a minute later: the expired ones go.
    let later = at + MemoryReplayGuard::SWEEP_EVERY;
    assert!(remember(
        "later".into(),
        later + Duration::seconds(1),
        later
    ));
    assert_eq!(guard.len(), floor + 2, "the live ids and the new one");
    assert!(!remember("live-1".into(), later + Duration::days(1), later));
    assert!(remember(
        "short-1".into(),
        later + Duration::seconds(1),
        later
    ));
}

#[test]
fn the_memory_replay_guard_sweeps_expired_ids_and_stays_bounded() {
    use fapiao_crypto::envelope::ReplayGuard;
    let guard = MemoryReplayGuard::new();
    let floor = MemoryReplayGuard::SWEEP_FLOOR;
    // Ids live for the whole test: none may be swept, each stays a replay.
    for i in 0..floor {
        assert!(
            guard
                .check_and_remember(
                    "cloud:c",
                    &format!("live-{i}"),
                    NOW + Duration::days(1),
                    NOW
                )
                .unwrap()
        );
    }
    // Ten windows of ids that expire a second after they arrive, one a second.
    for i in 0..10 * floor {
        let at = NOW + Duration::seconds(i64::try_from(i).unwrap());
        assert!(
            guard
                .check_and_remember(
                    "cloud:c",
                    &format!("short-{i}"),
                    at + Duration::seconds(1),
                    at
                )
                .unwrap()
        );
    }
    // Expired ids went (the map holds at most about twice the live ones, never every id
    // ever seen), and an expired id is fresh again.
    assert!(guard.len() <= 2 * floor + 2, "{} ids held", guard.len());
    let late = NOW + Duration::seconds(i64::try_from(10 * floor).unwrap());
    assert!(
        guard
            .check_and_remember("cloud:c", "short-0", late + Duration::seconds(1), late)
            .unwrap()
    );
    // A live id is still refused after every sweep.
    assert!(
        !guard
            .check_and_remember("cloud:c", "live-7", late + Duration::days(1), late)
            .unwrap()
    );
}

#[test]
fn every_single_byte_change_is_rejected_without_panicking() {
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (cloud, platform) = (
            party(&pki, Role::Cloud, "c"),
            party(&pki, Role::Platform, "p"),
        );
        let sealed = seal(
            &cloud,
            platform.encryption_certificate(),
            &message(&cloud, &platform, "t"),
            &mut system_rng(),
        )
        .unwrap();
        let trust = pki.trust();
        let mut accepted = Vec::new();
        for i in 0..sealed.len() {
            for delta in [0x01_u8, 0x80] {
                let mut bytes = sealed.clone();
                bytes[i] ^= delta;
                let guard = MemoryReplayGuard::new();
                if Opener::new(&platform, &trust, &guard)
                    .open(&bytes, NOW)
                    .is_ok()
                {
                    accepted.push((i, delta));
                }
            }
        }
        assert!(
            accepted.is_empty(),
            "{suite}: accepted changes at {accepted:?} of {}",
            sealed.len()
        );
        // And truncation at every length.
        for len in 0..sealed.len() {
            let guard = MemoryReplayGuard::new();
            assert!(
                Opener::new(&platform, &trust, &guard)
                    .open(&sealed[..len], NOW)
                    .is_err()
            );
        }
    }
}

/// Where `needle` starts in `haystack` (once).
fn offset_of(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap()
}

#[test]
fn after_key_transport_every_failure_looks_the_same() {
    // The padding-oracle attack changes one byte of the content at a time (all 255 values of
    // the last bytes) and watches for a different answer. With AEAD content every change to
    // the nonce, the ciphertext or the tag is the one `Undecryptable`, and that is told and
    // counted exactly as a valid encryption of a forged signature is.
    for suite in Suite::ALL {
        let pki = Pki::new(suite);
        let (cloud, platform) = (
            party(&pki, Role::Cloud, "c"),
            party(&pki, Role::Platform, "p"),
        );
        let sealed = seal(
            &cloud,
            platform.encryption_certificate(),
            &message(&cloud, &platform, "oracle"),
            &mut system_rng(),
        )
        .unwrap();
        let layers = hazmat::enveloped(&sealed).unwrap();
        let ct = offset_of(&sealed, &layers.ciphertext);
        let ct_end = ct + layers.ciphertext.len();
        let tag = offset_of(&sealed, &layers.tag);
        let nonce = offset_of(&sealed, &layers.nonce);
        let mut changes: Vec<(usize, u8)> = Vec::new();
        for i in [ct, ct_end - 17, ct_end - 1, tag + 15] {
            changes.extend((1..=255).map(|d| (i, d)));
        }
        changes.extend((ct..ct_end).chain(tag..tag + 16).map(|i| (i, 0x01)));
        changes.extend((nonce..nonce + 12).map(|i| (i, 0x80)));
        for (i, delta) in changes {
            let mut bytes = sealed.clone();
            bytes[i] ^= delta;
            assert_eq!(
                open_fresh(&pki, &platform, &bytes).unwrap_err(),
                OpenError::Undecryptable,
                "{suite}: byte {i} ^ {delta:#04x}"
            );
        }

        let mut msg = message(&cloud, &platform, "forged");
        msg.header.sender = "tax:t".into();
        let forged = hazmat::encrypt(
            suite,
            platform.encryption_certificate(),
            &hazmat::sign(&cloud, &msg).unwrap(),
            &mut system_rng(),
        )
        .unwrap();
        let after = open_fresh(&pki, &platform, &forged).unwrap_err();
        assert!(matches!(after, OpenError::SenderMismatch { .. }));
        for e in [OpenError::Undecryptable, after, OpenError::BadSignature] {
            assert_eq!(
                (e.peer_code(), e.reason()),
                ("envelope_rejected", "rejected"),
                "{e:?}"
            );
        }
    }
}

#[test]
fn the_header_round_trips_through_der() {
    let h = Header {
        protocol_version: 7,
        sender: "device:设备-1".into(),
        recipient: "tax:t".into(),
        message_type: "invoice.upload".into(),
        message_id: "01J".into(),
        created_at: NOW,
    };
    let m = Message {
        header: h,
        payload: vec![0, 1, 2, 255],
    };
    assert_eq!(Message::from_der(&m.to_der().unwrap()).unwrap(), m);
}

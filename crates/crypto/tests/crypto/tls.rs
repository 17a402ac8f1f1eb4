//! Mutual TLS on loopback with the configurations built from our PKI.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;

use fapiao_crypto::tls::{ClientAuth, TlsIdentity, client_config, peer_subject, server_config};
use fapiao_crypto::{Profile, Role, Suite};
use rustls::pki_types::ServerName;
use time::{Duration, OffsetDateTime};

use crate::helpers::{Pki, run, write};

/// rustls checks certificates and CRLs against the wall clock: these are made for it.
#[expect(
    clippy::disallowed_methods,
    reason = "TLS handshakes read the wall clock"
)]
fn wall() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn identity(pki: &Pki, role: Role, name: &str, profile: Profile) -> TlsIdentity {
    let (key, cert) = pki.issue_with(
        role,
        name,
        profile,
        wall() - Duration::days(1),
        wall() + Duration::days(365),
    );
    TlsIdentity::new(vec![cert], key).unwrap()
}

fn server_profile() -> Profile {
    Profile::TlsServer {
        dns_names: vec!["localhost".into()],
        ip_addresses: vec!["127.0.0.1".parse().unwrap()],
    }
}

/// Serves one connection: returns the client's identity, or the handshake error.
fn serve_once(config: rustls::ServerConfig) -> (u16, thread::JoinHandle<Result<String, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let (sock, _) = listener.accept().map_err(|e| e.to_string())?;
        let conn = rustls::ServerConnection::new(Arc::new(config)).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut buf = [0_u8; 5];
        tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
        tls.write_all(b"pong!").map_err(|e| e.to_string())?;
        let who = peer_subject(tls.conn.peer_certificates().unwrap_or_default())
            .map(|s| s.identity())
            .unwrap_or_default();
        Ok(format!("{who} {:?}", tls.conn.protocol_version().unwrap()))
    });
    (port, handle)
}

fn ping(port: u16, config: rustls::ClientConfig) -> Result<(), String> {
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"ping!").map_err(|e| e.to_string())?;
    let mut buf = [0_u8; 5];
    tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
    Ok(())
}

#[test]
fn roles_authenticate_each_other_and_the_server_learns_who_called() {
    let pki = Pki::new(Suite::Intl);
    let trust = pki.trust_at(wall());
    let server = server_config(
        &identity(&pki, Role::Platform, "platform-1", server_profile()),
        &trust,
        ClientAuth::Required,
    )
    .unwrap();
    let (port, handle) = serve_once(server);
    let client = client_config(
        Some(&identity(&pki, Role::Cloud, "cloud-1", Profile::TlsClient)),
        &trust,
    )
    .unwrap();
    ping(port, client).unwrap();
    let seen = handle.join().unwrap().unwrap();
    assert!(seen.starts_with("cloud:cloud-1 TLSv1_3"), "{seen}");
}

#[test]
fn clients_without_a_certificate_revoked_or_from_another_ca_are_refused() {
    let mut pki = Pki::new(Suite::Intl);
    let revoked_leaf = {
        let (key, cert) = pki.issue_with(
            Role::Cloud,
            "cloud-9",
            Profile::TlsClient,
            wall() - Duration::days(1),
            wall() + Duration::days(365),
        );
        pki.revoke(&cert);
        TlsIdentity::new(vec![cert], key).unwrap()
    };
    let trust = pki.trust_at(wall());
    let other = Pki::new(Suite::Intl);
    let server_id = identity(&pki, Role::Platform, "platform-1", server_profile());
    let cases: Vec<(&str, Option<TlsIdentity>)> = vec![
        ("no certificate", None),
        ("revoked", Some(revoked_leaf)),
        (
            "other CA",
            Some(identity(&other, Role::Cloud, "cloud-1", Profile::TlsClient)),
        ),
        (
            "server certificate as client",
            Some(identity(&pki, Role::Cloud, "cloud-1", server_profile())),
        ),
    ];
    for (case, id) in cases {
        let (port, handle) =
            serve_once(server_config(&server_id, &trust, ClientAuth::Required).unwrap());
        // The client may only notice on its read; the server must refuse in any case.
        let _ = ping(port, client_config(id.as_ref(), &trust).unwrap());
        let result = handle.join().unwrap();
        assert!(result.is_err(), "{case}: server accepted {result:?}");
    }
}

#[test]
fn openssl_speaks_tls_1_2_and_1_3_to_us_but_not_1_1() {
    let pki = Pki::new(Suite::Intl);
    let trust = pki.trust_at(wall());
    let dir = tempfile::tempdir().unwrap();
    let root = write(
        dir.path(),
        "root.pem",
        pki.ca.certificate().to_pem().unwrap(),
    );
    let (ckey, ccert) = pki.issue_with(
        Role::Cloud,
        "cloud-1",
        Profile::TlsClient,
        wall() - Duration::days(1),
        wall() + Duration::days(365),
    );
    let cert = write(dir.path(), "client.pem", ccert.to_pem().unwrap());
    let key = write(dir.path(), "client.key", crate::helpers::key_pem(&ckey));
    // SECLEVEL=0 lets the OpenSSL client offer TLS 1.1 at all: the refusal must be ours.
    for (flag, expect_ok) in [
        ("-tls1_3", true),
        ("-tls1_2", true),
        ("-tls1_1 -cipher DEFAULT@SECLEVEL=0", false),
    ] {
        let server = server_config(
            &identity(&pki, Role::Platform, "platform-1", server_profile()),
            &trust,
            ClientAuth::Required,
        )
        .unwrap();
        let (port, handle) = serve_once(server);
        let connect = format!("127.0.0.1:{port}");
        // The server's certificate checked at the time it was made for.
        let at = wall().unix_timestamp();
        let script = format!(
            "printf ping! | timeout 10 openssl s_client -connect {connect} {flag} -CAfile {root} -cert {cert} -key {key} -attime {at} -verify_return_error -ign_eof"
        );
        let (_, out) = run("bash", &["-c", &script]);
        let served = handle.join().unwrap();
        assert_eq!(served.is_ok(), expect_ok, "{flag}: {out} / {served:?}");
        if !expect_ok {
            // The server refused the version (not the client giving up before trying).
            // (rustls answers a TLS 1.1 hello, which has no signature_algorithms, with a
            // handshake_failure alert: "peer is incompatible".)
            assert!(
                format!("{served:?}").contains("incompatible") && out.contains("alert"),
                "{out} / {served:?}"
            );
        }
    }
}

#[test]
fn a_crl_reloaded_while_serving_refuses_the_next_handshake_and_an_outdated_crl_refuses_all() {
    use fapiao_crypto::LiveTrust;
    let mut pki = Pki::new(Suite::Intl);
    let live = LiveTrust::new(pki.trust_at(wall()));
    let server_id = identity(&pki, Role::Platform, "platform-1", server_profile());
    let (ckey, ccert) = pki.issue_with(
        Role::Agent,
        "agent-1",
        Profile::TlsClient,
        wall() - Duration::days(1),
        wall() + Duration::days(365),
    );
    let client_id = TlsIdentity::new(vec![ccert.clone()], ckey).unwrap();
    // One server configuration throughout, as a running role has.
    let server = server_config(&server_id, &live, ClientAuth::Required).unwrap();
    let handshake = |trust_for_client: &fapiao_crypto::TrustStore| {
        let (port, handle) = serve_once(server.clone());
        let _ = ping(
            port,
            client_config(Some(&client_id), trust_for_client).unwrap(),
        );
        handle.join().unwrap()
    };
    let client_trust = pki.trust_at(wall());
    assert!(handshake(&client_trust).is_ok());
    pki.revoke(&ccert);
    live.replace(pki.trust_at(wall()));
    let refused = handshake(&client_trust).unwrap_err();
    assert!(refused.to_lowercase().contains("revoked"), "{refused}");

    // A CRL whose next update has passed refuses every client of its CA; a grace covers it.
    let fresh = Pki::new(Suite::Intl);
    let (k, c) = fresh.issue_with(
        Role::Agent,
        "agent-2",
        Profile::TlsClient,
        wall() - Duration::days(1),
        wall() + Duration::days(365),
    );
    let client_id = TlsIdentity::new(vec![c], k).unwrap();
    let server_id = identity(&fresh, Role::Platform, "platform-1", server_profile());
    let mut outdated = fresh.trust_at(wall() - Duration::days(8));
    let try_with = |trust: &fapiao_crypto::TrustStore| {
        let (port, handle) =
            serve_once(server_config(&server_id, trust, ClientAuth::Required).unwrap());
        let _ = ping(
            port,
            client_config(Some(&client_id), fresh.trust_at(wall())).unwrap(),
        );
        handle.join().unwrap()
    };
    let refused = try_with(&outdated).unwrap_err();
    assert!(refused.to_lowercase().contains("revocation"), "{refused}");
    outdated.set_crl_grace(Duration::days(2));
    try_with(&outdated).unwrap();
}

//! The accept loop over real TLS on loopback: the router sees who called.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::tls::{ClientAuth, TlsIdentity, client_config, server_config};
use fapiao_crypto::{
    Ca, CertificateRequest, PrivateKey, Profile, Revocation, Role, Subject, Suite, TrustStore,
};
use fapiao_service::{PeerIdentity, serve_tls};
use rustls::pki_types::ServerName;
use time::{Duration, OffsetDateTime};

struct Pki {
    ca: Ca,
}

impl Pki {
    fn new() -> Self {
        // Real time: rustls checks validity against the system clock.
        #[expect(
            clippy::disallowed_methods,
            reason = "rustls verifies against the real clock"
        )]
        let now = OffsetDateTime::now_utc();
        let key = PrivateKey::generate(Suite::Intl.key_algorithm(), &mut system_rng());
        let s = Subject {
            role: Role::Ca,
            name: "Service Test Root".into(),
            taxpayer_id: None,
        };
        Self {
            ca: Ca::create_root(
                &s,
                key,
                now - Duration::days(1),
                now + Duration::days(30),
                &mut system_rng(),
            )
            .unwrap(),
        }
    }

    fn identity(&self, role: Role, name: &str, profile: Profile) -> TlsIdentity {
        #[expect(
            clippy::disallowed_methods,
            reason = "rustls verifies against the real clock"
        )]
        let now = OffsetDateTime::now_utc();
        let key = PrivateKey::generate(fapiao_crypto::KeyAlgorithm::P256, &mut system_rng());
        let taxpayer_id = role
            .is_enterprise()
            .then(|| "91310115MA1FP0001X".to_owned());
        let req = CertificateRequest {
            subject: Subject {
                role,
                name: name.into(),
                taxpayer_id,
            },
            profile,
            public_key: key.public_key(),
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(1),
        };
        TlsIdentity::new(vec![self.ca.issue(&req, &mut system_rng()).unwrap()], key).unwrap()
    }

    fn trust(&self) -> TrustStore {
        #[expect(
            clippy::disallowed_methods,
            reason = "rustls verifies against the real clock"
        )]
        let now = OffsetDateTime::now_utc();
        let mut t = TrustStore::new(vec![self.ca.certificate().clone()]).unwrap();
        let none: [Revocation; 0] = [];
        t.add_crl(
            self.ca
                .crl(&none, 1, now - Duration::hours(1), now + Duration::days(1))
                .unwrap(),
        );
        t
    }
}

fn router() -> Router {
    Router::new().route("/whoami", get(|peer: PeerIdentity| async move { format!("{} {:?}", peer.identity(), peer.taxpayer_id) }))
}

/// One HTTP/1.1 GET over TLS; returns the raw response.
fn get_whoami(port: u16, client: rustls::ClientConfig) -> Result<String, String> {
    let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let conn =
        rustls::ClientConnection::new(Arc::new(client), ServerName::try_from("localhost").unwrap())
            .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    tls.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn server_profile() -> Profile {
    Profile::TlsServer {
        dns_names: vec!["localhost".into()],
        ip_addresses: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_the_verified_peer_and_shutdown_is_clean() {
    let pki = Pki::new();
    let trust = pki.trust();
    let server = server_config(
        &pki.identity(Role::Platform, "platform-1", server_profile()),
        &trust,
        ClientAuth::Required,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = serve_tls(listener, Arc::new(server), router()).unwrap();
    let port = running.local_addr().port();

    let agent = client_config(
        Some(&pki.identity(Role::Agent, "agent-1", Profile::TlsClient)),
        &trust,
    )
    .unwrap();
    let response = tokio::task::spawn_blocking(move || get_whoami(port, agent))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with("agent:agent-1 Some(\"91310115MA1FP0001X\")"),
        "{response}"
    );

    // Without a client certificate the handshake itself fails: the router never runs.
    let anonymous = client_config(None, &trust).unwrap();
    let refused = tokio::task::spawn_blocking(move || get_whoami(port, anonymous))
        .await
        .unwrap();
    assert!(
        refused.is_err() || !refused.as_ref().unwrap().contains("200"),
        "{refused:?}"
    );

    running.shutdown().await;
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the listener is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_without_client_certificates_answers_401_to_peer_only_routes() {
    let pki = Pki::new();
    let trust = pki.trust();
    let server = server_config(
        &pki.identity(Role::Cloud, "cloud-1", server_profile()),
        &trust,
        ClientAuth::None,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = serve_tls(listener, Arc::new(server), router()).unwrap();
    let port = running.local_addr().port();
    let anonymous = client_config(None, &trust).unwrap();
    let response = tokio::task::spawn_blocking(move || get_whoami(port, anonymous))
        .await
        .unwrap()
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    running.shutdown().await;
}

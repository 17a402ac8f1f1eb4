//! Revocation while the roles run: an agent's certificates revoked with the one revocation
//! command of the development CA are refused by a running platform within its CRL reload
//! interval — envelopes, new TLS connections and connections opened before — and by cloud at
//! once after `POST /admin/crls/reload`; no role restarts.

use fapiao_crypto::Certificate;
use fapiao_system::RoleConfig;
use http::Method;
use serde_json::json;

use crate::helpers::*;

/// The certificate at `pki/<name>.crt.pem` of the data directory.
fn cert(env: &Env, name: &str) -> Certificate {
    let path = env.system.layout.dir().join(format!("pki/{name}.crt.pem"));
    Certificate::from_pem(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Polls `f` every 100 ms for up to `seconds`; how many polls it took.
async fn within<F, Fut>(seconds: u64, what: &str, mut f: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for i in 0..seconds * 10 {
        if f().await {
            return i;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: not within {seconds} s");
}

fn answer_code(r: &fapiao_protocol::Response) -> (u16, String) {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    (r.status, v["code"].as_str().unwrap_or("").to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_revoked_while_running_is_refused_without_a_restart() {
    let mut env = Env::start().await;
    // Platform reads its CRL files every second (cloud keeps the default minute).
    let path = env.system.layout.config_path("platform");
    let mut cfg = RoleConfig::load(&path).unwrap();
    cfg.material.crl_reload_seconds = Some(1);
    std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
    env.system.stop("platform").await;
    env.system.restart("platform").await.unwrap();

    let layout = env.system.layout.clone();
    let agent_prefix = layout.pki_prefix("agent");
    // The agent's connection to platform, opened before any revocation and kept open.
    let agent = Sender::new(&env, &agent_prefix);
    let probe = |s: &Sender| s.seal("order.issue", 99, &json!({}));
    assert_eq!(agent.post(probe(&agent)).await.status, 200);

    // Its signing certificate revoked: its next envelopes are refused, over the same TLS.
    assert!(
        layout
            .revoke_serial(&cert(&env, "agent.sign").serial_hex(), crate::now())
            .unwrap()
    );
    let polls = within(5, "a revoked signer's envelope refused", || async {
        answer_code(&agent.post(probe(&agent)).await) == (403, "envelope_rejected".into())
    })
    .await;
    eprintln!("envelopes refused after {polls} polls of 100 ms");

    // Its TLS client certificate revoked: a new connection fails the handshake, and the
    // connection opened before is no longer taken as the agent's.
    assert!(
        layout
            .revoke_serial(&cert(&env, "agent.tls-client").serial_hex(), crate::now())
            .unwrap()
    );
    within(5, "the open connection no longer the agent's", || async {
        answer_code(&agent.post(probe(&agent)).await) == (401, "peer_certificate_required".into())
    })
    .await;
    let fresh = Sender::new(&env, &agent_prefix);
    let r = fresh
        .http
        .request(
            Method::POST,
            "/v1/envelope",
            &[("content-type", "application/fapiao-envelope".into())],
            probe(&fresh),
        )
        .await;
    assert!(
        r.is_err(),
        "a new connection was accepted: {:?}",
        r.map(|r| r.status)
    );

    // Cloud reads its CRLs only every minute: the operator makes it reload now.
    let to_cloud = Sender::to(&env, &agent_prefix, "cloud", env.system.ports.cloud);
    let admin = operator(&env, env.system.ports.cloud_admin);
    let r = admin
        .request(Method::POST, "/admin/crls/reload", &[], Vec::new())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((r.status, v["changed"].as_bool()), (200, Some(true)), "{v}");
    assert!(
        v["crls"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["revoked"] == 2),
        "{v}"
    );
    assert!(
        to_cloud
            .http
            .request(Method::GET, "/healthz", &[], Vec::new())
            .await
            .is_err()
    );
    // Again: nothing changed.
    let r = admin
        .request(Method::POST, "/admin/crls/reload", &[], Vec::new())
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["changed"], false, "{v}");

    // The revocations are in the list `up` publishes its CRLs from at every start.
    layout.write_crls(crate::now()).unwrap();
    let crl = fapiao_crypto::Crl::from_pem(
        &std::fs::read_to_string(layout.dir().join("ca/gm/crl.pem")).unwrap(),
    )
    .unwrap();
    assert_eq!(crl.revoked_serials().len(), 2);
    assert!(
        !layout
            .revoke_serial(&cert(&env, "agent.sign").serial_hex(), crate::now())
            .unwrap(),
        "revoking twice changes nothing"
    );
    env.system.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_file_cut_short_leaves_the_revocations_in_force() {
    let env = Env::start().await;
    let layout = env.system.layout.clone();
    assert!(
        layout
            .revoke_serial(&cert(&env, "agent.sign").serial_hex(), crate::now())
            .unwrap()
    );
    let admin = operator(&env, env.system.ports.platform_admin);
    let reload = || async {
        let r = admin
            .request(Method::POST, "/admin/crls/reload", &[], Vec::new())
            .await
            .unwrap();
        (
            r.status,
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap(),
        )
    };
    assert_eq!(reload().await.0, 200);
    let agent = Sender::new(&env, &layout.pki_prefix("agent"));
    // A write cut short (full disk): the file is refused, the CRL in force stays.
    let crl = layout.dir().join("ca/gm/crl.pem");
    let text = std::fs::read_to_string(&crl).unwrap();
    std::fs::write(&crl, &text[..text.len() / 2]).unwrap();
    let (status, v) = reload().await;
    assert_eq!(status, 500, "{v}");
    assert!(v["message"].as_str().unwrap().contains("unchanged"), "{v}");
    let r = agent.post(agent.seal("order.issue", 99, &json!({}))).await;
    assert_eq!(answer_code(&r), (403, "envelope_rejected".into()));
    env.system.shutdown().await;
}

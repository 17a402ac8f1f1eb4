//! Webhooks: a signed POST when an invoice is issued and when its tax status changes,
//! retried with backoff while the receiver fails.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use fapiao_crypto::{Role, Suite};
use time::Duration;

use crate::helpers::*;

type Seen = Arc<Mutex<Vec<(HeaderMap, String, u16)>>>;

async fn hook(State(seen): State<Seen>, headers: HeaderMap, body: String) -> StatusCode {
    let mut s = seen.lock().unwrap();
    // The first two deliveries fail: the cloud must retry.
    let status = if s.len() < 2 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::NO_CONTENT
    };
    s.push((headers, body, status.as_u16()));
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_announce_issue_and_tax_status() {
    let env = Env::start().await;
    let layout = &env.system.layout;
    let now = crate::now();
    let prefix = layout.dir().join("pki/erp-hook");
    layout
        .issue_party(
            Suite::Gm,
            Role::Cloud,
            "erp-hook",
            None,
            &prefix,
            now - Duration::hours(1),
            now + Duration::days(1),
        )
        .unwrap();
    let m = material(&env, &prefix);
    let seen: Seen = Arc::default();
    let router = axum::Router::new()
        .route("/hooks/fapiao", axum::routing::post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = fapiao_service::serve_tls(
        listener,
        m.server_config(fapiao_crypto::tls::ClientAuth::None)
            .unwrap(),
        router,
    )
    .unwrap();
    let url = format!(
        "https://127.0.0.1:{}/hooks/fapiao",
        server.local_addr().port()
    );
    assert!(env.system.cloud.set_webhook(SH, Some(&url)).await.unwrap());

    let erp = env.erp(SH);
    let r = post(&erp, "/v1/invoices", &order(SH, "HOOK-1", "70")).await;
    assert_eq!(r.status, 201);
    let number = json_of(&r)["number"].as_str().unwrap().to_owned();
    let s2 = seen.clone();
    wait_for("both events delivered", || {
        let s = s2.clone();
        async move {
            let s = s.lock().unwrap();
            let ok = |e: &str| {
                s.iter()
                    .any(|(h, _, st)| *st == 204 && h["x-fapiao-event"] == e)
            };
            ok("invoice.issued") && ok("invoice.tax_status")
        }
    })
    .await;
    let secret = erp.credentials().secret.clone();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().filter(|(_, _, st)| *st == 503).count() == 2,
        "two failures were retried"
    );
    for (h, body, _) in &seen {
        let ts: i64 = h["x-fapiao-timestamp"].to_str().unwrap().parse().unwrap();
        assert_eq!(
            h["x-fapiao-signature"].to_str().unwrap(),
            fapiao_protocol::erp::sign_webhook(secret.as_bytes(), ts, body.as_bytes()),
            "every delivery is signed with the enterprise's secret"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["number"].as_str().unwrap(), number);
        assert_eq!(v["event"], h["x-fapiao-event"].to_str().unwrap());
    }
    let last_status = seen
        .iter()
        .rev()
        .find(|(h, _, st)| *st == 204 && h["x-fapiao-event"] == "invoice.tax_status")
        .unwrap();
    assert!(
        last_status.1.contains("\"tax_status\":\"accepted\""),
        "{}",
        last_status.1
    );
    server.shutdown().await;
    env.system.shutdown().await;
}

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
            ok("invoice.issued") && ok("invoice.tax_status_changed")
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
        .find(|(h, _, st)| *st == 204 && h["x-fapiao-event"] == "invoice.tax_status_changed")
        .unwrap();
    assert!(
        last_status.1.contains("\"tax_status\":\"accepted\""),
        "{}",
        last_status.1
    );
    server.shutdown().await;
    env.system.shutdown().await;
}

/// What an endpoint's receiver got: `(headers, body)` of each POST answered 2xx.
type Got = Arc<Mutex<Vec<(HeaderMap, String)>>>;

async fn receive(State(got): State<Got>, headers: HeaderMap, body: String) -> StatusCode {
    got.lock().unwrap().push((headers, body));
    StatusCode::NO_CONTENT
}

/// The receiver of an ERP's endpoint, on `port` (0: any), over TLS with a certificate of the
/// test's CA.
async fn receiver(m: &fapiao_service::Material, port: u16, got: &Got) -> fapiao_service::Running {
    let router = axum::Router::new()
        .route("/erp/hooks", axum::routing::post(receive))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    fapiao_service::serve_tls(
        listener,
        m.server_config(fapiao_crypto::tls::ClientAuth::None)
            .unwrap(),
        router,
    )
    .unwrap()
}

/// Whether a delivery's signature verifies with `secret` per the documented scheme: hex
/// HMAC-SHA256 over `<X-Fapiao-Timestamp>.<raw body>`.
fn signed_with(secret: &str, h: &HeaderMap, body: &str) -> bool {
    use hmac::{KeyInit as _, Mac as _};
    let ts = h["x-fapiao-timestamp"].to_str().unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.{body}").as_bytes());
    let want: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    h["x-fapiao-signature"].to_str().unwrap() == want
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erp_registers_an_endpoint_and_gets_every_event_signed_even_after_being_down() {
    let env = Env::start().await;
    let layout = &env.system.layout;
    let now = crate::now();
    let prefix = layout.dir().join("pki/erp-endpoint");
    layout
        .issue_party(
            Suite::Gm,
            Role::Cloud,
            "erp-endpoint",
            None,
            &prefix,
            now - Duration::hours(1),
            now + Duration::days(1),
        )
        .unwrap();
    let m = material(&env, &prefix);
    let got: Got = Arc::default();
    let server = receiver(&m, 0, &got).await;
    let port = server.local_addr().port();
    let url = format!("https://127.0.0.1:{port}/erp/hooks");
    let erp = env.erp(SH);

    // Bad registrations are refused, naming the field.
    for (body, field) in [
        (
            serde_json::json!({"url": "http://erp.example/hooks"}),
            "url",
        ),
        (
            serde_json::json!({"url": url, "events": ["invoice.paid"]}),
            "events[0]",
        ),
        (serde_json::json!({"url": url, "events": []}), "events"),
        (serde_json::json!({"url": url, "secret": "mine"}), "secret"),
    ] {
        let r = post(&erp, "/v1/webhook-endpoints", &body).await;
        let v = json_of(&r);
        assert_eq!(
            (r.status, v["code"].as_str()),
            (400, Some("invalid_request")),
            "{v}"
        );
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{field}: {v}"
        );
    }

    let r = post(
        &erp,
        "/v1/webhook-endpoints",
        &serde_json::json!({"url": url, "events": ["invoice.tax_status_changed", "invoice.issued", "invoice.reversed"], "description": "ERP 主机"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let created = json_of(&r);
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 60,
        "{created}"
    );
    assert!(
        created["created_at"].as_str().unwrap().ends_with("+08:00"),
        "{created}"
    );
    assert_eq!(
        created["events"],
        serde_json::json!([
            "invoice.issued",
            "invoice.tax_status_changed",
            "invoice.reversed"
        ])
    );
    // The secret is shown once.
    let r = get(&erp, &format!("/v1/webhook-endpoints/{id}")).await;
    assert_eq!(r.status, 200);
    assert!(json_of(&r).get("secret").is_none(), "{}", json_of(&r));
    let r = get(&erp, "/v1/webhook-endpoints").await;
    assert_eq!(json_of(&r)["items"][0]["id"], id.as_str());
    // Another enterprise sees none of it.
    let other = env.erp(HZ);
    assert_eq!(
        get(&other, &format!("/v1/webhook-endpoints/{id}"))
            .await
            .status,
        404
    );
    assert_eq!(
        json_of(&get(&other, "/v1/webhook-endpoints").await)["items"],
        serde_json::json!([])
    );

    // A ping reaches the receiver, signed with the endpoint's secret.
    let r = post(
        &erp,
        &format!("/v1/webhook-endpoints/{id}/ping"),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", json_of(&r));
    let events_of = |got: &Got| -> Vec<(String, String)> {
        got.lock()
            .unwrap()
            .iter()
            .map(|(h, b)| {
                let v: serde_json::Value = serde_json::from_str(b).unwrap();
                (
                    h["x-fapiao-event"].to_str().unwrap().to_owned(),
                    v["number"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let has = |got: &Got, event: &str, number: &str| {
        events_of(got)
            .iter()
            .any(|(e, n)| e == event && n == number)
    };
    wait_for("the ping", || async { has(&got, "ping", "") }).await;

    // An invoice: issued, then accepted by tax.
    let r = post(&erp, "/v1/invoices", &order(SH, "EP-1", "70")).await;
    assert_eq!(r.status, 201);
    let first = json_of(&r)["number"].as_str().unwrap().to_owned();
    wait_for("issued and accepted", || async {
        has(&got, "invoice.issued", &first) && has(&got, "invoice.tax_status_changed", &first)
    })
    .await;

    // The receiver goes away; an invoice and a red of the first come meanwhile.
    server.shutdown().await;
    let r = post(&erp, "/v1/invoices", &order(SH, "EP-2", "80")).await;
    assert_eq!(r.status, 201);
    let second = json_of(&r)["number"].as_str().unwrap().to_owned();
    let r = post(
        &erp,
        &format!("/v1/invoices/{first}/red"),
        &serde_json::json!({"order_id": "EP-1-RED", "reason": "02"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let red = json_of(&r)["number"].as_str().unwrap().to_owned();
    // Attempts fail and are logged.
    let path = format!("/v1/webhook-endpoints/{id}/deliveries");
    wait_for("failed attempts in the log", || async {
        let v = json_of(&get(&erp, &path).await);
        v["items"].as_array().unwrap().iter().any(|d| {
            d["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["error"].is_string() && a["status"].is_null())
                .count()
                >= 2
        })
    })
    .await;
    assert!(!has(&got, "invoice.issued", &second));

    // Back on the same address: every event arrives.
    let server = receiver(&m, port, &got).await;
    wait_for("every event after the outage", || async {
        has(&got, "invoice.issued", &second)
            && has(&got, "invoice.tax_status_changed", &second)
            && has(&got, "invoice.issued", &red)
            && has(&got, "invoice.reversed", &red)
            && has(&got, "invoice.tax_status_changed", &red)
    })
    .await;
    let deliveries = got.lock().unwrap().clone();
    for (h, body) in &deliveries {
        assert!(signed_with(&secret, h, body), "signature of {body}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["event"], h["x-fapiao-event"].to_str().unwrap());
        assert_eq!(
            v["delivery"].to_string(),
            h["x-fapiao-delivery"].to_str().unwrap()
        );
        assert!(v["created_at"].as_str().unwrap().ends_with("+08:00"), "{v}");
        if v["event"] == "invoice.reversed" {
            assert_eq!(v["blue_number"], first.as_str(), "{v}");
            assert_eq!(v["kind"], "red", "{v}");
        }
        if v["event"].as_str().unwrap().starts_with("invoice.") {
            assert!(v["issued_at"].as_str().unwrap().ends_with("+08:00"), "{v}");
        }
    }
    // The log shows the failed attempts and the one that got through.
    let log = json_of(&get(&erp, &path).await);
    let retried = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["event"] == "invoice.issued" && d["number"] == second.as_str())
        .unwrap()
        .clone();
    let attempts = retried["attempts"].as_array().unwrap();
    assert_eq!(retried["state"], "done", "{retried}");
    assert!(attempts.len() >= 2, "{retried}");
    assert!(
        attempts[..attempts.len() - 1]
            .iter()
            .all(|a| a["error"].is_string()),
        "{retried}"
    );
    assert_eq!(attempts.last().unwrap()["status"], 204, "{retried}");

    // Sent again on request: the same event, a new attempt.
    let delivery = retried["id"].as_i64().unwrap();
    let before = got.lock().unwrap().len();
    let r = post(
        &erp,
        &format!("{path}/{delivery}/resend"),
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(r.status, 202, "{}", json_of(&r));
    wait_for("the resent delivery", || async {
        got.lock().unwrap().len() > before
    })
    .await;
    let (h, body) = got.lock().unwrap().last().unwrap().clone();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["delivery"].as_i64(), v["id"].clone()),
        (Some(delivery), retried["event_id"].clone())
    );
    assert!(signed_with(&secret, &h, &body));

    // Deleted: gone from the API, and nothing more is sent to it.
    let r = erp
        .send(
            http::Method::DELETE,
            &format!("/v1/webhook-endpoints/{id}"),
            b"",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    let r = get(&erp, &format!("/v1/webhook-endpoints/{id}")).await;
    assert_eq!(
        (r.status, json_of(&r)["code"].clone()),
        (404, serde_json::json!("not_found"))
    );
    let r = post(&erp, "/v1/invoices", &order(SH, "EP-3", "90")).await;
    let third = json_of(&r)["number"].as_str().unwrap().to_owned();
    settle(&env).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !has(&got, "invoice.issued", &third),
        "a deleted endpoint gets nothing"
    );
    server.shutdown().await;
    env.system.shutdown().await;
}

//! The platform's admin API: its own port, operators only, and absent from the business port.

use std::sync::Arc;

use http::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_is_for_operators_on_its_own_port() {
    let env = Env::start().await;
    let ports = env.system.ports;
    let operator = client_as(&env, "platform", ports.platform_admin);
    let r = operator
        .request(Method::GET, "/admin/enterprises", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        json_of(&r).as_array().unwrap().len(),
        3,
        "two platform-hosted demo enterprises and one enterprise-hosted"
    );

    // Register a third enterprise; a bad one names its field.
    let e = json!({
        "taxpayer_id": "91330106MA2CD0004F", "name": "杭州青禾餐饮管理有限公司", "cloud": "cloud:cloud",
        "status": "active", "hosting": "platform", "allowed_types": ["ordinary"],
        "invoice_limit": "5000.00", "monthly_quota": "20000.00"
    });
    let body = |v: &serde_json::Value| v.to_string().into_bytes();
    let ct = [("content-type", "application/json".to_owned())];
    let r = operator
        .request(Method::POST, "/admin/enterprises", &ct, body(&e))
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let r = operator
        .request(Method::POST, "/admin/enterprises", &ct, body(&e))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "already registered");
    let mut bad = e.clone();
    bad["taxpayer_id"] = json!("91330106MA2CD0004X");
    let r = operator
        .request(Method::POST, "/admin/enterprises", &ct, body(&bad))
        .await
        .unwrap();
    assert!(
        json_of(&r)["message"]
            .as_str()
            .unwrap()
            .starts_with("taxpayer_id"),
        "{}",
        json_of(&r)
    );
    let r = operator
        .request(
            Method::PATCH,
            "/admin/enterprises/91330106MA2CD0004F",
            &ct,
            body(&json!({"status": "suspended"})),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, json_of(&r)["status"].as_str().unwrap()),
        (200, "suspended")
    );

    // A cloud's certificate is not an operator's.
    let cloud = client_as(&env, "cloud", ports.platform_admin);
    let r = cloud
        .request(Method::GET, "/admin/enterprises", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (401, "peer_certificate_required")
    );
    // No client certificate: the probes answer (load balancers, Kubernetes), nothing else.
    let trust = env.trust();
    let anonymous = fapiao_protocol::HttpsClient::new(
        &format!("https://127.0.0.1:{}", ports.platform_admin),
        Arc::new(fapiao_crypto::tls::client_config(None, &trust).unwrap()),
    )
    .unwrap();
    for path in ["/healthz", "/livez", "/readyz"] {
        let r = anonymous
            .request(Method::GET, path, &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{path}");
    }
    for path in ["/admin/enterprises", "/metrics", "/admin/outbox"] {
        let r = anonymous
            .request(Method::GET, path, &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(
            (r.status, json_of(&r)["code"].as_str().unwrap()),
            (401, "peer_certificate_required"),
            "{path}"
        );
    }
    // The business port has no admin routes.
    let operator_on_business = client_as(&env, "platform", ports.platform);
    let r = operator_on_business
        .request(Method::GET, "/admin/enterprises", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    env.system.shutdown().await;
}

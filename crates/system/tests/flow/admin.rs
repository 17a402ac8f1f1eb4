//! The admin ports: people only — operators change, auditors read, monitors read `/metrics`
//! — with every change audited under the person; the roles' service certificates (an
//! agent's, a cloud's, a role's own) get 403 on every admin route; the business port has none.

use std::sync::Arc;

use fapiao_crypto::Role;
use http::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_is_for_operators_on_its_own_port() {
    let env = Env::start().await;
    let ports = env.system.ports;
    let operator = operator(&env, ports.platform_admin);
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

    // The change is audited under the person who made it.
    let actor: String = fapiao_store::query_scalar(
        "SELECT actor FROM audit_log WHERE action = 'enterprise.changed' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(env.system.platform.db().pool())
    .await
    .unwrap();
    assert_eq!(actor, "operator:dev-operator");

    // An auditor reads and changes nothing; a monitor reads the metrics only.
    let auditor = person(&env, Role::Auditor, ports.platform_admin);
    let monitor = person(&env, Role::Monitor, ports.platform_admin);
    let call = async |c: &fapiao_protocol::HttpsClient, m: Method, path: &str| {
        let r = c.request(m, path, &ct, b"{}".to_vec()).await.unwrap();
        (
            r.status,
            json_of(&r)["code"].as_str().unwrap_or("").to_owned(),
        )
    };
    assert_eq!(
        call(&auditor, Method::GET, "/admin/enterprises").await.0,
        200
    );
    assert_eq!(call(&auditor, Method::GET, "/metrics").await.0, 200);
    assert_eq!(
        call(
            &auditor,
            Method::PATCH,
            "/admin/enterprises/91330106MA2CD0004F"
        )
        .await,
        (403, "forbidden".into())
    );
    assert_eq!(
        call(&auditor, Method::POST, "/admin/crls/reload").await,
        (403, "forbidden".into())
    );
    assert_eq!(call(&monitor, Method::GET, "/metrics").await.0, 200);
    for path in ["/admin/enterprises", "/admin/outbox", "/admin/clouds"] {
        assert_eq!(
            call(&monitor, Method::GET, path).await,
            (403, "forbidden".into()),
            "{path}"
        );
    }

    // Service certificates get nothing on any role's admin port: an agent's (an ordinary
    // enterprise's), a cloud's, and the role's own.
    let routes = [
        (Method::GET, "/metrics"),
        (Method::GET, "/admin/clouds"),
        (Method::POST, "/admin/clouds"),
        (Method::GET, "/admin/enterprises"),
        (Method::POST, "/admin/enterprises"),
        (Method::PATCH, "/admin/enterprises/91330106MA2CD0004F"),
        (Method::GET, "/admin/outbox"),
        (Method::POST, "/admin/outbox/1/retry"),
        (Method::GET, "/admin/invoices/26310000000000000001"),
        (Method::POST, "/admin/crls/reload"),
    ];
    for port in [ports.platform_admin, ports.cloud_admin, ports.tax_admin] {
        for holder in ["agent", "cloud", "platform", "tax"] {
            let c = client_as(&env, holder, port);
            for (m, path) in &routes {
                assert_eq!(
                    call(&c, m.clone(), path).await,
                    (403, "forbidden".into()),
                    "{holder} {m} {path} on port {port}"
                );
            }
        }
    }
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
    let operator_on_business = person(&env, Role::Operator, ports.platform);
    let r = operator_on_business
        .request(Method::GET, "/admin/enterprises", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(r.status, 404);
    env.system.shutdown().await;
}

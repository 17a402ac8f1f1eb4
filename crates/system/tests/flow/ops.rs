//! Operations: separate admin ports with health, readiness and Prometheus metrics for every
//! role; the TLS policy checked with the OpenSSL client.

use std::process::{Command, Stdio};

use http::Method;

use crate::helpers::*;

async fn text(c: &fapiao_protocol::HttpsClient, path: &str) -> (u16, String) {
    let r = c.request(Method::GET, path, &[], Vec::new()).await.unwrap();
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_reports_health_readiness_and_metrics_on_its_admin_port() {
    let mut env = Env::start().await;
    let p = env.system.ports;
    let r = post(&env.erp(SH), "/v1/invoices", &order(SH, "OPS-1", "10")).await;
    assert_eq!(r.status, 201);
    settle(&env).await;
    let garbage = Sender::new(&env, &env.system.layout.pki_prefix("cloud"));
    assert_eq!(garbage.post(b"not an envelope".to_vec()).await.status, 400);

    for (role, port) in [
        ("cloud", p.cloud_admin),
        ("platform", p.platform_admin),
        ("tax", p.tax_admin),
    ] {
        let c = operator(&env, port);
        let (s, body) = text(&c, "/healthz").await;
        assert_eq!(
            (s, body.as_str()),
            (
                200,
                format!("{{\"role\":\"{role}\",\"status\":\"up\"}}").as_str()
            )
        );
        let (s, body) = text(&c, "/readyz").await;
        assert_eq!(s, 200, "{role}: {body}");
        assert!(
            body.contains("\"database\"") && body.contains("\"certificates\""),
            "{body}"
        );
        // Business ports have none of it.
        let business = match role {
            "cloud" => p.cloud,
            "platform" => p.platform,
            _ => p.tax,
        };
        assert_eq!(
            text(&operator(&env, business), "/metrics").await.0,
            404,
            "{role}"
        );
    }
    let (_, cloud) = text(&operator(&env, p.cloud_admin), "/metrics").await;
    assert!(
        cloud.contains("fapiao_http_request_duration_seconds_count{route=\"/v1/invoices\",method=\"POST\",status=\"201\"} 1"),
        "{cloud}"
    );
    let (_, platform) = text(&operator(&env, p.platform_admin), "/metrics").await;
    for needle in [
        "fapiao_invoices_issued_total{kind=\"blue\",mode=\"platform\"} 1",
        "fapiao_envelope_failures_total{reason=\"malformed\"} 1",
        "fapiao_tax_uploads_total{outcome=\"done\"} 1",
        "fapiao_tax_upload_duration_seconds_count{outcome=\"done\"} 1",
        "fapiao_outbox_oldest_pending_seconds 0",
        // Nothing pending is a 0, not a series that disappears.
        "fapiao_outbox_depth{kind=\"notify\"} 0",
        "fapiao_outbox_depth{kind=\"upload\"} 0",
        "fapiao_ready 1",
        "fapiao_check_ok{check=\"database\"} 1",
        "fapiao_quota_used{enterprise=\"91310115MA1FP0001X\"} 127.2",
    ] {
        assert!(
            platform.contains(needle),
            "{needle} missing in:\n{platform}"
        );
    }
    let (_, tax) = text(&operator(&env, p.tax_admin), "/metrics").await;
    assert!(
        tax.contains("fapiao_tax_uploads_received_total{status=\"accepted\"} 1"),
        "{tax}"
    );

    // An outbox that cannot drain makes the platform not ready, and ready again once it does.
    env.system.stop("tax").await;
    let r = post(&env.erp(SH), "/v1/invoices", &order(SH, "OPS-2", "10")).await;
    assert_eq!(r.status, 201);
    let admin = operator(&env, p.platform_admin);
    wait_for("not ready", || {
        let admin = &admin;
        async move { text(admin, "/readyz").await.0 == 503 }
    })
    .await;
    let (_, body) = text(&admin, "/readyz").await;
    assert!(
        body.contains("\"not_ready\"") && body.contains("oldest pending entry"),
        "{body}"
    );
    // Tax is reported by name, as not answering (platform issues on meanwhile: the check
    // is not required), and exported for alerts.
    let tax_check = serde_json::from_str::<serde_json::Value>(&body).unwrap()["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "peer:tax:tax")
        .cloned()
        .unwrap_or_else(|| panic!("no tax check in {body}"));
    assert_eq!(
        (&tax_check["ok"], &tax_check["required"]),
        (&false.into(), &false.into()),
        "{tax_check}"
    );
    assert!(
        tax_check["detail"]
            .as_str()
            .unwrap()
            .starts_with("not answering for"),
        "{tax_check}"
    );
    let (_, metrics) = text(&admin, "/metrics").await;
    assert!(
        metrics.contains("fapiao_peer_up{peer=\"tax:tax\"} 0"),
        "{metrics}"
    );
    assert!(metrics.contains("fapiao_ready 0"), "{metrics}");
    env.system.restart("tax").await.unwrap();
    settle(&env).await;
    assert_eq!(text(&admin, "/readyz").await.0, 200);

    // The database gone (SQLite: its file moved away under the running role; PostgreSQL: the
    // server refuses the role's connections and ends those open): not ready, and the body
    // says which check failed; back in place, ready again. Health stays up.
    let tax_admin = operator(&env, p.tax_admin);
    let outage = DatabaseOutage::start(&env).await;
    // The write check is cached for two seconds.
    let mut answer = (0, String::new());
    for _ in 0..50 {
        answer = text(&tax_admin, "/readyz").await;
        if answer.0 == 503 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (s, body) = answer;
    assert_eq!(s, 503, "{body}");
    assert!(
        body.contains("{\"name\":\"database\",\"ok\":false"),
        "{body}"
    );
    assert_eq!(text(&tax_admin, "/healthz").await.0, 200);
    outage.end().await;
    let mut ready = 0;
    for _ in 0..50 {
        ready = text(&tax_admin, "/readyz").await.0;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200);
    env.system.shutdown().await;
}

/// The tax role's database out of reach while the role runs.
enum DatabaseOutage {
    File(std::path::PathBuf, std::path::PathBuf),
    Server(fapiao_store::Db, String),
}

impl DatabaseOutage {
    async fn start(env: &Env) -> Self {
        let url = fapiao_system::RoleConfig::load(&env.system.layout.config_path("tax"))
            .unwrap()
            .database;
        if let Some(path) = url.strip_prefix("sqlite://") {
            let file = std::path::PathBuf::from(path);
            let away = file.with_extension("sqlite.away");
            std::fs::rename(&file, &away).unwrap();
            return Self::File(file, away);
        }
        let (server, name) = url.rsplit_once('/').unwrap();
        let admin = fapiao_store::Db::open_existing(&format!("{server}/postgres"))
            .await
            .unwrap();
        for sql in [
            format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false"),
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ),
        ] {
            fapiao_store::query_text(sql)
                .execute(admin.pool())
                .await
                .unwrap();
        }
        Self::Server(admin, name.to_owned())
    }

    async fn end(self) {
        match self {
            Self::File(file, away) => std::fs::rename(&away, &file).unwrap(),
            Self::Server(admin, name) => {
                fapiao_store::query_text(format!(
                    "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"
                ))
                .execute(admin.pool())
                .await
                .unwrap();
            }
        }
    }
}

fn s_client(port: u16, ca: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-CAfile",
            ca.to_str().unwrap(),
            "-verify_return_error",
            "-brief",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.success() && text.contains("CONNECTION ESTABLISHED"),
        text,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_1_2_or_1_3_with_aead_suites_only() {
    let env = Env::start().await;
    let ca = env.system.layout.dir().join("ca/intl/ca.crt.pem");
    let port = env.system.ports.cloud;
    let (ok, out) = s_client(port, &ca, &["-tls1_3"]);
    assert!(ok && out.contains("TLSv1.3"), "{out}");
    let (ok, out) = s_client(port, &ca, &["-tls1_2"]);
    assert!(
        ok && out.contains("TLSv1.2") && (out.contains("GCM") || out.contains("CHACHA20")),
        "{out}"
    );
    // SECLEVEL=0 lets the client offer the old protocols and CBC suites: the server refuses.
    for refused in [
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"][..],
        &["-tls1", "-cipher", "DEFAULT@SECLEVEL=0"][..],
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:AES128-SHA:AES256-SHA256@SECLEVEL=0",
        ][..],
    ] {
        let (ok, out) = s_client(port, &ca, refused);
        assert!(
            !ok && out.contains("alert handshake failure"),
            "{refused:?} must be refused by the server: {out}"
        );
    }
    env.system.shutdown().await;
}

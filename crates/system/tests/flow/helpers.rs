use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fapiao_crypto::{Certificate, Suite, TrustStore};
use fapiao_platform::Options;
use fapiao_protocol::Response;
use fapiao_store::Engine;
use fapiao_system::{ErpClient, Ports, Storage, System};
use http::Method;
use serde_json::{Value, json};

pub(crate) const SH: &str = "91310115MA1FP0001X";
pub(crate) const SZ: &str = "91440300MA5GK00036";
/// The enterprise-hosted demo enterprise (its agent issues).
pub(crate) const HZ: &str = "91330106MA2H00003L";

pub(crate) fn fast() -> Options {
    Options {
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        poll: Duration::from_millis(50),
        block_size: 50,
        range_size: 500,
        outbox_stuck_after: Duration::from_secs(2),
        catalog: None,
    }
}

/// The engine the suite runs on: `FAPIAO_TEST_ENGINE=postgres` puts every role's database
/// on the server of `FAPIAO_TEST_POSTGRES`, in databases of their own per test; otherwise
/// SQLite files in the test's directory.
pub(crate) fn engine() -> Engine {
    match std::env::var("FAPIAO_TEST_ENGINE").as_deref() {
        Ok("postgres") => Engine::Postgres,
        Ok("sqlite") | Err(_) => Engine::Sqlite,
        Ok(other) => panic!("FAPIAO_TEST_ENGINE={other}: sqlite or postgres"),
    }
}

/// Where a test's system keeps its databases ([`engine`]).
pub(crate) fn storage() -> Option<Storage> {
    match engine() {
        Engine::Sqlite => None,
        Engine::Postgres => Some(Storage::Postgres {
            server: fapiao_store::testing::postgres_server()
                .expect("FAPIAO_TEST_ENGINE=postgres needs FAPIAO_TEST_POSTGRES"),
            prefix: fapiao_store::testing::database_name("flow"),
        }),
    }
}

pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) system: System,
}

impl Env {
    pub(crate) async fn start() -> Self {
        let _ = logs();
        let dir = tempfile::tempdir().unwrap();
        let ports = Ports {
            cloud: 0,
            cloud_admin: 0,
            platform: 0,
            platform_admin: 0,
            tax: 0,
            tax_admin: 0,
        };
        let system = System::up_with(
            dir.path(),
            Suite::Gm,
            ports,
            fast(),
            crate::now(),
            storage().as_ref(),
        )
        .await
        .unwrap();
        Self { dir, system }
    }

    pub(crate) fn trust(&self) -> TrustStore {
        trust(self.dir.path())
    }

    pub(crate) fn erp(&self, enterprise: &str) -> ErpClient {
        let creds = self
            .system
            .layout
            .credentials()
            .unwrap()
            .remove(enterprise)
            .unwrap();
        ErpClient::new(&self.system.cloud_url(), &self.trust(), creds).unwrap()
    }
}

pub(crate) fn trust(dir: &Path) -> TrustStore {
    let mut roots = Vec::new();
    for s in ["gm", "intl"] {
        roots.push(
            Certificate::from_pem(
                &std::fs::read_to_string(dir.join(format!("ca/{s}/ca.crt.pem"))).unwrap(),
            )
            .unwrap(),
        );
    }
    let mut t = TrustStore::new(roots).unwrap();
    for s in ["gm", "intl"] {
        t.add_crl(
            fapiao_crypto::Crl::from_pem(
                &std::fs::read_to_string(dir.join(format!("ca/{s}/crl.pem"))).unwrap(),
            )
            .unwrap(),
        );
    }
    t
}

pub(crate) fn json_of(r: &Response) -> Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&r.body)}))
}

/// An order of `enterprise` with `n` as its order id suffix and `amount` as the one line's
/// tax-exclusive amount (6 %).
pub(crate) fn order(enterprise: &str, id: &str, amount: &str) -> Value {
    let name = match enterprise {
        SH => "上海云帆信息科技有限公司",
        HZ => "杭州青禾电子商务有限公司",
        _ => "深圳味源食品有限公司",
    };
    json!({
        "order_id": id,
        "invoice_type": "ordinary",
        "price_mode": "tax_exclusive",
        "seller": { "taxpayer_id": enterprise, "name": name },
        "buyer": { "taxpayer_id": "91110108MA01XY002C", "name": "北京华章商贸有限公司" },
        "items": [
            { "name": "系统运维服务", "tax_code": "3040201030000000000", "unit": "月",
              "quantity": 2, "unit_price": amount, "tax_rate": "6%" },
            { "name": "订单管理系统定制开发", "tax_code": "3040201010000000000",
              "amount": "100.00", "tax_rate": "6%" }
        ],
        "drawer": "李静"
    })
}

pub(crate) async fn post(erp: &ErpClient, path: &str, body: &Value) -> Response {
    erp.send(Method::POST, path, body.to_string().as_bytes())
        .await
        .unwrap()
}

pub(crate) async fn get(erp: &ErpClient, path: &str) -> Response {
    erp.send(Method::GET, path, b"").await.unwrap()
}

pub(crate) async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..400 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// What the roles hold, to assert that a refusal changed nothing.
#[derive(Debug, PartialEq, Eq, Clone)]
pub(crate) struct Snapshot {
    pub(crate) platform: Vec<i64>,
    pub(crate) quota: Vec<(String, String, String)>,
    pub(crate) blocks: Vec<(i64, i64)>,
    pub(crate) cloud_invoices: i64,
    pub(crate) tax_invoices: i64,
}

pub(crate) async fn snapshot(s: &System) -> Snapshot {
    let p = s.platform.db().pool();
    let count = |table: &'static str| async move {
        let sql = match table {
            "invoices" => "SELECT COUNT(*) FROM invoices",
            "orders" => "SELECT COUNT(*) FROM orders",
            "void_numbers" => "SELECT COUNT(*) FROM void_numbers",
            "red_forms" => "SELECT COUNT(*) FROM red_forms",
            _ => "SELECT COUNT(*) FROM outbox",
        };
        fapiao_store::query_scalar::<i64>(sql)
            .fetch_one(p)
            .await
            .unwrap()
    };
    let platform = vec![
        count("invoices").await,
        count("orders").await,
        count("void_numbers").await,
        count("red_forms").await,
        count("outbox").await,
    ];
    let quota = fapiao_store::query_as(
        "SELECT enterprise, month, used FROM quota_usage ORDER BY enterprise, month",
    )
    .fetch_all(p)
    .await
    .unwrap();
    let blocks = fapiao_store::query_as("SELECT id, next FROM blocks ORDER BY id")
        .fetch_all(p)
        .await
        .unwrap();
    let cloud_invoices = fapiao_store::query_scalar("SELECT COUNT(*) FROM invoices")
        .fetch_one(s.cloud.db().pool())
        .await
        .unwrap();
    let tax_invoices = fapiao_store::query_scalar("SELECT COUNT(*) FROM invoices")
        .fetch_one(s.tax.db().pool())
        .await
        .unwrap();
    Snapshot {
        platform,
        quota,
        blocks,
        cloud_invoices,
        tax_invoices,
    }
}

/// A role-like sender with its own certificates, to put envelopes on the wire by hand.
pub(crate) struct Sender {
    pub(crate) material: fapiao_service::Material,
    pub(crate) http: fapiao_protocol::HttpsClient,
    pub(crate) platform_enc: Certificate,
    pub(crate) recipient: String,
}

/// The key material at `prefix` (files as `Layout::issue_party` writes them), trusting the
/// environment's CAs.
pub(crate) fn material(env: &Env, prefix: &Path) -> fapiao_service::Material {
    let layout = &env.system.layout;
    fapiao_service::Material::load(&fapiao_service::MaterialConfig {
        suite: "gm".into(),
        prefix: prefix.to_owned(),
        trust: layout.trust_files(),
        crls: layout.crl_files(),
        key_passphrase_file: Some(layout.passphrase_file()),
        master_key_file: None,
        crl_reload_seconds: None,
        crl_grace_seconds: None,
    })
    .unwrap()
}

/// An HTTPS client to a loopback port presenting the data directory's person of `role`
/// (operator, auditor, monitor): who admin ports answer.
pub(crate) fn person(
    env: &Env,
    role: fapiao_crypto::Role,
    port: u16,
) -> fapiao_protocol::HttpsClient {
    fapiao_protocol::HttpsClient::new(
        &format!("https://127.0.0.1:{port}"),
        Arc::new(env.system.layout.person_tls_config(role).unwrap()),
    )
    .unwrap()
}

/// The data directory's operator at an admin port.
pub(crate) fn operator(env: &Env, port: u16) -> fapiao_protocol::HttpsClient {
    person(env, fapiao_crypto::Role::Operator, port)
}

/// An HTTPS client to a loopback port presenting `role`'s TLS client certificate.
pub(crate) fn client_as(env: &Env, role: &str, port: u16) -> fapiao_protocol::HttpsClient {
    let m = material(env, &env.system.layout.pki_prefix(role));
    fapiao_protocol::HttpsClient::new(
        &format!("https://127.0.0.1:{port}"),
        m.client_config().unwrap(),
    )
    .unwrap()
}

impl Sender {
    /// Loads the party at `prefix` (files as `Layout::issue_party` writes them) and connects
    /// to platform with its TLS client certificate.
    pub(crate) fn new(env: &Env, prefix: &Path) -> Self {
        Self::to(env, prefix, "platform", env.system.ports.platform)
    }

    /// The party at `prefix` sending to `role` (`role:role`) on `port`.
    pub(crate) fn to(env: &Env, prefix: &Path, role: &str, port: u16) -> Self {
        let layout = &env.system.layout;
        let material = material(env, prefix);
        let http = fapiao_protocol::HttpsClient::new(
            &format!("https://127.0.0.1:{port}"),
            material.client_config().unwrap(),
        )
        .unwrap();
        let platform_enc = Certificate::from_pem(
            &std::fs::read_to_string(layout.dir().join(format!("pki/{role}.enc.crt.pem"))).unwrap(),
        )
        .unwrap();
        Self {
            material,
            http,
            platform_enc,
            recipient: format!("{role}:{role}"),
        }
    }

    /// A sealed request as the roles make it.
    pub(crate) fn seal(&self, message_type: &str, version: u16, body: &Value) -> Vec<u8> {
        use fapiao_crypto::envelope::{Header, Message, seal};
        let payload = serde_json::to_vec(&fapiao_protocol::wire::Request {
            reply_certificate: fapiao_protocol::wire::b64(
                self.material.party.encryption_certificate().der(),
            ),
            body,
        })
        .unwrap();
        let now = crate::now().replace_nanosecond(0).unwrap();
        let message = Message {
            header: Header {
                protocol_version: version,
                sender: self.material.party.identity().to_owned(),
                recipient: self.recipient.clone(),
                message_type: message_type.into(),
                message_id: fapiao_protocol::client::new_id(),
                created_at: now,
            },
            payload,
        };
        seal(
            &self.material.party,
            &self.platform_enc,
            &message,
            &mut fapiao_crypto::rng::system_rng(),
        )
        .unwrap()
    }

    pub(crate) async fn post(&self, envelope: Vec<u8>) -> Response {
        self.http
            .request(
                Method::POST,
                "/v1/envelope",
                &[("content-type", "application/fapiao-envelope".into())],
                envelope,
            )
            .await
            .unwrap()
    }

    /// Opens a sealed answer; returns (message type, payload JSON).
    pub(crate) fn open(&self, r: &Response) -> (String, Value) {
        let guard = fapiao_crypto::envelope::MemoryReplayGuard::new();
        let o = fapiao_crypto::envelope::Opener::new(
            &self.material.party,
            &self.material.trust.current(),
            &guard,
        )
        .open(&r.body, crate::now())
        .unwrap();
        (
            o.message.header.message_type,
            serde_json::from_slice(&o.message.payload).unwrap(),
        )
    }
}

/// An `order.issue` body for the platform, as cloud would send it.
pub(crate) fn issue_body(enterprise: &str, id: &str) -> Value {
    let order = order(enterprise, id, "100");
    json!({
        "enterprise": enterprise,
        "order_id": id,
        "order": order,
        "request_hash": "00",
    })
}

pub(crate) async fn admin_patch(env: &Env, enterprise: &str, patch: Value) {
    let p: fapiao_platform::EnterprisePatch = serde_json::from_value(patch).unwrap();
    env.system
        .platform
        .update_enterprise("test", enterprise, &p)
        .await
        .unwrap()
        .unwrap();
}

/// Waits until the platform's outbox has nothing pending (uploads and notices delivered).
pub(crate) async fn settle(env: &Env) {
    let p = env.system.platform.clone();
    wait_for("the outbox to drain", || {
        let p = p.clone();
        async move { p.outbox("pending").await.unwrap().is_empty() }
    })
    .await;
}

/// Everything logged by this test binary, as JSON lines (the production format), at debug.
pub(crate) fn logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = buf.clone();
        tracing_subscriber::fmt()
            .json()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || LogSink(sink.clone()))
            .init();
        buf
    })
    .clone()
}

pub(crate) struct LogSink(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(b);
        }
        // `FAPIAO_TEST_LOG=1`: the logs on stderr too, to see why a test failed.
        if std::env::var_os("FAPIAO_TEST_LOG").is_some() {
            std::io::Write::write_all(&mut std::io::stderr(), b)?;
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

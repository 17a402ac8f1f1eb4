use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fapiao_crypto::{Certificate, Suite, TrustStore};
use fapiao_platform::Options;
use fapiao_protocol::Response;
use fapiao_system::{ErpClient, Ports, System};
use http::Method;
use serde_json::{Value, json};

pub(crate) const SH: &str = "91310115MA1FP0001X";
pub(crate) const SZ: &str = "91440300MA5GK00036";

pub(crate) fn fast() -> Options {
    Options {
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(400),
        poll: Duration::from_millis(50),
        block_size: 50,
        range_size: 500,
    }
}

pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) system: System,
}

impl Env {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports = Ports {
            cloud: 0,
            platform: 0,
            platform_admin: 0,
            tax: 0,
        };
        let system = System::up(dir.path(), Suite::Gm, ports, fast(), crate::now())
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
    let name = if enterprise == SH {
        "上海云帆信息科技有限公司"
    } else {
        "深圳味源食品有限公司"
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
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

pub(crate) fn _arc<T>(t: T) -> Arc<T> {
    Arc::new(t)
}

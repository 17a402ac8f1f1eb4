//! Key rotation without downtime: while ERP clients keep issuing, every role's data key is
//! rotated from a second database handle (what `fapiao keys rotate` does from its own
//! process). Afterwards every invoice, old and new, reads back and verifies at cloud, tax
//! accepted each once, reds against blues sealed under the old key still pass the red checks
//! at platform and tax, and every sealed value is under the new key.

use fapiao_store::vault::Vault;
use fapiao_system::RoleConfig;
use serde_json::json;

use crate::helpers::*;
use crate::now;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_while_issuing_loses_nothing() {
    let env = Env::start().await;
    let mut numbers = Vec::new();
    for i in 0..10 {
        let ent = if i % 2 == 0 { SH } else { SZ };
        let r = post(
            &env.erp(ent),
            "/v1/invoices",
            &order(ent, &format!("OLD-{i}"), "30"),
        )
        .await;
        assert_eq!(r.status, 201, "{}", json_of(&r));
        numbers.push((json_of(&r)["number"].as_str().unwrap().to_owned(), ent));
    }
    settle(&env).await;

    // Issuing goes on in the background while the three rotations run.
    let issuing = {
        let (sh, sz) = (env.erp(SH), env.erp(SZ));
        tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..30 {
                let (erp, ent) = if i % 2 == 0 { (&sh, SH) } else { (&sz, SZ) };
                let r = post(erp, "/v1/invoices", &order(ent, &format!("NEW-{i}"), "40")).await;
                assert_eq!(r.status, 201, "{}", json_of(&r));
                out.push((json_of(&r)["number"].as_str().unwrap().to_owned(), ent));
            }
            out
        })
    };
    let dir = env.system.layout.dir().to_owned();
    let mut vaults = Vec::new();
    for role in ["cloud", "platform", "tax"] {
        let cfg = RoleConfig::load(&dir.join(format!("{role}.toml"))).unwrap();
        let db = fapiao_store::Db::open_existing(&cfg.database)
            .await
            .unwrap();
        let vault = Vault::open(&db, cfg.material.master_key().unwrap(), now())
            .await
            .unwrap();
        let columns = fapiao_system::sealed_columns(role).unwrap();
        let rotation = vault.rotate(columns, 4, now(), |_, _| {}).await.unwrap();
        assert_eq!(rotation.key, "k2", "{role}");
        vaults.push((role, vault, columns));
    }
    assert!(
        !issuing.is_finished(),
        "the rotations ran while orders were being issued"
    );
    numbers.extend(issuing.await.unwrap());
    // Reds of blues sealed under the old keys: platform and tax read those records.
    let blues: Vec<(String, &str)> = numbers.iter().take(3).cloned().collect();
    for (i, (blue, ent)) in blues.iter().enumerate() {
        let r = post(
            &env.erp(ent),
            &format!("/v1/invoices/{blue}/red"),
            &json!({"order_id": format!("RED-{i}"), "reason": "01"}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", json_of(&r));
        numbers.push((json_of(&r)["number"].as_str().unwrap().to_owned(), ent));
    }
    settle(&env).await;

    assert_eq!(numbers.len(), 43);
    let trust = env.trust();
    for (number, ent) in &numbers {
        let r = get(&env.erp(ent), &format!("/v1/invoices/{number}")).await;
        assert_eq!(r.status, 200, "{number}");
        let v = json_of(&r);
        assert_eq!(v["tax_status"], "accepted", "{v}");
        let wire: fapiao_protocol::wire::WireInvoice = serde_json::from_value(
            serde_json::json!({"invoice": v["invoice"], "signature": v["signature"]}),
        )
        .unwrap();
        fapiao_issuer::verify(&wire.to_signed().unwrap(), &trust, now()).unwrap();
    }
    for (role, vault, columns) in &vaults {
        for c in columns.iter() {
            let census = vault.census(*c).await.unwrap();
            assert!(
                census.iter().all(|(k, _)| k == "k2"),
                "{role} {}: {census:?}",
                c.field()
            );
        }
    }
    let tax_invoices: i64 = fapiao_store::query_scalar("SELECT COUNT(*) FROM invoices")
        .fetch_one(env.system.tax.db().pool())
        .await
        .unwrap();
    assert_eq!(tax_invoices, 43, "each accepted once");
}

/// The attack of one database write: an enterprise's sealed ERP secret replaced with a plain
/// secret the attacker chose, or with another enterprise's sealed secret. Neither signs a
/// request in: the sealed column refuses what is not sealed for its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_written_into_the_database_does_not_sign_requests() {
    let env = Env::start().await;
    let sh = env.erp(SH);
    assert_eq!(get(&sh, "/v1/invoices").await.status, 200);
    let db = env.system.cloud.db().clone();
    let key_id = sh.credentials().key_id.clone();
    let forged = |secret: &str| {
        fapiao_system::ErpClient::new(
            &env.system.cloud_url(),
            &env.trust(),
            fapiao_cloud::Credentials {
                key_id: key_id.clone(),
                secret: secret.to_owned(),
            },
        )
        .unwrap()
    };
    fapiao_store::query("UPDATE enterprises SET secret = 'sk_attacker' WHERE taxpayer_id = $1")
        .bind(SH)
        .execute(db.pool())
        .await
        .unwrap();
    let r = get(&forged("sk_attacker"), "/v1/invoices").await;
    assert!(
        !(200..300).contains(&r.status),
        "{}: {}",
        r.status,
        json_of(&r)
    );
    assert_ne!(r.status, 404);

    // Another enterprise's sealed secret copied over: SZ's secret does not sign as SH.
    fapiao_store::query(
        "UPDATE enterprises SET secret = (SELECT secret FROM enterprises WHERE taxpayer_id = $2)
         WHERE taxpayer_id = $1",
    )
    .bind(SH)
    .bind(SZ)
    .execute(db.pool())
    .await
    .unwrap();
    let sz_secret = env.erp(SZ).credentials().secret.clone();
    let r = get(&forged(&sz_secret), "/v1/invoices").await;
    assert!(
        !(200..300).contains(&r.status),
        "{}: {}",
        r.status,
        json_of(&r)
    );
    // SZ itself is unaffected.
    assert_eq!(get(&env.erp(SZ), "/v1/invoices").await.status, 200);
    env.system.shutdown().await;
}

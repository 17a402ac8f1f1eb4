//! Rate limits from the role's config: per enterprise and per client address, 429 with
//! Retry-After, other enterprises unaffected.

use crate::helpers::*;

async fn restart_cloud_with(env: &mut Env, limits: &str) {
    restart_cloud_edited(env, limits, str::to_owned).await;
}

/// Restarts cloud with `limits` as its `[limits]` table and every other line of its config
/// passed through `edit`.
async fn restart_cloud_edited(env: &mut Env, limits: &str, edit: impl Fn(&str) -> String) {
    env.system.stop("cloud").await;
    let path = env.system.layout.config_path("cloud");
    let text = std::fs::read_to_string(&path).unwrap();
    let base: Vec<String> = text
        .split("\n[limits]")
        .next()
        .unwrap()
        .lines()
        .map(edit)
        .collect();
    std::fs::write(&path, format!("{}\n[limits]\n{limits}\n", base.join("\n"))).unwrap();
    env.system.restart("cloud").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_is_429_with_retry_after() {
    let mut env = Env::start().await;
    restart_cloud_with(&mut env, "enterprise_rate = 0.2\nenterprise_burst = 3.0").await;
    let sh = env.erp(SH);
    // Requests that are not correctly signed do not spend the enterprise's tokens.
    let forged = fapiao_system::ErpClient::new(
        &env.system.cloud_url(),
        &env.trust(),
        fapiao_cloud::Credentials {
            key_id: sh.credentials().key_id.clone(),
            secret: "sk_guess".into(),
        },
    )
    .unwrap();
    for _ in 0..5 {
        assert_eq!(get(&forged, "/v1/invoices").await.status, 401);
    }
    for _ in 0..3 {
        assert_eq!(get(&sh, "/v1/invoices").await.status, 200);
    }
    let r = get(&sh, "/v1/invoices").await;
    let v = json_of(&r);
    assert_eq!(
        (
            r.status,
            v["code"].as_str().unwrap(),
            v["retryable"].as_bool()
        ),
        (429, "rate_limited", Some(true)),
        "{v}"
    );
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
    assert_eq!(
        get(&env.erp(SZ), "/v1/invoices").await.status,
        200,
        "another enterprise has its own bucket"
    );

    restart_cloud_with(&mut env, "address_rate = 0.2\naddress_burst = 4.0").await;
    let (sh, sz) = (env.erp(SH), env.erp(SZ));
    for c in [&sh, &sz, &sh, &sz] {
        assert_eq!(get(c, "/v1/invoices").await.status, 200);
    }
    let r = get(&sz, "/v1/invoices").await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str().unwrap()),
        (429, "rate_limited"),
        "one address, whatever the key"
    );
    env.system.shutdown().await;
}

/// `max_connections` caps the connections a listener holds: with two held open (their TLS
/// handshakes never finished), a third client is not served until one goes away. Bodies above
/// the ERP limit are refused with 413 before anything is read into a handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_big_bodies_refused() {
    let mut env = Env::start().await;
    restart_cloud_with(&mut env, "max_connections = 2\nmax_body_bytes = 4096").await;
    let addr = env
        .system
        .cloud_url()
        .trim_start_matches("https://")
        .to_owned();
    let held = [
        tokio::net::TcpStream::connect(&addr).await.unwrap(),
        tokio::net::TcpStream::connect(&addr).await.unwrap(),
    ];
    let waiting = tokio::time::timeout(
        std::time::Duration::from_millis(1500),
        get(&env.erp(SH), "/v1/invoices"),
    )
    .await;
    assert!(waiting.is_err(), "a third connection was served");
    drop(held);
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        get(&env.erp(SH), "/v1/invoices"),
    )
    .await
    .expect("served once the held connections are gone");
    assert_eq!(r.status, 200);

    let big = vec![b' '; 4097];
    let r = env
        .erp(SH)
        .send(http::Method::POST, "/v1/invoices", &big)
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    env.system.shutdown().await;
}

/// A request that outlives `request_timeout_seconds` is answered `request_timeout` (503,
/// retryable): here the cloud's platform is a listener that accepts and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_takes_too_long_is_answered_request_timeout() {
    let mut env = Env::start().await;
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    let _hole = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    restart_cloud_edited(&mut env, "request_timeout_seconds = 1", |l| {
        if l.starts_with("platform_url") {
            format!("platform_url = \"https://{hole_addr}\"")
        } else {
            l.to_owned()
        }
    })
    .await;
    let r = post(&env.erp(SH), "/v1/invoices", &order(SH, "SLOW-1", "10")).await;
    let v = json_of(&r);
    assert_eq!(
        (
            r.status,
            v["code"].as_str().unwrap(),
            v["retryable"].as_bool()
        ),
        (503, "request_timeout", Some(true)),
        "{v}"
    );
    let page = json_of(&get(&env.erp(SH), "/v1/invoices").await);
    assert_eq!(page["items"], serde_json::json!([]), "nothing stored");
    env.system.shutdown().await;
}

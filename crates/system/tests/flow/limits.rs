//! Limits from the role's config: rate limits per enterprise and per client address (429 with
//! Retry-After, other enterprises unaffected), connection caps, time limits, body limits, and
//! what a client without a certificate can make a role hold.

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

/// A TLS connection to `addr` presenting no client certificate.
async fn anonymous_tls(
    env: &Env,
    addr: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = fapiao_crypto::tls::client_config(None, env.trust()).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// Reads until the peer closes or `secs` pass; what came.
async fn read_for(stream: &mut (impl tokio::io::AsyncRead + Unpin), secs: u64) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    let mut buf = [0_u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(out),
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                    return Some(out);
                }
            }
            Err(_) => return (!out.is_empty()).then_some(out),
        }
    }
}

/// The attack of many clients without certificates each starting a 4 MiB envelope post and
/// stalling: cloud and tax answer 401 from the headers alone, before the body is sent, so a
/// stalled post holds nothing of its body; a connection that sends nothing, or only part of
/// its headers, is closed after the handshake timeout; one address gets at most its share of
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_clients_cost_their_headers_and_their_share() {
    use tokio::io::AsyncWriteExt as _;
    let mut env = Env::start().await;
    let tax_addr = env
        .system
        .tax_url()
        .trim_start_matches("https://")
        .to_owned();
    let cloud_addr = env
        .system
        .cloud_url()
        .trim_start_matches("https://")
        .to_owned();
    for addr in [&cloud_addr, &tax_addr] {
        let mut stalled = Vec::new();
        for _ in 0..24 {
            let mut s = anonymous_tls(&env, addr).await;
            s.write_all(
                b"POST /v1/envelope HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/fapiao-envelope\r\ncontent-length: 4194304\r\n\r\n",
            )
            .await
            .unwrap();
            s.write_all(&[0x30; 16 * 1024]).await.unwrap();
            s.flush().await.unwrap();
            stalled.push(s);
        }
        for s in &mut stalled {
            let answer = read_for(s, 5).await.expect("answered without the body");
            let text = String::from_utf8_lossy(&answer);
            assert!(
                text.starts_with("HTTP/1.1 401") && text.contains("peer_certificate_required"),
                "{addr}: {text}"
            );
        }
    }

    restart_cloud_with(&mut env, "handshake_timeout_seconds = 1").await;
    let cloud_addr = env
        .system
        .cloud_url()
        .trim_start_matches("https://")
        .to_owned();
    // Silent connections are closed after the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(&cloud_addr).await.unwrap();
    assert_eq!(read_for(&mut silent, 4).await, Some(Vec::new()), "closed");
    // Headers begun and never finished: closed too.
    let mut slow = anonymous_tls(&env, &cloud_addr).await;
    slow.write_all(b"GET /v1/invoices HTTP/1.1\r\nhost: local")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    let closed = read_for(&mut slow, 4).await;
    assert!(
        closed
            .as_ref()
            .is_some_and(|b| !String::from_utf8_lossy(b).contains("200 OK")),
        "{closed:?}"
    );
    // Three held from this address (well within the handshake time): a fourth is closed at
    // once, and served once one goes.
    restart_cloud_with(&mut env, "max_connections_per_address = 3").await;
    let cloud_addr = env
        .system
        .cloud_url()
        .trim_start_matches("https://")
        .to_owned();
    let held: Vec<_> = futures_held(&cloud_addr, 3).await;
    let mut fourth = tokio::net::TcpStream::connect(&cloud_addr).await.unwrap();
    assert_eq!(
        read_for(&mut fourth, 3).await,
        Some(Vec::new()),
        "closed at once"
    );
    drop(held);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(get(&env.erp(SH), "/v1/invoices").await.status, 200);
    env.system.shutdown().await;
}

async fn futures_held(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    held
}

//! The download portal in a real browser: headless Chromium, driven through chromedriver's
//! WebDriver API, looks an invoice up by number, date and 价税合计 and downloads its PDF and
//! XML, which must be byte for byte the files the ERP API serves. A wrong total finds
//! nothing; malformed fields are named; every page carries the security headers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// One chromedriver (in its own process group, so its browsers go with it) and one session.
struct Browser {
    port: u16,
    driver: Child,
    session: String,
    downloads: PathBuf,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One WebDriver call over plain HTTP/1.1 on loopback; the `value` of the answer.
async fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // Read the head, then exactly Content-Length bytes (chromedriver keeps the connection).
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    let (head, json_body) = loop {
        let n = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer in 60 s"))
            .unwrap();
        assert!(n > 0, "{method} {path}: connection closed early");
        answer.extend_from_slice(&chunk[..n]);
        let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&answer[..end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        if answer.len() >= end + 4 + length {
            let body = String::from_utf8(answer[end + 4..end + 4 + length].to_vec()).unwrap();
            break (head, body);
        }
    };
    let value: Value = serde_json::from_str(&json_body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {head}\n{json_body}"));
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{method} {path} -> {head}\n{value}"
    );
    value["value"].clone()
}

impl Browser {
    async fn start(downloads: &Path) -> Self {
        let port = free_port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("chromedriver must be installed (.ci/run installs chromium-driver): {e}")
                })
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The cloud's certificate is issued by the dev CA, which the browser does not know.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--no-first-run",
                         "--window-size=1024,768",
                         format!("--user-data-dir={}", profile.path().display())],
                "prefs": {
                    "download.default_directory": downloads.to_str().unwrap(),
                    "download.prompt_for_download": false,
                }
            }
        }}});
        let mut browser = Self {
            port,
            driver,
            session: String::new(),
            downloads: downloads.to_owned(),
            _profile: profile,
        };
        let session = call(port, "POST", "/session", Some(&caps)).await;
        browser.session = session["sessionId"].as_str().unwrap().to_owned();
        // Finding an element waits up to 10 s for it to appear.
        browser
            .cmd("POST", "/timeouts", Some(json!({"implicit": 10_000})))
            .await;
        browser
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        call(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        )
        .await
    }

    async fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    async fn element(&self, css: &str) -> String {
        let e = self
            .cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        e.as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn text(&self, css: &str) -> String {
        let e = self.element(css).await;
        self.cmd("GET", &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.element(css).await;
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})))
            .await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let e = self.element(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})))
            .await;
    }

    async fn title(&self) -> String {
        self.cmd("GET", "/title", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Looks an invoice up through the form, as a person would, and waits for the answer page
    /// (a new document: its root element is a new element).
    async fn look_up(&self, number: &str, date: &str, total: &str) {
        self.fill("#number", number).await;
        self.fill("#date", date).await;
        self.fill("#total", total).await;
        let before = self.element("html").await;
        self.click("#find").await;
        for _ in 0..200 {
            if self.element("html").await != before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the lookup did not load a page");
    }

    /// Waits for a finished download: the file is there, not empty, the same size on two
    /// looks in a row, and Chromium has no `*.crdownload` left in the folder.
    async fn downloaded(&self, name: &str) -> Vec<u8> {
        let path = self.downloads.join(name);
        let mut last = None;
        for _ in 0..200 {
            let partial = std::fs::read_dir(&self.downloads).unwrap().any(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".crdownload")
            });
            let size = std::fs::metadata(&path).map(|m| m.len()).ok();
            if !partial && size.is_some_and(|s| s > 0) && size == last {
                return std::fs::read(&path).unwrap();
            }
            last = size;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let present: Vec<_> = std::fs::read_dir(&self.downloads)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        panic!("{name} was not downloaded; the folder holds {present:?}");
    }

    async fn quit(mut self) {
        call(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        )
        .await;
        self.session.clear();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole process group: chromedriver and any browser a failed test left behind.
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_finds_an_invoice_and_downloads_its_pdf_and_xml() {
    let env = Env::start().await;
    let erp = env.erp(SZ);
    let r = post(&erp, "/v1/invoices", &order(SZ, "PORTAL-1", "1234.50")).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let v = json_of(&r);
    let number = v["number"].as_str().unwrap().to_owned();
    let date = v["issued_at"].as_str().unwrap()[..10].to_owned();
    let total = v["total"].as_str().unwrap().to_owned();
    let api_pdf = get(&erp, &format!("/v1/invoices/{number}/pdf")).await;
    let api_xml = get(&erp, &format!("/v1/invoices/{number}/xml")).await;
    let api_ofd = get(&erp, &format!("/v1/invoices/{number}/ofd")).await;
    assert_eq!(
        (api_pdf.status, api_xml.status, api_ofd.status),
        (200, 200, 200)
    );
    // Files are named as the national platform names them.
    let stem = crate::ofd::download_name(&api_xml)
        .strip_suffix(".xml")
        .unwrap()
        .to_owned();

    let downloads = tempfile::tempdir().unwrap();
    let browser = Browser::start(downloads.path()).await;
    let portal = format!("{}/portal", env.system.cloud_url());

    // A wrong total finds nothing, and the page does not say which fact was wrong.
    browser.go(&portal).await;
    assert_eq!(browser.title().await, "电子发票下载");
    browser.look_up(&number, &date, "1234.49").await;
    assert!(
        browser.text("#error").await.contains("没有与发票号码"),
        "wrong total"
    );
    // A malformed date is named.
    browser.look_up(&number, "20261120", &total).await;
    assert!(browser.text("#error").await.starts_with("开票日期"));

    // The three facts as printed on the invoice find it (the total typed with ¥).
    browser.go(&portal).await;
    let typed_total = format!("¥{total}");
    browser.look_up(&number, &date, &typed_total).await;
    assert_eq!(browser.text("#found-number").await, number);
    assert_eq!(browser.text("#found-total").await, format!("¥{total}"));
    let status = browser.text("#status").await;
    assert!(
        status.starts_with("已受理") || status.starts_with("受理中"),
        "{status}"
    );

    // The downloads are the ERP API's files, byte for byte.
    browser.click("#pdf").await;
    let pdf = browser.downloaded(&format!("{stem}.pdf")).await;
    assert!(pdf.starts_with(b"%PDF-"));
    assert_eq!(pdf, api_pdf.body.to_vec(), "portal PDF = ERP API PDF");
    browser.click("#xml").await;
    let xml = browser.downloaded(&format!("{stem}.xml")).await;
    assert_eq!(xml, api_xml.body.to_vec(), "portal XML = ERP API XML");
    browser.click("#ofd").await;
    let ofd = browser.downloaded(&format!("{stem}.ofd")).await;
    assert_eq!(ofd, api_ofd.body.to_vec(), "portal OFD = ERP API OFD");
    crate::ofd::assert_signed_ofd(&ofd, &xml);
    browser.click("#zip").await;
    let zip = browser.downloaded(&format!("{stem}.zip")).await;
    let names: Vec<String> = fapiao_render::ofd::parts(&zip)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["pdf", "ofd", "xml"].map(|k| format!("{stem}.{k}")));
    browser.quit().await;

    // What the browser cannot show: the status codes and the headers on every answer.
    let raw = |path: String| {
        let erp = &erp;
        async move {
            erp.send_raw(http::Method::GET, &path, &[], b"")
                .await
                .unwrap()
        }
    };
    let q = |total: &str| format!("number={number}&date={date}&total={total}");
    for (path, status) in [
        ("/portal".to_owned(), 200),
        (format!("/portal/invoice?{}", q(&total)), 200),
        (format!("/portal/invoice?{}", q("1")), 404),
        (format!("/portal/pdf?{}", q("1")), 404),
        (format!("/portal/xml?{}", q(&total)), 200),
        (
            format!("/portal/invoice?number=123&date={date}&total=1"),
            400,
        ),
    ] {
        let r = raw(path.clone()).await;
        assert_eq!(r.status, status, "{path}");
        let csp = r.headers.get("content-security-policy").unwrap();
        assert!(
            csp.to_str().unwrap().contains("default-src 'none'"),
            "{path}"
        );
        assert_eq!(
            r.headers.get("cache-control").unwrap(),
            "no-store",
            "{path}"
        );
        assert_eq!(r.headers.get("referrer-policy").unwrap(), "no-referrer");
    }
    let r = raw(format!("/portal/invoice?number=123&date={date}&total=1")).await;
    assert!(String::from_utf8_lossy(&r.body).contains("发票号码应为 20 位数字"));
}

/// Guessing: wrong facts at one number, from any address, are free five times, then wait;
/// the wait holds even for the right facts, and other numbers are untouched. A natural
/// person's files (they carry the identity number and phone) take the last four characters
/// of either too; a wrong four counts as a guess. 查验 at tax limits guesses the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_are_limited_per_invoice_and_a_persons_files_take_their_digits() {
    let env = Env::start().await;
    let erp = env.erp(SH);
    let person: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orders/natural-person.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let r = post(&erp, "/v1/invoices", &person).await;
    assert_eq!(r.status, 201, "{}", json_of(&r));
    let v = json_of(&r);
    let number = v["number"].as_str().unwrap().to_owned();
    let date = v["issued_at"].as_str().unwrap()[..10].to_owned();
    let total = v["total"].as_str().unwrap().to_owned();
    let other = post(&erp, "/v1/invoices", &order(SH, "GUESS-OTHER", "10")).await;
    let other_v = json_of(&other);
    let raw = |path: String| {
        let erp = &erp;
        async move {
            erp.send_raw(http::Method::GET, &path, &[], b"")
                .await
                .unwrap()
        }
    };
    let q = |n: &str, t: &str| format!("number={n}&date={date}&total={t}");

    // The page shows the invoice; the files need the buyer's four characters.
    assert_eq!(
        raw(format!("/portal/invoice?{}", q(&number, &total)))
            .await
            .status,
        200
    );
    let r = raw(format!("/portal/xml?{}", q(&number, &total))).await;
    assert_eq!(r.status, 403);
    assert!(String::from_utf8_lossy(&r.body).contains("后四位"));
    assert!(!String::from_utf8_lossy(&r.body).contains("13812341234"));
    for (buyer, status) in [("1239", 200), ("1234", 200), ("0000", 403)] {
        let r = raw(format!("/portal/xml?{}&buyer={buyer}", q(&number, &total))).await;
        assert_eq!(r.status, status, "buyer {buyer}");
        if status == 200 {
            assert!(String::from_utf8_lossy(&r.body).contains("<EInvoice>"));
        }
    }
    // The wrong four was the first failure; four wrong totals more, then waits.
    for _ in 0..4 {
        assert_eq!(
            raw(format!("/portal/invoice?{}", q(&number, "1.00")))
                .await
                .status,
            404
        );
    }
    let r = raw(format!("/portal/invoice?{}", q(&number, "1.00"))).await;
    assert_eq!(r.status, 404, "the fifth wrong guess still answered");
    let r = raw(format!("/portal/invoice?{}", q(&number, &total))).await;
    assert_eq!(r.status, 429, "even the right facts wait");
    assert!(r.headers.get("retry-after").is_some());
    // Another invoice is unaffected.
    let other_q = q(
        other_v["number"].as_str().unwrap(),
        other_v["total"].as_str().unwrap(),
    );
    assert_eq!(raw(format!("/portal/invoice?{other_q}")).await.status, 200);

    // 查验 at tax: the same limit, per number.
    let tax = fapiao_protocol::HttpsClient::new(
        &env.system.tax_url(),
        std::sync::Arc::new(fapiao_crypto::tls::client_config(None, env.trust()).unwrap()),
    )
    .unwrap();
    let verify = |t: &str| {
        let (tax, path) = (
            &tax,
            format!("/v1/verify?number={number}&date={date}&total={t}"),
        );
        async move {
            tax.request(http::Method::GET, &path, &[], Vec::new())
                .await
                .unwrap()
        }
    };
    settle(&env).await;
    assert_eq!(json_of(&verify(&total).await)["result"], "valid");
    // Five free failures; the sixth is answered and starts the waits.
    for _ in 0..6 {
        assert_eq!(json_of(&verify("1.00").await)["result"], "unknown");
    }
    let r = verify(&total).await;
    assert_eq!(
        (r.status, json_of(&r)["code"].as_str()),
        (429, Some("rate_limited"))
    );
    env.system.shutdown().await;
}

//! As a new user would: `fapiao up`, then the printed `fapiao issue …` and `fapiao red …`;
//! then the same data directory served by three `fapiao serve` processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{fapiao, stderr, stdout};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Ctrl-C, then wait for a clean exit.
    fn interrupt(self) {
        self.signal("-INT");
    }

    /// SIGTERM (what systemd and Kubernetes send), then wait for a clean exit.
    fn terminate(self) {
        self.signal("-TERM");
    }

    fn signal(mut self, signal: &str) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args([signal, &pid]).status();
        let status = self.0.wait().unwrap();
        assert!(status.success(), "graceful stop on {signal}: {status}");
    }
}

fn spawn(args: &[&str]) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_fapiao"))
            .args(args)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Reads the child's output, both streams, until a line contains `marker`; returns what was
/// read. Both streams go on being drained in the background, so the child never blocks on a
/// full pipe; if it ends (or stays silent for a minute) first, the failure shows everything
/// it wrote, its error output included.
fn wait_for_line(p: &mut Proc, marker: &str) -> String {
    read_until(p, marker).unwrap_or_else(|e| panic!("{e}"))
}

/// [`wait_for_line`], the failure returned: what the process wrote, and how it ended.
fn read_until(p: &mut Proc, marker: &str) -> Result<String, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let streams: [Box<dyn std::io::Read + Send>; 2] = [
        Box::new(p.0.stdout.take().unwrap()),
        Box::new(p.0.stderr.take().unwrap()),
    ];
    for stream in streams {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let mut seen = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            return Ok(seen);
        }
    }
    let status = p.0.try_wait().ok().flatten();
    Err(format!(
        "no `{marker}` from the process (exit: {status:?}); it wrote:\n{seen}"
    ))
}

fn number_in(text: &str) -> String {
    let at = text.find("发票号码：").unwrap() + "发票号码：".len();
    text[at..at + 20].to_owned()
}

/// `fapiao up` in data directory `d` (with `extra` arguments) on six free ports, read until a
/// line contains `marker`: the process, the ports (cloud, platform, platform admin, tax, cloud
/// admin, tax admin) and what it wrote. A port is free when picked, but tests running beside
/// this one can take it before `up` binds it: then `up` runs again on new ports, in a new data
/// directory.
fn up_on_free_ports(d: &str, extra: &[&str], marker: &str) -> (Proc, Vec<String>, String) {
    for attempt in 1.. {
        let ports: Vec<String> = (0..6).map(|_| free_port().to_string()).collect();
        let mut args = vec!["up"];
        args.extend_from_slice(extra);
        args.extend([
            "--data",
            d,
            "--cloud-port",
            &ports[0],
            "--platform-port",
            &ports[1],
            "--admin-port",
            &ports[2],
            "--tax-port",
            &ports[3],
            "--cloud-admin-port",
            &ports[4],
            "--tax-admin-port",
            &ports[5],
        ]);
        let mut up = spawn(&args);
        match read_until(&mut up, marker) {
            Ok(banner) => return (up, ports, banner),
            Err(e) if attempt < 3 && e.contains("Address already in use") => {
                drop(up);
                let _ = std::fs::remove_dir_all(d);
            }
            Err(e) => panic!("{e}"),
        }
    }
    unreachable!("the loop returns or panics")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn up_then_issue_then_red_then_serve_each_role_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let (up, _, banner) = up_on_free_ports(d, &[], "Ctrl-C stops.");
    assert!(banner.contains("first run"), "{banner}");
    // Owner only: the directories holding keys, passphrases and databases, and the secret
    // files and databases in them.
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for dir in ["", "secrets", "ca", "ca/gm", "pki", "devices"] {
            assert_eq!(mode(&data.join(dir)), 0o700, "{dir}/");
        }
        for file in [
            "secrets/key-passphrase",
            "ca/gm/ca.key.pem",
            "pki/platform.sign.key.pem",
            "pki/platform.master.key",
            "platform.sqlite",
        ] {
            assert_eq!(mode(&data.join(file)), 0o600, "{file}");
        }
    }
    assert!(
        banner.contains("cargo run --release -- issue examples/orders/basic.json"),
        "{banner}"
    );

    let issued = fapiao(&["issue", "examples/orders/basic.json", "--data", d]);
    assert!(issued.status.success(), "{}", stderr(&issued));
    let out = stdout(&issued);
    assert!(
        out.contains("电子发票（普通发票）")
            && out.contains("¥16960.00")
            && out.contains("税务状态："),
        "{out}"
    );
    let number = number_in(&out);
    assert!(
        out.contains(&format!("red {number} --reason 01")),
        "prints the next command: {out}"
    );

    let again = fapiao(&["issue", "examples/orders/basic.json", "--data", d]);
    assert_eq!(
        number_in(&stdout(&again)),
        number,
        "the same order is the same invoice"
    );

    let red = fapiao(&["red", &number, "--reason", "01", "--data", d]);
    assert!(red.status.success(), "{}", stderr(&red));
    let out = stdout(&red);
    assert!(
        out.contains(&format!("被红冲蓝字数电发票号码：{number}")) && out.contains("¥-16960.00"),
        "{out}"
    );
    let twice = fapiao(&["red", &number, "--reason", "01", "--data", d]);
    assert_eq!(twice.status.code(), Some(2));
    assert!(stderr(&twice).contains("red_invalid"), "{}", stderr(&twice));

    let pdf = tmp.path().join("i.pdf");
    let r = fapiao(&[
        "render",
        &number,
        "--pdf",
        pdf.to_str().unwrap(),
        "--data",
        d,
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"));
    // The OFD of an issued invoice: rendered and signed by the device the data directory
    // hosts, and it verifies as the XML and PDF do.
    let ofd = tmp.path().join("i.ofd");
    let r = fapiao(&[
        "render",
        &number,
        "--ofd",
        ofd.to_str().unwrap(),
        "--data",
        d,
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let v = fapiao(&["verify", ofd.to_str().unwrap(), "--data", d]);
    assert!(
        v.status.success() && stdout(&v).contains("OFD: every part covered"),
        "{}{}",
        stdout(&v),
        stderr(&v)
    );
    // All three as the national platform names them, in one zip (read by Python's zipfile).
    let r = fapiao(&[
        "render",
        &number,
        "--zip",
        tmp.path().to_str().unwrap(),
        "--data",
        d,
    ]);
    assert!(r.status.success(), "{}", stderr(&r));
    let zip = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "zip"))
        .unwrap();
    let stem = zip.file_stem().unwrap().to_str().unwrap().to_owned();
    assert!(
        stem.starts_with(&format!("dzfp_{number}_北京华章商贸有限公司_"))
            && stem.len() == format!("dzfp_{number}_北京华章商贸有限公司_").len() + 14,
        "{stem}"
    );
    let listing = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; print('\\n'.join(z.namelist()))",
            zip.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    assert_eq!(
        String::from_utf8(listing.stdout).unwrap().trim(),
        format!("{stem}.pdf\n{stem}.ofd\n{stem}.xml")
    );

    let bad = fapiao(&[
        "issue",
        "examples/orders/invalid.json",
        "--enterprise",
        "91310115MA1FP0001X",
        "--data",
        d,
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("invalid_order"), "{}", stderr(&bad));
    let ents = fapiao(&["platform", "enterprises", "--data", d]);
    assert!(
        stdout(&ents).contains("91310115MA1FP0001X"),
        "{}",
        stderr(&ents)
    );
    up.interrupt();

    // The same configs, one process per role, started in any order.
    let mut procs = Vec::new();
    for role in ["cloud", "platform", "tax"] {
        let cfg = data.join(format!("{role}.toml"));
        let mut p = spawn(&["serve", role, "--config", cfg.to_str().unwrap()]);
        wait_for_line(&mut p, "serving on");
        procs.push(p);
    }
    let special = fapiao(&["issue", "examples/orders/special.json", "--data", d]);
    assert!(special.status.success(), "{}", stderr(&special));
    assert!(stdout(&special).contains("电子发票（增值税专用发票）"));
    let n2 = number_in(&stdout(&special));
    // The outbox reaches tax in its own process: wait for acceptance.
    for attempt in 0.. {
        let o = fapiao(&["platform", "outbox", "--state", "pending", "--data", d]);
        if stdout(&o).trim() == "[]" {
            break;
        }
        assert!(attempt < 150, "outbox did not drain: {}", stdout(&o));
        std::thread::sleep(Duration::from_millis(200));
    }
    let xml = tmp.path().join("i.xml");
    let r = fapiao(&["render", &n2, "--xml", xml.to_str().unwrap(), "--data", d]);
    assert!(r.status.success(), "{}", stderr(&r));
    // SIGTERM stops each as Ctrl-C does: requests drained, the audit head signed last.
    for p in procs {
        p.terminate();
    }
    for role in ["cloud", "platform", "tax"] {
        let newest = Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT MAX(seq) FROM audit_log').fetchone()[0])",
                data.join(format!("{role}.sqlite")).to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let newest = String::from_utf8_lossy(&newest.stdout).trim().to_owned();
        let witness =
            std::fs::read_to_string(data.join(format!("audit/{role}.witness.jsonl"))).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(witness.lines().last().unwrap()).unwrap();
        assert_eq!(
            last["seq"].to_string(),
            newest,
            "{role}: head signed at SIGTERM"
        );
    }

    // Keys: every role's values are under its first data key; rotating the cloud's re-seals
    // its invoices and ERP secrets under a second one (and appends an audit record).
    let k = fapiao(&["keys", "status", "--role", "cloud", "--data", d]);
    assert!(k.status.success(), "{}", stderr(&k));
    assert!(stdout(&k).contains("data key k1 active"), "{}", stdout(&k));
    assert!(
        stdout(&k).contains("enterprises.secret: k1 3"),
        "{}",
        stdout(&k)
    );
    let k = fapiao(&[
        "keys", "rotate", "--role", "cloud", "--batch", "1", "--data", d,
    ]);
    let out = stdout(&k);
    assert!(k.status.success(), "{}", stderr(&k));
    assert!(out.contains("data key k2 active"), "{out}");
    assert!(
        out.contains("enterprises.secret: 3 values re-sealed"),
        "{out}"
    );
    assert!(out.contains("enterprises.secret: k2 3"), "{out}");
    assert!(!out.contains("k1 "), "nothing left under k1: {out}");
    assert!(stderr(&k).contains("re-sealed"), "progress: {}", stderr(&k));

    // Retention runs against every role's real tables; everything here is young, so nothing
    // is exported or deleted.
    let export = tmp.path().join("export");
    for role in ["cloud", "platform", "tax"] {
        let r = fapiao(&[
            "retention",
            "run",
            "--role",
            role,
            "--data",
            d,
            "--export",
            export.to_str().unwrap(),
        ]);
        let out = stdout(&r);
        assert!(r.status.success(), "{role}: {out}{}", stderr(&r));
        assert!(out.contains("invoices: nothing expired"), "{out}");
        assert!(out.contains("audit_log: nothing expired"), "{out}");
        assert!(!out.contains("deleted"), "{out}");
    }

    // Every role's audit chain verifies, with heads signed at start and on the way down, each
    // copied to the role's witness file; an edited record is found, and so is the log cut
    // down to its first record with every head deleted.
    for role in ["cloud", "platform", "tax"] {
        let v = fapiao(&["audit", "verify", "--role", role, "--data", d]);
        let out = stdout(&v);
        assert!(v.status.success(), "{role}: {out}{}", stderr(&v));
        assert!(
            out.contains("intact")
                && out.contains("each valid and naming the one before")
                && out.contains(&format!("witness {d}/audit/{role}.witness.jsonl")),
            "{out}"
        );
    }
    let tax_db = data.join("tax.sqlite");
    let cut = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('DELETE FROM audit_log WHERE seq > 1'); c.execute('DELETE FROM audit_heads'); c.commit()",
            tax_db.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(cut.success());
    let v = fapiao(&["audit", "verify", "--role", "tax", "--data", d]);
    assert_eq!(v.status.code(), Some(1), "{}", stdout(&v));
    assert!(
        stdout(&v).contains("in the witness but not in the database"),
        "{}",
        stdout(&v)
    );
    let db = data.join("platform.sqlite");
    let tamper = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE audit_log SET detail='{}' WHERE seq=3\"); c.commit()",
            db.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(tamper.success());
    let v = fapiao(&["audit", "verify", "--role", "platform", "--data", d]);
    assert_eq!(v.status.code(), Some(1));
    assert!(stdout(&v).contains("BROKEN at record 3"), "{}", stdout(&v));
}

/// `up --enterprise-hosted`, then the printed `issue examples/orders/agent.json`: the order is
/// queued at cloud, the agent issues it, and `issue` prints the invoice once cloud has it;
/// `agent status` then shows nothing waiting.
#[test]
fn up_enterprise_hosted_issues_through_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let (up, _, banner) = up_on_free_ports(d, &["--enterprise-hosted"], "agent status");
    assert!(
        banner.contains("cargo run --release -- issue examples/orders/agent.json"),
        "{banner}"
    );
    let issued = fapiao(&["issue", "examples/orders/agent.json", "--data", d]);
    assert!(issued.status.success(), "{}", stderr(&issued));
    let out = stdout(&issued);
    assert!(
        out.contains("杭州青禾电子商务有限公司") && out.contains("税务状态："),
        "{out}"
    );
    let number = number_in(&out);
    assert!(
        stderr(&issued).contains("queued for the enterprise's agent"),
        "{}",
        stderr(&issued)
    );
    let again = fapiao(&["issue", "examples/orders/agent.json", "--data", d]);
    assert_eq!(
        number_in(&stdout(&again)),
        number,
        "the same order, the same invoice"
    );
    for attempt in 0.. {
        let s = fapiao(&["agent", "status", "--json", "--data", d]);
        assert!(s.status.success(), "{}", stderr(&s));
        let v: serde_json::Value = serde_json::from_str(&stdout(&s)).unwrap();
        assert_eq!(v["issued"], 1, "{v}");
        if v["to_upload"] == 0 && v["to_report"] == 0 && v["to_ack"] == 0 {
            assert!(v["numbers_left"].as_i64().unwrap() > 0, "{v}");
            break;
        }
        assert!(attempt < 100, "the agent's queues did not drain: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    up.interrupt();
}

/// The ERP API against `up` as integrators meet it: the reference clients of
/// `examples/clients/` (Python, Node), written from the published documents alone, sign
/// requests, issue, read, list, download, meet a conflict, register and delete a webhook
/// endpoint and verify the documented webhook signature example; then schemathesis runs every
/// check in every phase against the OpenAPI document (its configuration and signing hook in
/// `examples/clients/schemathesis/`; test.sh installs it and names it in
/// `FAPIAO_SCHEMATHESIS`).
#[test]
fn the_reference_clients_and_schemathesis_pass_against_up() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.to_str().unwrap();
    let (up, ports, _) = up_on_free_ports(d, &[], "Ctrl-C stops.");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let url = format!("https://127.0.0.1:{}", ports[0]);
    let ca = format!("{d}/ca/intl/ca.crt.pem");
    let creds_file = format!("{d}/erp-credentials.json");
    let args = [
        "--url",
        url.as_str(),
        "--ca",
        ca.as_str(),
        "--credentials",
        creds_file.as_str(),
        "--enterprise",
        "91310115MA1FP0001X",
        "--order",
        "examples/orders/basic.json",
    ];
    for (program, script) in [
        ("python3", "examples/clients/python/fapiao_client.py"),
        ("node", "examples/clients/node/fapiao.mjs"),
    ] {
        let out = Command::new(program)
            .arg(script)
            .args(args)
            .current_dir(&root)
            .output()
            .unwrap_or_else(|e| panic!("{program} runs (test.sh installs it): {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && text.contains("webhook signature example verified"),
            "{script}:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let creds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&creds_file).unwrap()).unwrap();
    let enterprise = &creds["91310115MA1FP0001X"];
    let schemathesis =
        std::env::var("FAPIAO_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".to_owned());
    let dir = root.join("examples/clients/schemathesis");
    let out = Command::new(&schemathesis)
        .args(["run", "../../../docs/openapi.json", "--url", url.as_str()])
        .current_dir(&dir)
        .env("PYTHONPATH", &dir)
        .env("FAPIAO_ERP_KEY", enterprise["key_id"].as_str().unwrap())
        .env("FAPIAO_ERP_SECRET", enterprise["secret"].as_str().unwrap())
        .env("FAPIAO_CA", &ca)
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| panic!("{schemathesis} runs (test.sh installs it): {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let summary = text
        .lines()
        .filter(|l| l.contains(" generated, "))
        .collect::<Vec<_>>()
        .join("\n");
    eprintln!("schemathesis: {summary}");
    assert!(
        out.status.success() && summary.contains("passed"),
        "schemathesis found failures:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    up.interrupt();
}

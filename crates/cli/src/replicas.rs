//! `fapiao bench --replicas N`: cloud and platform as N processes each (`fapiao serve`), behind
//! nginx in stream mode (the shipped `deploy/nginx/nginx.conf`), on the ports the configs name,
//! so the ERP and the roles reach one another through the balancer as in a deployment.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The shipped nginx configuration.
const NGINX_CONF: &str = include_str!("../../../deploy/nginx/nginx.conf");

/// The processes of a replicated run; stopped when dropped.
pub(crate) struct Replicas {
    roles: Vec<(String, Child)>,
    nginx: Option<(Child, PathBuf)>,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn port_of(addr: &str) -> Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("no port in {addr}"))
}

impl Replicas {
    /// Starts `n` replicas of cloud and of platform from the configs in `data` (whose roles
    /// this process no longer serves), and nginx on the ports those configs name.
    pub(crate) fn start(data: &Path, n: usize) -> Result<Self> {
        let exe = std::env::current_exe().context("this program's path")?;
        let mut me = Self {
            roles: Vec::new(),
            nginx: None,
        };
        let mut upstreams: Vec<(String, Vec<String>)> = Vec::new();
        let mut listen = Vec::new();
        for role in ["cloud", "platform"] {
            let config = data.join(format!("{role}.toml"));
            let cfg = fapiao_system::RoleConfig::load(&config)?;
            listen.push(port_of(&cfg.listen[0])?);
            let mut servers = Vec::new();
            for i in 0..n {
                let (port, admin) = (free_port()?, free_port()?);
                let log = std::fs::File::create(data.join(format!("{role}-{i}.log")))?;
                let child = Command::new(&exe)
                    .args(["serve", role, "--config"])
                    .arg(&config)
                    .env("FAPIAO_LISTEN", format!("127.0.0.1:{port}"))
                    .env("FAPIAO_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
                    .env("FAPIAO_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .with_context(|| format!("starting {role} replica {i}"))?;
                me.roles.push((format!("{role}-{i}"), child));
                servers.push(format!("127.0.0.1:{port}"));
            }
            upstreams.push((role.to_owned(), servers));
        }
        for (_, servers) in &upstreams {
            for s in servers {
                wait_for(s)?;
            }
        }
        let dir = data.join("nginx");
        std::fs::create_dir_all(dir.join("upstreams"))?;
        for (role, servers) in &upstreams {
            let lines: String = servers
                .iter()
                .map(|s| format!("server {s} max_fails=2 fail_timeout=5s;\n"))
                .collect();
            std::fs::write(dir.join(format!("upstreams/upstream-{role}.conf")), lines)?;
        }
        let mut conf = NGINX_CONF.to_owned();
        for (from, to) in [
            ("/etc/fapiao/nginx", dir.join("upstreams")),
            ("/run/fapiao-nginx.pid", dir.join("nginx.pid")),
            ("/var/log/nginx/fapiao-error.log", dir.join("error.log")),
            ("/var/log/nginx/fapiao-access.log", dir.join("access.log")),
        ] {
            conf = conf.replace(from, &to.display().to_string());
        }
        conf = conf
            .replace("listen 8443;", &format!("listen 127.0.0.1:{};", listen[0]))
            .replace("listen 8444;", &format!("listen 127.0.0.1:{};", listen[1]))
            .replace(
                "events {",
                &format!("lock_file {};\nevents {{", dir.join("nginx.lock").display()),
            );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let nginx = Command::new("nginx")
            .args(["-c", &path.display().to_string(), "-g", "daemon off;"])
            .stderr(Stdio::null())
            .spawn()
            .context("nginx (Debian: apt-get install nginx libnginx-mod-stream)")?;
        me.nginx = Some((nginx, path));
        for port in listen {
            wait_for(&format!("127.0.0.1:{port}"))?;
        }
        Ok(me)
    }
}

fn wait_for(addr: &str) -> Result<()> {
    for _ in 0..300 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on {addr} after 15 s")
}

impl Drop for Replicas {
    fn drop(&mut self) {
        if let Some((mut c, path)) = self.nginx.take() {
            let _ = Command::new("nginx")
                .args(["-c", &path.display().to_string(), "-s", "stop"])
                .status();
            let _ = c.wait();
        }
        for (_, c) in &mut self.roles {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
        }
        for (_, c) in &mut self.roles {
            let _ = c.wait();
        }
    }
}

//! A role's configuration file, as `fapiao serve <role> --config <file>` reads it (TOML).
//!
//! ```toml
//! role = "platform"                    # cloud | platform | tax
//! listen = ["127.0.0.1:8444", "[::1]:8444"]
//! admin_listen = ["127.0.0.1:9444"]    # health, metrics; platform's operator API
//! database = "sqlite:///var/lib/fapiao/platform.sqlite"
//! devices_dir = "/etc/fapiao/devices"  # platform: hosted devices' keys
//!
//! [material]
//! suite = "gm"
//! prefix = "/etc/fapiao/pki/platform"
//! trust = ["/etc/fapiao/ca/gm/ca.crt.pem", "/etc/fapiao/ca/intl/ca.crt.pem"]
//! crls = ["/etc/fapiao/ca/gm/crl.pem", "/etc/fapiao/ca/intl/crl.pem"]
//! key_passphrase_file = "/etc/fapiao/secrets/key-passphrase"
//!
//! [peers]
//! tax_url = "https://tax.example:8445"
//! tax_identity = "tax:tax"
//!
//! [limits]                             # all optional; these are the defaults
//! max_connections = 1024               # per listener
//! request_timeout_seconds = 30
//! enterprise_rate = 200.0              # cloud: ERP requests/s per enterprise …
//! enterprise_burst = 400.0             # … and the burst above it
//! address_rate = 400.0                 # requests/s per client address
//! address_burst = 800.0
//! max_body_bytes = 262144              # cloud: largest ERP request body (then 413)
//! shutdown_grace_seconds = 20          # SIGTERM: time for requests in flight to finish
//! ```
//!
//! Environment overrides (applied after the file): `FAPIAO_LISTEN` and
//! `FAPIAO_ADMIN_LISTEN` (comma-separated), `FAPIAO_DATABASE`, `FAPIAO_PLATFORM_URL`, `FAPIAO_CLOUD_URL`,
//! `FAPIAO_TAX_URL`, `FAPIAO_DEVICES_DIR`.

use std::path::{Path, PathBuf};

use fapiao_service::MaterialConfig;
use serde::{Deserialize, Serialize};

use crate::{Result, SystemError};

/// Where a role finds its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peers {
    /// cloud: the platform's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_url: Option<String>,
    /// cloud: the platform's identity (`platform:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_identity: Option<String>,
    /// platform: the tax base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_url: Option<String>,
    /// platform: tax's identity (`tax:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_identity: Option<String>,
    /// agent: its enterprise's cloud's base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_url: Option<String>,
    /// agent: the cloud's identity (`cloud:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_identity: Option<String>,
}

/// One role's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// `cloud`, `platform`, `tax` or `agent`.
    pub role: String,
    /// Business listeners (IPv4 and IPv6 addresses with ports); none for an agent, which
    /// only calls out.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Admin listeners (health, readiness, metrics; platform's operator API). Mutual TLS.
    pub admin_listen: Vec<String>,
    /// `sqlite://<path>` (embedded) or `postgres://user[:password]@host:port/database`
    /// (replicas of the role side by side); `FAPIAO_DATABASE_URL` overrides.
    pub database: String,
    /// platform: directory of the hosted devices' keys; agent: directory of its device's key
    /// (`<taxpayer id>.sign.{crt,key}.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices_dir: Option<PathBuf>,
    /// Key material.
    pub material: MaterialConfig,
    /// Peers.
    #[serde(default)]
    pub peers: Peers,
    /// Connection, time and rate limits.
    #[serde(default)]
    pub limits: fapiao_service::Limits,
    /// How often the audit chain's head is signed (seconds; default 60).
    #[serde(default = "default_audit_sign_seconds")]
    pub audit_sign_seconds: u64,
    /// The append-only file each signed audit head is copied to (`fapiao audit verify
    /// --witness`); keep it off the database's disk, or ship it. `up` writes
    /// `audit/<role>.witness.jsonl` in its data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_witness_file: Option<PathBuf>,
    /// Retention periods (`fapiao retention run`): logs 180 days, invoices and their audit
    /// records 3653 days by default.
    #[serde(default)]
    pub retention: fapiao_store::retention::Retention,
    /// agent: the largest difference between its clock and its peers' (tax's first) at which
    /// it issues (seconds; default 60). Beyond it the agent pulls and issues nothing.
    #[serde(
        default = "default_max_clock_skew_seconds",
        skip_serializing_if = "is_default_max_clock_skew"
    )]
    pub max_clock_skew_seconds: u64,
    /// platform, agent: a tax classification table (CSV, the official export's columns) to
    /// validate orders against instead of the bundled official table (version 32.0) — a newer
    /// table the State Taxation Administration published. Its version is the file's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<PathBuf>,
    /// cloud: whether an ERP's webhook endpoints may be at loopback, private or link-local
    /// addresses (default false: public addresses only, so that an endpoint cannot aim cloud
    /// at its own network). `up` sets it: its demo runs on one machine.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub webhooks_to_private: bool,
}

fn default_max_clock_skew_seconds() -> u64 {
    60
}

fn is_default_max_clock_skew(v: &u64) -> bool {
    *v == default_max_clock_skew_seconds()
}

fn default_audit_sign_seconds() -> u64 {
    60
}

impl RoleConfig {
    /// Reads a file and applies the environment overrides.
    ///
    /// # Errors
    /// [`SystemError`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SystemError(format!("reading {}: {e}", path.display())))?;
        let mut c: Self =
            toml::from_str(&text).map_err(|e| SystemError(format!("{}: {e}", path.display())))?;
        c.apply_env(|k| std::env::var(k).ok());
        c.check()
            .map_err(|e| SystemError(format!("{}: {e}", path.display())))?;
        Ok(c)
    }

    /// Applies `FAPIAO_…` overrides from `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        let list = |v: String| {
            v.split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        if let Some(v) = env("FAPIAO_LISTEN") {
            self.listen = list(v);
        }
        if let Some(v) = env("FAPIAO_ADMIN_LISTEN") {
            self.admin_listen = list(v);
        }
        if let Some(v) = env("FAPIAO_DATABASE_URL").or_else(|| env("FAPIAO_DATABASE")) {
            self.database = v;
        }
        if let Some(v) = env("FAPIAO_PLATFORM_URL") {
            self.peers.platform_url = Some(v);
        }
        if let Some(v) = env("FAPIAO_CLOUD_URL") {
            self.peers.cloud_url = Some(v);
        }
        if let Some(v) = env("FAPIAO_TAX_URL") {
            self.peers.tax_url = Some(v);
        }
        if let Some(v) = env("FAPIAO_DEVICES_DIR") {
            self.devices_dir = Some(PathBuf::from(v));
        }
    }

    /// Checks what each role needs.
    ///
    /// # Errors
    /// The first problem, naming the field.
    pub fn check(&self) -> Result<(), String> {
        if self.listen.is_empty() && self.role != "agent" {
            return Err("listen: at least one address".into());
        }
        if self.admin_listen.is_empty() {
            return Err("admin_listen: at least one address (health, metrics)".into());
        }
        fapiao_store::Engine::of_url(&self.database).map_err(|_| {
            format!(
                "database: `{}` is neither sqlite://<path> nor postgres://user@host:port/database",
                crate::run::redact(&self.database)
            )
        })?;
        for a in self.listen.iter().chain(&self.admin_listen) {
            a.parse::<std::net::SocketAddr>()
                .map_err(|_| format!("listen: `{a}` is not an address:port"))?;
        }
        let need = |v: &Option<String>, f: &str| {
            v.as_ref()
                .map(|_| ())
                .ok_or_else(|| format!("peers.{f} is required for {}", self.role))
        };
        match self.role.as_str() {
            "tax" => Ok(()),
            "platform" => {
                need(&self.peers.tax_url, "tax_url")?;
                need(&self.peers.tax_identity, "tax_identity")?;
                if self.devices_dir.is_none() {
                    return Err("devices_dir is required for platform".into());
                }
                Ok(())
            }
            "cloud" => {
                need(&self.peers.platform_url, "platform_url")?;
                need(&self.peers.platform_identity, "platform_identity")
            }
            "agent" => {
                for (v, f) in [
                    (&self.peers.cloud_url, "cloud_url"),
                    (&self.peers.cloud_identity, "cloud_identity"),
                    (&self.peers.platform_url, "platform_url"),
                    (&self.peers.platform_identity, "platform_identity"),
                    (&self.peers.tax_url, "tax_url"),
                    (&self.peers.tax_identity, "tax_identity"),
                ] {
                    need(v, f)?;
                }
                if self.devices_dir.is_none() {
                    return Err("devices_dir is required for agent (its device's key)".into());
                }
                Ok(())
            }
            other => Err(format!(
                "role: `{other}` is not cloud, platform, tax or agent"
            )),
        }
    }
}

//! The development data directory (`./fapiao-data` by default), created on first use and
//! reused after:
//!
//! ```text
//! secrets/key-passphrase         passphrase of every key below (0600)
//! ca/{gm,intl}/ca.{crt,key}.pem  the CAs; ca/{gm,intl}/crl.pem their CRLs (rewritten on start)
//! ca/revoked.tsv                 serials revoked (suite, serial hex)
//! pki/<role>.{sign,enc,tls-server,tls-client}.{crt,key}.pem
//! pki/<role>.master.key          master key of the role's encryption at rest (0600)
//! devices/<taxpayer id>.sign.{crt,key}.pem   hosted issuing devices of the demo enterprises
//! agent-devices/<taxpayer id>.sign.{crt,key}.pem   the demo agent's device (its premises)
//! pki/agent.*                    the demo agent's certificates (role agent, with taxpayer id)
//! {tax,platform,cloud,agent}.toml      role configurations
//! {tax,platform,cloud,agent}.sqlite    role databases (SQLite, the default; with PostgreSQL
//!                                      they are databases fapiao_<role> on the server)
//! erp-credentials.json           the demo enterprises' ERP API credentials
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use fapiao_crypto::aead::AeadAlgorithm;
use fapiao_crypto::rng::system_rng;
use fapiao_crypto::{
    Ca, Certificate, CertificateRequest, KeyAlgorithm, PrivateKey, Profile, Revocation, Role,
    Subject, Suite,
};
use fapiao_store::vault::MasterKey;
use rand_core::Rng;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::config::{Peers, RoleConfig};
use crate::{Result, SystemError};
use fapiao_service::MaterialConfig as MaterialFiles;

/// The longest a TLS certificate `up` issues lives (CA/Browser Forum's 398 days, less a day).
pub const TLS_LIFETIME: Duration = Duration::days(397);

/// The people `up` issues admin-port certificates for: `pki/<role>.tls-client.*`.
pub const DEV_PEOPLE: [(Role, &str); 3] = [
    (Role::Operator, "dev-operator"),
    (Role::Auditor, "dev-auditor"),
    (Role::Monitor, "dev-monitor"),
];

/// The ports of the roles on loopback (0 = any free port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    /// Cloud (ERP API and envelopes).
    pub cloud: u16,
    /// Cloud admin (health, metrics).
    pub cloud_admin: u16,
    /// Platform (envelopes).
    pub platform: u16,
    /// Platform admin API.
    pub platform_admin: u16,
    /// Tax (envelopes and 查验).
    pub tax: u16,
    /// Tax admin (health, metrics).
    pub tax_admin: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            cloud: 8443,
            cloud_admin: 9443,
            platform: 8444,
            platform_admin: 9444,
            tax: 8445,
            tax_admin: 9445,
        }
    }
}

/// A demo enterprise created by the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoEnterprise {
    /// Credit code.
    pub taxpayer_id: &'static str,
    /// Name.
    pub name: &'static str,
}

/// The demo enterprises: the sellers of `examples/orders/basic.json` and `special.json`.
pub const DEMO_ENTERPRISES: [DemoEnterprise; 2] = [
    DemoEnterprise {
        taxpayer_id: "91310115MA1FP0001X",
        name: "上海云帆信息科技有限公司",
    },
    DemoEnterprise {
        taxpayer_id: "91440300MA5GK00036",
        name: "深圳味源食品有限公司",
    },
];

/// The demo enterprise that issues on its own premises (hosting `enterprise`): its orders
/// wait at cloud for its agent (`fapiao up --enterprise-hosted` starts one).
pub const AGENT_ENTERPRISE: DemoEnterprise = DemoEnterprise {
    taxpayer_id: "91330106MA2H00003L",
    name: "杭州青禾电子商务有限公司",
};

/// Where the roles' databases are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// A SQLite file per role in the data directory (`<role>.sqlite`).
    Sqlite,
    /// A database per role, `<prefix>_<role>`, on a PostgreSQL server
    /// (`postgres://user[:password]@host:port`, no database).
    Postgres {
        /// The server.
        server: String,
        /// The databases' common prefix (`fapiao`).
        prefix: String,
    },
}

impl Storage {
    /// PostgreSQL databases `<prefix>_<role>` on `url`'s server: the prefix is the URL's
    /// database if it names one (`postgres://u@h:5432/staging` → `staging_cloud`, …), else
    /// `fapiao`.
    #[must_use]
    pub fn postgres(url: &str) -> Self {
        let after = url.split_once("://").map_or(url, |(_, rest)| rest);
        let prefix = after
            .split_once('/')
            .map(|(_, path)| path.split('?').next().unwrap_or_default())
            .filter(|p| !p.is_empty())
            .unwrap_or("fapiao");
        Self::Postgres {
            server: server_of(url),
            prefix: prefix.to_owned(),
        }
    }

    /// The database URL of `role` whose data directory is `dir`.
    #[must_use]
    pub fn url(&self, dir: &Path, role: &str) -> String {
        match self {
            Self::Sqlite => format!("sqlite://{}", dir.join(format!("{role}.sqlite")).display()),
            Self::Postgres { server, prefix } => format!("{server}/{prefix}_{role}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Storage;

    #[test]
    fn a_postgres_url_names_the_server_and_the_databases_prefix() {
        let s = Storage::postgres("postgres://app:pw@db:5432");
        assert_eq!(
            s.url(std::path::Path::new("."), "cloud"),
            "postgres://app:pw@db:5432/fapiao_cloud"
        );
        let s = Storage::postgres("postgresql://app@db/staging?sslmode=require");
        assert_eq!(
            s.url(std::path::Path::new("."), "tax"),
            "postgresql://app@db/staging_tax"
        );
    }
}

/// `postgres://user@host:port` of a URL that may name a database and options too.
fn server_of(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    format!("{scheme}://{authority}")
}

/// A data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
}

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> SystemError + '_ {
    move |e| SystemError(format!("{what}: {e}"))
}

fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(err(&path.display().to_string()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(err(&path.display().to_string()))
}

/// Creates `dir` (and its parents) with mode 0700, and makes it 0700 if it existed.
fn private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let what = dir.display().to_string();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(&what))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(err(&what))
}

fn write_public(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(err(&path.display().to_string()))
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(err(&path.display().to_string()))
}

impl Layout {
    /// The layout of `dir` (nothing is created).
    #[must_use]
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the bootstrap already ran here.
    #[must_use]
    pub fn exists(&self) -> bool {
        self.dir.join("secrets/key-passphrase").exists()
    }

    /// The passphrase file.
    #[must_use]
    pub fn passphrase_file(&self) -> PathBuf {
        self.dir.join("secrets/key-passphrase")
    }

    fn passphrase(&self) -> Result<Zeroizing<String>> {
        Ok(Zeroizing::new(
            read(&self.passphrase_file())?.trim_end().to_owned(),
        ))
    }

    /// The config file of a role.
    #[must_use]
    pub fn config_path(&self, role: &str) -> PathBuf {
        self.dir.join(format!("{role}.toml"))
    }

    /// Where `role`'s signed audit heads are copied (`audit_witness_file`).
    #[must_use]
    pub fn witness_path(&self, role: &str) -> PathBuf {
        self.dir.join("audit").join(format!("{role}.witness.jsonl"))
    }

    /// The ERP credentials file.
    #[must_use]
    pub fn credentials_path(&self) -> PathBuf {
        self.dir.join("erp-credentials.json")
    }

    /// The certificate file prefix of a role.
    #[must_use]
    pub fn pki_prefix(&self, role: &str) -> PathBuf {
        self.dir.join("pki").join(role)
    }

    /// The trust anchors (both CAs).
    #[must_use]
    pub fn trust_files(&self) -> Vec<PathBuf> {
        ["gm", "intl"]
            .iter()
            .map(|s| self.dir.join("ca").join(s).join("ca.crt.pem"))
            .collect()
    }

    /// The CRLs (both CAs).
    #[must_use]
    pub fn crl_files(&self) -> Vec<PathBuf> {
        ["gm", "intl"]
            .iter()
            .map(|s| self.dir.join("ca").join(s).join("crl.pem"))
            .collect()
    }

    fn ca(&self, suite: Suite) -> Result<Ca> {
        let d = self.dir.join("ca").join(suite.name());
        let cert =
            Certificate::from_pem(&read(&d.join("ca.crt.pem"))?).map_err(err("CA certificate"))?;
        let pem = Zeroizing::new(read(&d.join("ca.key.pem"))?);
        let key = PrivateKey::from_encrypted_pem(&pem, self.passphrase()?.as_bytes())
            .map_err(err("CA key"))?;
        Ca::from_parts(cert, key).map_err(err("CA"))
    }

    /// Creates everything missing: CAs, role certificates, demo devices, configs for `ports`,
    /// and (re)writes the CRLs. Existing files are kept, except that the configs' databases
    /// become `storage`'s when it is given (`None`: as they are, SQLite files for new ones).
    ///
    /// # Errors
    /// [`SystemError`] naming the file.
    pub fn bootstrap(
        &self,
        suite: Suite,
        ports: Ports,
        storage: Option<&Storage>,
        now: OffsetDateTime,
    ) -> Result<()> {
        // Keys, passphrases and the CA: readable by the owner only (directories 0700, secret
        // files 0600), also where an older build left them 0755.
        private_dir(&self.dir)?;
        for d in [
            "secrets",
            "ca",
            "ca/gm",
            "ca/intl",
            "pki",
            "devices",
            "agent-devices",
            "audit",
        ] {
            private_dir(&self.dir.join(d))?;
        }
        if !self.passphrase_file().exists() {
            let mut b = [0u8; 24];
            system_rng().fill_bytes(&mut b);
            let text: String = b.iter().map(|x| format!("{x:02x}")).collect();
            write_secret(&self.passphrase_file(), text.as_bytes())?;
        }
        let pass = self.passphrase()?;
        for s in [Suite::Gm, Suite::Intl] {
            let d = self.dir.join("ca").join(s.name());
            if d.join("ca.crt.pem").exists() {
                continue;
            }
            let key = PrivateKey::generate(s.key_algorithm(), &mut system_rng());
            let subject = Subject {
                role: Role::Ca,
                name: format!("Fapiao Dev Root {}", s.name().to_uppercase()),
                taxpayer_id: None,
            };
            let ca = Ca::create_root(
                &subject,
                key,
                now - Duration::hours(1),
                now + Duration::days(3650),
                &mut system_rng(),
            )
            .map_err(err("root CA"))?;
            write_secret(
                &d.join("ca.key.pem"),
                ca.key()
                    .to_encrypted_pem(pass.as_bytes(), &mut system_rng())
                    .map_err(err("CA key"))?
                    .as_bytes(),
            )?;
            write_public(
                &d.join("ca.crt.pem"),
                ca.certificate().to_pem().map_err(err("CA"))?.as_bytes(),
            )?;
        }
        for role in ["tax", "platform", "cloud"] {
            if !PathBuf::from(format!("{}.sign.crt.pem", self.pki_prefix(role).display())).exists()
            {
                let r = Role::parse(role).ok_or_else(|| SystemError::new(role))?;
                self.issue_party(
                    suite,
                    r,
                    role,
                    None,
                    &self.pki_prefix(role),
                    now,
                    now + Duration::days(825),
                )?;
            }
            self.renew_tls(role, now)?;
            // Data directories from before encryption at rest get their master keys too.
            let master = PathBuf::from(format!("{}.master.key", self.pki_prefix(role).display()));
            if !master.exists() {
                MasterKey::generate(AeadAlgorithm::for_suite(suite), &master)
                    .map_err(err("master key"))?;
            }
        }
        // The development operator, auditor and monitor (admin ports answer people only).
        for (role, name) in DEV_PEOPLE {
            let prefix = self.pki_prefix(role.name());
            if !PathBuf::from(format!("{}.tls-client.crt.pem", prefix.display())).exists() {
                self.issue_person(role, name, &prefix, now)?;
            }
        }
        for e in DEMO_ENTERPRISES {
            let prefix = self.dir.join("devices").join(e.taxpayer_id);
            if !PathBuf::from(format!("{}.sign.crt.pem", prefix.display())).exists() {
                self.issue_device(e.taxpayer_id, &prefix, now, now + Duration::days(825))?;
            }
        }
        let agent = AGENT_ENTERPRISE.taxpayer_id;
        if !PathBuf::from(format!(
            "{}.sign.crt.pem",
            self.pki_prefix("agent").display()
        ))
        .exists()
        {
            self.issue_party(
                suite,
                Role::Agent,
                &format!("agent-{agent}"),
                Some(agent),
                &self.pki_prefix("agent"),
                now,
                now + Duration::days(825),
            )?;
        }
        let device = self.dir.join("agent-devices").join(agent);
        if !PathBuf::from(format!("{}.sign.crt.pem", device.display())).exists() {
            self.issue_device(agent, &device, now, now + Duration::days(825))?;
        }
        self.write_crls(now)?;
        let base = |p: u16| format!("https://127.0.0.1:{p}");
        let material = |role: &str| MaterialFiles {
            suite: suite.name().to_owned(),
            prefix: self.pki_prefix(role),
            trust: self.trust_files(),
            crls: self.crl_files(),
            key_passphrase_file: Some(self.passphrase_file()),
            master_key_file: None,
            crl_reload_seconds: None,
            crl_grace_seconds: None,
        };
        let db = |role: &str| storage.unwrap_or(&Storage::Sqlite).url(&self.dir, role);
        let configs = [
            RoleConfig {
                role: "tax".into(),
                listen: vec![format!("127.0.0.1:{}", ports.tax)],
                admin_listen: vec![format!("127.0.0.1:{}", ports.tax_admin)],
                database: db("tax"),
                material: material("tax"),
                peers: Peers::default(),
                devices_dir: None,
                limits: fapiao_service::Limits::default(),
                audit_sign_seconds: 60,
                audit_witness_file: None,
                retention: fapiao_store::retention::Retention::default(),
                max_clock_skew_seconds: 60,
                catalog: None,
                webhooks_to_private: false,
            },
            RoleConfig {
                role: "platform".into(),
                listen: vec![format!("127.0.0.1:{}", ports.platform)],
                admin_listen: vec![format!("127.0.0.1:{}", ports.platform_admin)],
                database: db("platform"),
                material: material("platform"),
                peers: Peers {
                    tax_url: Some(base(ports.tax)),
                    tax_identity: Some("tax:tax".into()),
                    ..Peers::default()
                },
                devices_dir: Some(self.dir.join("devices")),
                limits: fapiao_service::Limits::default(),
                audit_sign_seconds: 60,
                audit_witness_file: None,
                retention: fapiao_store::retention::Retention::default(),
                max_clock_skew_seconds: 60,
                catalog: None,
                webhooks_to_private: false,
            },
            RoleConfig {
                role: "cloud".into(),
                listen: vec![format!("127.0.0.1:{}", ports.cloud)],
                admin_listen: vec![format!("127.0.0.1:{}", ports.cloud_admin)],
                database: db("cloud"),
                material: material("cloud"),
                peers: Peers {
                    platform_url: Some(base(ports.platform)),
                    platform_identity: Some("platform:platform".into()),
                    ..Peers::default()
                },
                devices_dir: None,
                limits: fapiao_service::Limits::default(),
                audit_sign_seconds: 60,
                audit_witness_file: None,
                retention: fapiao_store::retention::Retention::default(),
                max_clock_skew_seconds: 60,
                catalog: None,
                webhooks_to_private: true,
            },
            RoleConfig {
                role: "agent".into(),
                listen: Vec::new(),
                admin_listen: vec![format!(
                    "127.0.0.1:{}",
                    if ports.tax_admin == 0 {
                        0
                    } else {
                        ports.tax_admin.saturating_add(1)
                    }
                )],
                database: db("agent"),
                material: material("agent"),
                peers: Peers {
                    cloud_url: Some(base(ports.cloud)),
                    cloud_identity: Some("cloud:cloud".into()),
                    platform_url: Some(base(ports.platform)),
                    platform_identity: Some("platform:platform".into()),
                    tax_url: Some(base(ports.tax)),
                    tax_identity: Some("tax:tax".into()),
                },
                devices_dir: Some(self.dir.join("agent-devices")),
                limits: fapiao_service::Limits::default(),
                audit_sign_seconds: 60,
                audit_witness_file: None,
                retention: fapiao_store::retention::Retention::default(),
                max_clock_skew_seconds: 60,
                catalog: None,
                webhooks_to_private: false,
            },
        ];
        for mut c in configs {
            c.audit_witness_file = Some(self.witness_path(&c.role));
            let path = self.config_path(&c.role);
            let c = if path.exists() {
                // As written, without the environment's overrides.
                let mut old: RoleConfig =
                    toml::from_str(&read(&path)?).map_err(err(&path.display().to_string()))?;
                let database = storage.is_some() && old.database != c.database;
                if !database && old.audit_witness_file.is_some() {
                    continue;
                }
                if database {
                    old.database = c.database;
                }
                // Data directories from before witness files get one.
                old.audit_witness_file = old.audit_witness_file.or(c.audit_witness_file);
                old
            } else {
                c
            };
            let text = toml::to_string_pretty(&c).map_err(err("config"))?;
            write_public(
                &path,
                format!("# Fapiao {} role, written by `fapiao up`.\n{text}", c.role).as_bytes(),
            )?;
        }
        Ok(())
    }

    /// Issues a role's four certificates (sign, enc in `suite`; TLS server and client P-256)
    /// under `prefix`.
    ///
    /// # Errors
    /// [`SystemError`].
    #[expect(clippy::too_many_arguments, reason = "one certificate set")]
    pub fn issue_party(
        &self,
        suite: Suite,
        role: Role,
        name: &str,
        taxpayer_id: Option<&str>,
        prefix: &Path,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Vec<Certificate>> {
        let subject = Subject {
            role,
            name: name.to_owned(),
            taxpayer_id: taxpayer_id.map(str::to_owned),
        };
        let msg = self.ca(suite)?;
        let tls = self.ca(Suite::Intl)?;
        let server = tls_server_profile(name);
        let mut out = Vec::new();
        for (kind, ca, profile, alg) in [
            (".sign", &msg, Profile::Signing, suite.key_algorithm()),
            (".enc", &msg, Profile::Encryption, suite.key_algorithm()),
            (".tls-server", &tls, server, KeyAlgorithm::P256),
            (".tls-client", &tls, Profile::TlsClient, KeyAlgorithm::P256),
        ] {
            let tls_kind = kind.starts_with(".tls");
            out.push(self.issue_one(
                ca,
                &subject,
                profile,
                alg,
                &PathBuf::from(format!("{}{kind}", prefix.display())),
                not_before,
                if tls_kind {
                    not_after.min(not_before + TLS_LIFETIME)
                } else {
                    not_after
                },
            )?);
        }
        let master = PathBuf::from(format!("{}.master.key", prefix.display()));
        if !master.exists() {
            MasterKey::generate(AeadAlgorithm::for_suite(suite), &master)
                .map_err(err("master key"))?;
        }
        Ok(out)
    }

    /// A TLS client configuration presenting the development person of `role` (operator,
    /// auditor or monitor: `pki/<role>.tls-client.*`), for the roles' admin ports.
    ///
    /// # Errors
    /// [`SystemError`] naming the file.
    pub fn person_tls_config(&self, role: Role) -> Result<rustls::ClientConfig> {
        let base = self.pki_prefix(role.name());
        let crt = PathBuf::from(format!("{}.tls-client.crt.pem", base.display()));
        let key = PathBuf::from(format!("{}.tls-client.key.pem", base.display()));
        let chain = Certificate::from_pem_chain(&read(&crt)?).map_err(err("certificate"))?;
        let key = PrivateKey::from_encrypted_pem(&read(&key)?, self.passphrase()?.as_bytes())
            .map_err(err("key"))?;
        let identity = fapiao_crypto::tls::TlsIdentity::new(chain, key).map_err(err("TLS"))?;
        let mut roots = Vec::new();
        for p in self.trust_files() {
            roots.extend(Certificate::from_pem_chain(&read(&p)?).map_err(err("CA"))?);
        }
        let mut trust = fapiao_crypto::TrustStore::new(roots).map_err(err("CA"))?;
        for p in self.crl_files() {
            trust.add_crl(fapiao_crypto::Crl::from_pem(&read(&p)?).map_err(err("CRL"))?);
        }
        fapiao_crypto::tls::client_config(Some(&identity), &trust).map_err(err("TLS"))
    }

    /// Issues `role`'s TLS certificates again when its server certificate has less than 30
    /// days left (they live at most [`TLS_LIFETIME`], the data directory longer).
    ///
    /// # Errors
    /// [`SystemError`].
    pub fn renew_tls(&self, role: &str, now: OffsetDateTime) -> Result<()> {
        let prefix = self.pki_prefix(role);
        let path = PathBuf::from(format!("{}.tls-server.crt.pem", prefix.display()));
        let Ok(cert) = Certificate::from_pem(&read(&path)?) else {
            return Ok(());
        };
        if cert.not_after() > now + Duration::days(30) {
            return Ok(());
        }
        let subject = cert.subject().map_err(err("TLS certificate"))?;
        let tls = self.ca(Suite::Intl)?;
        for (kind, profile) in [
            (".tls-server", tls_server_profile(&subject.name)),
            (".tls-client", Profile::TlsClient),
        ] {
            self.issue_one(
                &tls,
                &subject,
                profile,
                KeyAlgorithm::P256,
                &PathBuf::from(format!("{}{kind}", prefix.display())),
                now,
                now + TLS_LIFETIME,
            )?;
        }
        tracing::info!(role, "TLS certificates renewed");
        Ok(())
    }

    /// Issues a person's admin-port certificate (`role` operator, auditor or monitor; `name`
    /// the person): `<prefix>.tls-client.{crt,key}.pem`, P-256 from the TLS CA, for at most
    /// [`TLS_LIFETIME`].
    ///
    /// # Errors
    /// [`SystemError`], also for a role that is not a person's.
    pub fn issue_person(
        &self,
        role: Role,
        name: &str,
        prefix: &Path,
        not_before: OffsetDateTime,
    ) -> Result<Certificate> {
        if !role.is_person() {
            return Err(SystemError(format!(
                "{role} is not a person's role (operator, auditor, monitor)"
            )));
        }
        let subject = Subject {
            role,
            name: name.to_owned(),
            taxpayer_id: None,
        };
        self.issue_one(
            &self.ca(Suite::Intl)?,
            &subject,
            Profile::TlsClient,
            KeyAlgorithm::P256,
            &PathBuf::from(format!("{}.tls-client", prefix.display())),
            not_before,
            not_before + TLS_LIFETIME,
        )
    }

    /// Issues a hosted device's SM2 signing certificate for an enterprise.
    ///
    /// # Errors
    /// [`SystemError`].
    pub fn issue_device(
        &self,
        taxpayer_id: &str,
        prefix: &Path,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Certificate> {
        let subject = Subject {
            role: Role::Device,
            name: format!("hosted-{taxpayer_id}"),
            taxpayer_id: Some(taxpayer_id.to_owned()),
        };
        self.issue_one(
            &self.ca(Suite::Gm)?,
            &subject,
            Profile::Signing,
            KeyAlgorithm::Sm2,
            &PathBuf::from(format!("{}.sign", prefix.display())),
            not_before,
            not_after,
        )
    }

    #[expect(clippy::too_many_arguments, reason = "one certificate")]
    fn issue_one(
        &self,
        ca: &Ca,
        subject: &Subject,
        profile: Profile,
        alg: KeyAlgorithm,
        base: &Path,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Certificate> {
        let key = PrivateKey::generate(alg, &mut system_rng());
        let req = CertificateRequest {
            subject: subject.clone(),
            profile,
            public_key: key.public_key(),
            not_before,
            not_after,
        };
        let cert = ca.issue(&req, &mut system_rng()).map_err(err("issuing"))?;
        let pass = self.passphrase()?;
        write_secret(
            &PathBuf::from(format!("{}.key.pem", base.display())),
            key.to_encrypted_pem(pass.as_bytes(), &mut system_rng())
                .map_err(err("key"))?
                .as_bytes(),
        )?;
        write_public(
            &PathBuf::from(format!("{}.crt.pem", base.display())),
            cert.to_pem().map_err(err("certificate"))?.as_bytes(),
        )?;
        Ok(cert)
    }

    /// Records `cert` as revoked and rewrites the CRLs.
    ///
    /// # Errors
    /// [`SystemError`].
    pub fn revoke(&self, cert: &Certificate, now: OffsetDateTime) -> Result<()> {
        self.revoke_serial(&cert.serial_hex(), now).map(|_| ())
    }

    /// Records the serial (hex) as revoked at `now` and rewrites the CRLs; `false` if it was
    /// already revoked (nothing changes). The list survives restarts: `up` publishes its CRLs
    /// from it at every start.
    ///
    /// # Errors
    /// [`SystemError`] for a serial that is not hex, or a file that cannot be written.
    pub fn revoke_serial(&self, serial: &str, now: OffsetDateTime) -> Result<bool> {
        let serial = serial.trim().to_ascii_lowercase();
        if serial.is_empty() || fapiao_crypto::hex::decode(&serial).is_none() {
            return Err(SystemError(format!("serial `{serial}`: expected hex")));
        }
        let path = self.dir.join("ca/revoked.tsv");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        if text.lines().any(|l| {
            l.split('\t')
                .next()
                .is_some_and(|s| s.eq_ignore_ascii_case(&serial))
        }) {
            return Ok(false);
        }
        text.push_str(&format!("{serial}\t{}\n", now.unix_timestamp()));
        write_public(&path, text.as_bytes())?;
        self.write_crls(now)?;
        Ok(true)
    }

    /// (Re)writes each CA's CRL with the revoked serials, valid for 30 days from `now`.
    ///
    /// # Errors
    /// [`SystemError`].
    pub fn write_crls(&self, now: OffsetDateTime) -> Result<()> {
        let revoked: Vec<(Vec<u8>, i64)> = fs::read_to_string(self.dir.join("ca/revoked.tsv"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (s, t) = l.split_once('\t')?;
                let bytes = fapiao_crypto::hex::decode(s)?.to_vec();
                Some((bytes, t.parse().ok()?))
            })
            .collect();
        for s in [Suite::Gm, Suite::Intl] {
            let ca = self.ca(s)?;
            let list: Vec<Revocation> = revoked
                .iter()
                .map(|(serial, t)| Revocation {
                    serial: serial.clone(),
                    revoked_at: OffsetDateTime::from_unix_timestamp(*t).unwrap_or(now),
                })
                .collect();
            let number = u64::try_from(now.unix_timestamp()).unwrap_or(1);
            let crl = ca
                .crl(
                    &list,
                    number,
                    now - Duration::minutes(1),
                    now + Duration::days(30),
                )
                .map_err(err("CRL"))?;
            write_public(
                &self.dir.join("ca").join(s.name()).join("crl.pem"),
                crl.to_pem().map_err(err("CRL"))?.as_bytes(),
            )?;
        }
        Ok(())
    }

    /// The demo ERP credentials, by taxpayer id.
    ///
    /// # Errors
    /// [`SystemError`].
    pub fn credentials(
        &self,
    ) -> Result<std::collections::BTreeMap<String, fapiao_cloud::Credentials>> {
        serde_json::from_str(&read(&self.credentials_path())?).map_err(err("erp-credentials.json"))
    }

    /// Stores the demo ERP credentials (0600).
    ///
    /// # Errors
    /// [`SystemError`].
    pub fn save_credentials(
        &self,
        creds: &std::collections::BTreeMap<String, fapiao_cloud::Credentials>,
    ) -> Result<()> {
        write_secret(
            &self.credentials_path(),
            serde_json::to_string_pretty(creds)
                .map_err(err("credentials"))?
                .as_bytes(),
        )
    }
}

/// A role's TLS server profile: `localhost`, the loopback addresses, and its name (the CN)
/// when it is one a client could ask for.
fn tls_server_profile(name: &str) -> Profile {
    let mut dns_names = vec!["localhost".to_owned()];
    if name != "localhost"
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        dns_names.push(name.to_owned());
    }
    Profile::TlsServer {
        dns_names,
        ip_addresses: vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ],
    }
}

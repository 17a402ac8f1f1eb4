//! A role's key material from files: the message party (signing + encryption certificates
//! and keys of the suite), the TLS server and client certificates (P-256), the trust anchors
//! and CRLs. Keys are encrypted PKCS#8 PEM (what `fapiao pki issue` writes); the passphrase
//! comes from a file or `FAPIAO_KEY_PASSPHRASE`.
//!
//! For a prefix `P` the files are `P.sign.crt.pem`, `P.sign.key.pem`, `P.enc.crt.pem`,
//! `P.enc.key.pem`, `P.tls-server.crt.pem`, `P.tls-server.key.pem`, `P.tls-client.crt.pem`,
//! `P.tls-client.key.pem`, and the master key of encryption at rest `P.master.key` (hex,
//! 0600; `FAPIAO_MASTER_KEY` overrides it).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fapiao_crypto::aead::AeadAlgorithm;
use fapiao_crypto::envelope::LocalParty;
use fapiao_crypto::tls::{ClientAuth, TlsIdentity, client_config, server_config};
use fapiao_crypto::{Certificate, Crl, LiveTrust, PrivateKey, Suite, TrustStore};
use fapiao_store::vault::MasterKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Where a role's material is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MaterialConfig {
    /// Message suite: `gm` (SM2/SM3/SM4) or `intl` (P-256/SHA-256/AES).
    pub suite: String,
    /// Files prefix of the certificates and keys (see the module docs).
    pub prefix: PathBuf,
    /// PEM files of the trusted CA certificates (both suites' roots).
    pub trust: Vec<PathBuf>,
    /// PEM CRLs, current one per CA.
    #[serde(default)]
    pub crls: Vec<PathBuf>,
    /// File holding the key passphrase; `FAPIAO_KEY_PASSPHRASE` when absent.
    #[serde(default)]
    pub key_passphrase_file: Option<PathBuf>,
    /// The master key of encryption at rest; `P.master.key` when absent.
    #[serde(default)]
    pub master_key_file: Option<PathBuf>,
    /// How often the CRL files are read again while the role runs (seconds; default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_reload_seconds: Option<u64>,
    /// How long past its next update a CRL is still accepted (seconds; default 0): time for
    /// the CA's next CRL to arrive. Past it, peers of that CA are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_grace_seconds: Option<u64>,
}

/// Why material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MaterialError(pub String);

/// A role's loaded material.
#[derive(Debug, Clone)]
pub struct Material {
    /// The message party.
    pub party: Arc<LocalParty>,
    /// The message signing key (also inside `party`), for signing receipts and records.
    pub signing_key: PrivateKey,
    /// Trust anchors and CRLs, the CRLs reloaded while the role runs
    /// ([`crate::crl_reload`]).
    pub trust: LiveTrust,
    /// TLS server identity.
    pub tls_server: TlsIdentity,
    /// TLS client identity.
    pub tls_client: TlsIdentity,
    /// The master key wrapping the role's data keys (encryption at rest).
    pub master_key: MasterKey,
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn read(path: &Path) -> Result<String, MaterialError> {
    fs::read_to_string(path).map_err(|e| MaterialError(format!("reading {}: {e}", path.display())))
}

impl MaterialConfig {
    /// The trust anchors and the CRLs as their files are now, with the configured grace.
    ///
    /// # Errors
    /// [`MaterialError`] naming the file and the problem.
    pub fn trust_store(&self) -> Result<TrustStore, MaterialError> {
        let mut roots = Vec::new();
        for p in &self.trust {
            roots.extend(
                Certificate::from_pem_chain(&read(p)?)
                    .map_err(|e| MaterialError(format!("{}: {e}", p.display())))?,
            );
        }
        let mut trust =
            TrustStore::new(roots).map_err(|e| MaterialError(format!("trust anchors: {e}")))?;
        for p in &self.crls {
            trust.add_crl(
                Crl::from_pem(&read(p)?)
                    .map_err(|e| MaterialError(format!("{}: {e}", p.display())))?,
            );
        }
        trust.set_crl_grace(time::Duration::seconds(
            i64::try_from(self.crl_grace_seconds.unwrap_or(0)).unwrap_or(i64::MAX),
        ));
        Ok(trust)
    }

    /// How often the CRLs are read again.
    #[must_use]
    pub fn crl_reload_every(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.crl_reload_seconds.unwrap_or(60).max(1))
    }

    /// The master key of encryption at rest (`FAPIAO_MASTER_KEY`, else the configured file,
    /// else `P.master.key`), for the suite's algorithm.
    ///
    /// # Errors
    /// [`MaterialError`] naming the file or variable.
    pub fn master_key(&self) -> Result<MasterKey, MaterialError> {
        let suite = Suite::parse(&self.suite)
            .map_err(|_| MaterialError(format!("suite `{}`: expected gm or intl", self.suite)))?;
        let file = self
            .master_key_file
            .clone()
            .unwrap_or_else(|| with_suffix(&self.prefix, ".master.key"));
        MasterKey::load(AeadAlgorithm::for_suite(suite), &file)
            .map_err(|e| MaterialError(e.to_string()))
    }
}

impl Material {
    /// Loads everything `config` names.
    ///
    /// # Errors
    /// [`MaterialError`] naming the file and the problem.
    pub fn load(config: &MaterialConfig) -> Result<Self, MaterialError> {
        let suite = Suite::parse(&config.suite)
            .map_err(|_| MaterialError(format!("suite `{}`: expected gm or intl", config.suite)))?;
        let passphrase = Zeroizing::new(match &config.key_passphrase_file {
            Some(p) => read(p)?.trim_end_matches(['\r', '\n']).to_owned(),
            None => std::env::var("FAPIAO_KEY_PASSPHRASE").map_err(|_| {
                MaterialError(
                    "no key passphrase: set key_passphrase_file or FAPIAO_KEY_PASSPHRASE".into(),
                )
            })?,
        });
        let pair = |kind: &str| -> Result<(PrivateKey, Vec<Certificate>), MaterialError> {
            let base = with_suffix(&config.prefix, kind);
            let crt = with_suffix(&base, ".crt.pem");
            let key = with_suffix(&base, ".key.pem");
            let chain = Certificate::from_pem_chain(&read(&crt)?)
                .map_err(|e| MaterialError(format!("{}: {e}", crt.display())))?;
            let pem = Zeroizing::new(read(&key)?);
            let key = PrivateKey::from_encrypted_pem(&pem, passphrase.as_bytes())
                .map_err(|e| MaterialError(format!("{}: {e}", key.display())))?;
            Ok((key, chain))
        };
        let leaf = |mut chain: Vec<Certificate>, kind: &str| {
            if chain.is_empty() {
                Err(MaterialError(format!("{kind}: no certificate")))
            } else {
                Ok(chain.remove(0))
            }
        };
        let (sign_key, sign_chain) = pair(".sign")?;
        let (enc_key, enc_chain) = pair(".enc")?;
        let party = LocalParty::new(
            suite,
            sign_key.clone(),
            leaf(sign_chain, "sign")?,
            enc_key,
            leaf(enc_chain, "enc")?,
            Vec::new(),
        )
        .map_err(|e| MaterialError(format!("{}: {e}", config.prefix.display())))?;
        let tls = |kind: &str| -> Result<TlsIdentity, MaterialError> {
            let (key, chain) = pair(kind)?;
            TlsIdentity::new(chain, key).map_err(|e| MaterialError(format!("{kind}: {e}")))
        };
        let trust = config.trust_store()?;
        let master_key = config.master_key()?;
        Ok(Self {
            master_key,
            party: Arc::new(party),
            signing_key: sign_key,
            trust: LiveTrust::new(trust),
            tls_server: tls(".tls-server")?,
            tls_client: tls(".tls-client")?,
        })
    }

    /// The rustls server configuration.
    ///
    /// # Errors
    /// [`MaterialError`].
    pub fn server_config(
        &self,
        client_auth: ClientAuth,
    ) -> Result<Arc<rustls::ServerConfig>, MaterialError> {
        server_config(&self.tls_server, &self.trust, client_auth)
            .map(Arc::new)
            .map_err(|e| MaterialError(format!("TLS server: {e}")))
    }

    /// The rustls client configuration (presents the TLS client certificate).
    ///
    /// # Errors
    /// [`MaterialError`].
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, MaterialError> {
        client_config(Some(&self.tls_client), &self.trust)
            .map(Arc::new)
            .map_err(|e| MaterialError(format!("TLS client: {e}")))
    }
}

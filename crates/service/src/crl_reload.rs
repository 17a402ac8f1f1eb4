//! Revocation that takes effect while a role runs: its CRL files are read again every
//! `crl_reload_seconds` (and on `POST /admin/crls/reload`); when they changed, the role's
//! [`LiveTrust`] is replaced, and the next TLS handshake and the next envelope opened use the
//! new CRLs. A file that does not read or parse leaves the CRLs in force as they were (and
//! says so in the log and the answer): a half-written file never drops a revocation.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::post;
use fapiao_crypto::{Crl, LiveTrust};
use serde::Serialize;

use crate::material::{MaterialConfig, MaterialError};

/// One CRL in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CrlInfo {
    /// Its issuer.
    pub issuer: String,
    /// `thisUpdate`, RFC 3339.
    pub this_update: String,
    /// `nextUpdate`, RFC 3339 (empty if none).
    pub next_update: String,
    /// Serials it lists.
    pub revoked: usize,
}

/// What a reload found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reloaded {
    /// Whether the CRLs differ from those in force before (and were put in force).
    pub changed: bool,
    /// The CRLs in force now.
    pub crls: Vec<CrlInfo>,
}

fn info(crl: &Crl) -> CrlInfo {
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    CrlInfo {
        issuer: crl.issuer_text(),
        this_update: rfc(crl.this_update()),
        next_update: crl.next_update().map(rfc).unwrap_or_default(),
        revoked: crl.revoked_serials().len(),
    }
}

/// Reads the CRL files (and trust anchors) of `config` again and puts them in force in
/// `trust` if they differ.
///
/// # Errors
/// [`MaterialError`] naming the file; the CRLs in force stay as they were.
pub fn reload(config: &MaterialConfig, trust: &LiveTrust) -> Result<Reloaded, MaterialError> {
    let fresh = config.trust_store()?;
    let now = trust.current();
    let der = |t: &fapiao_crypto::TrustStore| -> Vec<Vec<u8>> {
        t.crls().iter().map(|c| c.der().to_vec()).collect()
    };
    let changed = der(&fresh) != der(&now) || fresh.roots() != now.roots();
    let crls = fresh.current_crls().iter().map(info).collect();
    if changed {
        trust.replace(fresh);
    }
    Ok(Reloaded { changed, crls })
}

/// A running reloader.
#[derive(Debug)]
pub struct CrlReloader {
    task: crate::task::Stoppable,
}

impl CrlReloader {
    /// Reloads every `config.crl_reload_every()`.
    #[must_use]
    pub fn spawn(config: MaterialConfig, trust: LiveTrust) -> Self {
        let every = config.crl_reload_every();
        let task = crate::task::Stoppable::spawn(|mut stopped| async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => break,
                }
                log(&reload(&config, &trust));
            }
        });
        Self { task }
    }

    /// Stops.
    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }
}

fn log(result: &Result<Reloaded, MaterialError>) {
    match result {
        Ok(r) if r.changed => {
            tracing::info!(crls = ?r.crls, "CRLs reloaded: the new revocations are in force");
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "CRLs not reloaded; those in force stay"),
    }
}

/// `POST /admin/crls/reload`: reloads now; answers what is in force (200), or why the files
/// were not taken (500, the CRLs in force unchanged).
pub fn routes(config: MaterialConfig, trust: LiveTrust) -> Router {
    Router::new().route(
        "/admin/crls/reload",
        post(move || {
            let result = reload(&config, &trust);
            log(&result);
            async move {
                match result {
                    Ok(r) => axum::Json(r).into_response(),
                    Err(e) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        axum::Json(serde_json::json!({
                            "code": "crl_unreadable",
                            "message": format!("{e}; the CRLs in force are unchanged"),
                        })),
                    )
                        .into_response(),
                }
            }
        }),
    )
}

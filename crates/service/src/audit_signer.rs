//! Signs the audit chain's head from time to time with the role's signing key
//! (`fapiao_store::audit::sign_head`), so that a chain rewritten or cut short later no longer
//! matches a signed head.

use std::time::Duration;

use fapiao_store::Db;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Material;

/// A running signer.
#[derive(Debug)]
pub struct AuditSigner {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl AuditSigner {
    /// Signs the head every `every` (and once more when stopped).
    #[must_use]
    pub fn spawn(db: Db, material: &Material, every: Duration) -> Self {
        let key = material.signing_key.clone();
        let cert = material.party.signing_certificate().der().to_vec();
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let stopping = tokio::select! {
                    () = tokio::time::sleep(every) => false,
                    _ = stopped.changed() => true,
                };
                let signed = fapiao_store::audit::sign_head(
                    &db,
                    fapiao_protocol::client::now(),
                    &cert,
                    |bytes| key.sign(bytes).ok(),
                )
                .await;
                if let Err(e) = signed {
                    tracing::error!(error = %e, "signing the audit head failed");
                }
                if stopping {
                    break;
                }
            }
        });
        Self { stop, task }
    }

    /// Signs a last time and stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

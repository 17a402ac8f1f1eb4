//! Signs the audit chain's head from time to time with the role's signing key
//! (`fapiao_store::audit::sign_head`), so that a chain rewritten or cut short later no longer
//! matches a signed head, and copies each head out of the database: to the witness file, and
//! to the log (`audit head signed`, with the witness line), which deployments ship elsewhere.

use std::time::Duration;

use fapiao_store::Db;
use fapiao_store::audit::Witness;

use crate::Material;

/// A running signer.
#[derive(Debug)]
pub struct AuditSigner {
    task: crate::task::Stoppable,
}

impl AuditSigner {
    /// Signs the head at once, then every `every`, and once more when stopped; appends each
    /// head signed to `witness`.
    #[must_use]
    pub fn spawn(db: Db, material: &Material, every: Duration, witness: Option<Witness>) -> Self {
        let key = material.signing_key.clone();
        let cert = material.party.signing_certificate().der().to_vec();
        let task = crate::task::Stoppable::spawn(|mut stopped| async move {
            // At start too: records a killed process left unsigned get their head now.
            let mut stopping = false;
            loop {
                let signed = fapiao_store::audit::sign_head(
                    &db,
                    fapiao_protocol::client::now(),
                    &cert,
                    |bytes| key.sign(bytes).ok(),
                )
                .await;
                match signed {
                    Ok(Some(head)) => {
                        let line = head.to_witness_line();
                        tracing::info!(seq = head.seq, witness = %line, "audit head signed");
                        if let Some(w) = &witness
                            && let Err(e) = w.append(&head)
                        {
                            tracing::error!(path = %w.path().display(), error = %e,
                                "appending the audit head to the witness file failed");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "signing the audit head failed"),
                }
                if stopping {
                    break;
                }
                stopping = tokio::select! {
                    () = tokio::time::sleep(every) => false,
                    _ = stopped.changed() => true,
                };
            }
        });
        Self { task }
    }

    /// Signs a last time and stops.
    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }
}

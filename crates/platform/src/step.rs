//! What the steps of the platform's work share: how a step ends ([`Step`]), refusals, and the
//! audit record every state change appends. Below the modules that handle messages (orders,
//! agents, the outbox, the registry): they import from here, never from one another.

use fapiao_protocol::Code;
use fapiao_protocol::client::now;
use fapiao_protocol::wire::Refusal;
use fapiao_store::{StoreError, Tx};

pub(crate) use fapiao_protocol::client::china_now;

pub(crate) enum Step {
    Refused(Refusal),
    /// A number was consumed and recorded void; commit that, then fail.
    Voided(String),
    NeedNumbers {
        year: u8,
        province: u8,
    },
    Failed(String),
}

impl From<StoreError> for Step {
    fn from(e: StoreError) -> Self {
        match e {
            // The envelope layer refuses the message itself; this answer is not sent.
            StoreError::Replayed { .. } => refused(Code::RequestReplayed, e.to_string()),
            e => Self::Failed(e.to_string()),
        }
    }
}

pub(crate) fn refused(code: Code, message: impl Into<String>) -> Step {
    Step::Refused(Refusal::new(code, message))
}

/// Appends an audit record in the transaction.
pub(crate) async fn audit(
    tx: &mut Tx,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    fapiao_store::audit::append(tx, now(), actor, action, subject, detail).await
}

//! Exchanges with the agent's peers: one signed and encrypted envelope each way.

use super::*;

/// A batch's answer read as `A`, whose items (`items` of it) answer the `sent` items of the
/// batch one to one; otherwise why not.
pub(crate) fn one_each<A: serde::de::DeserializeOwned, T>(
    answer: &fapiao_protocol::client::Answer,
    peer: &str,
    sent: usize,
    items: impl FnOnce(A) -> Vec<T>,
) -> Result<Vec<T>, String> {
    let got = items(answer.parse::<A>(peer).map_err(|e| e.to_string())?);
    if got.len() == sent {
        Ok(got)
    } else {
        Err(format!(
            "{peer} answered {} {} for {sent} items",
            got.len(),
            answer.message_type
        ))
    }
}

impl Agent {
    /// Calls a peer and reads an answer of type `expect` (a refusal is an error naming it).
    pub(crate) async fn call<Q: Serialize, A: serde::de::DeserializeOwned>(
        &self,
        peer: &EnvelopeClient,
        message: &str,
        body: &Q,
        expect: &str,
    ) -> Result<A, AgentError> {
        let answer = peer.call(message, body).await;
        self.observe(peer, &answer);
        // A peer that answered with a refusal is not "unreachable": its code says why
        // (logged as a warning by the health record).
        let answer = answer.map_err(|e: CallError| {
            if e.is_transient() {
                AgentError::Peer(format!("{} unreachable: {e}", peer.peer_identity()))
            } else {
                AgentError::Peer(format!("{} refused: {e}", peer.peer_identity()))
            }
        })?;
        if answer.message_type != expect {
            return Err(AgentError::Peer(format!(
                "{} answered {}: {}",
                peer.peer_identity(),
                answer.message_type,
                String::from_utf8_lossy(&answer.payload)
            )));
        }
        answer
            .parse(peer.peer_identity())
            .map_err(|e| AgentError::Peer(e.to_string()))
    }
}

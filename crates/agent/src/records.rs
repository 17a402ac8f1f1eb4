//! The invoices issued here, as stored (sealed) and read back.

use super::*;

impl Agent {
    pub(crate) async fn local_invoice(&self, number: &str) -> Result<Option<Invoice>, AgentError> {
        let record: Option<String> = query_scalar("SELECT record FROM invoices WHERE number = $1")
            .bind(number)
            .fetch_optional(self.inner.db.pool())
            .await?;
        match record {
            Some(r) => Ok(Some(self.read_record(number, &r).await?.invoice)),
            None => Ok(None),
        }
    }

    pub(crate) async fn read_wire(
        &self,
        number: &str,
        sealed: &str,
    ) -> Result<WireInvoice, AgentError> {
        let json = self.inner.vault.unseal_str(RECORD, number, sealed).await?;
        serde_json::from_str(&json).map_err(|e| AgentError::Setup(format!("stored invoice: {e}")))
    }

    pub(crate) async fn read_record(
        &self,
        number: &str,
        sealed: &str,
    ) -> Result<fapiao_issuer::SignedInvoice, AgentError> {
        self.read_wire(number, sealed)
            .await?
            .to_signed()
            .map_err(|e| AgentError::Setup(format!("stored invoice: {e}")))
    }
}

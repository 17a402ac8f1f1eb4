//! An ERP client of the cloud's API: signs every request with the enterprise's credentials
//! (`fapiao_protocol::erp`) and keeps its HTTPS connections alive.

use std::sync::Arc;

use fapiao_cloud::Credentials;
use fapiao_crypto::TrustStore;
use fapiao_protocol::client::{CallError, new_id, now};
use fapiao_protocol::erp::{KEY_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};
use fapiao_protocol::{HttpsClient, Response};
use http::Method;

/// An ERP client for one enterprise.
#[derive(Debug)]
pub struct ErpClient {
    http: HttpsClient,
    creds: Credentials,
}

impl ErpClient {
    /// A client of the cloud at `base_url`, verifying its certificate with `trust`.
    ///
    /// # Errors
    /// [`CallError`] for a bad URL or TLS setup.
    pub fn new(base_url: &str, trust: &TrustStore, creds: Credentials) -> Result<Self, CallError> {
        let config = fapiao_crypto::tls::client_config(None, trust)
            .map_err(|e| CallError::Local(e.to_string()))?;
        Ok(Self {
            http: HttpsClient::new(base_url, Arc::new(config))?,
            creds,
        })
    }

    /// Sends a signed request (`body` empty for GET).
    ///
    /// # Errors
    /// [`CallError`] when the cloud cannot be reached.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<Response, CallError> {
        let ts = now().unix_timestamp();
        let nonce = new_id();
        let signature = sign(
            self.creds.secret.as_bytes(),
            method.as_str(),
            path_and_query,
            ts,
            &nonce,
            body,
        );
        let mut headers = vec![
            (KEY_HEADER, self.creds.key_id.clone()),
            (TIMESTAMP_HEADER, ts.to_string()),
            (NONCE_HEADER, nonce),
            (SIGNATURE_HEADER, signature),
        ];
        if !body.is_empty() {
            headers.push(("content-type", "application/json".to_owned()));
        }
        self.http
            .request(method, path_and_query, &headers, body.to_vec())
            .await
    }

    /// The same request with explicit headers (for tests of the signature checks).
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn send_raw(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: &[u8],
    ) -> Result<Response, CallError> {
        self.http
            .request(method, path_and_query, headers, body.to_vec())
            .await
    }

    /// The credentials.
    #[must_use]
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }
}

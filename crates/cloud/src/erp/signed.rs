//! Signed ERP requests: the key, the timestamp window, the HMAC signature, the nonce spent
//! once.

use super::*;

impl Cloud {
    /// Checks the ERP request signature and spends its nonce; returns the enterprise.
    pub(crate) async fn authenticate(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        rid: &str,
    ) -> Result<String, ApiError> {
        let (enterprise, nonce) = self.signed(method, uri, headers, body, rid).await?;
        self.spend(&nonce, rid).await?;
        Ok(enterprise)
    }

    /// Checks the ERP request signature, its timestamp and the enterprise's rate, and that
    /// this process has not seen its nonce; returns the enterprise and the nonce, to be spent
    /// durably before the request is answered: by the write transaction that acts on the
    /// request ([`fapiao_store::Db::begin_write_for`]), or by [`Self::spend`].
    pub(crate) async fn signed(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
        rid: &str,
    ) -> Result<(String, Arrival), ApiError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let unauth = |m: &str| ApiError::new(Code::Unauthenticated, m, rid);
        let (Some(key), Some(ts), Some(nonce), Some(sig)) = (
            header(erp::KEY_HEADER),
            header(erp::TIMESTAMP_HEADER),
            header(erp::NONCE_HEADER),
            header(erp::SIGNATURE_HEADER),
        ) else {
            return Err(unauth(
                "sign the request: X-Fapiao-Key, X-Fapiao-Timestamp, X-Fapiao-Nonce, X-Fapiao-Signature",
            ));
        };
        let ts: i64 = ts
            .parse()
            .map_err(|_| unauth("X-Fapiao-Timestamp: Unix seconds"))?;
        if !erp::nonce_is_valid(nonce) {
            return Err(unauth("X-Fapiao-Nonce: 16 to 64 of [A-Za-z0-9_-]"));
        }
        let row = query("SELECT taxpayer_id, secret FROM enterprises WHERE key_id = $1")
            .bind(key)
            .fetch_optional(&mut *self.inner.db.read().await.map_err(|e| internal(rid, &e))?)
            .await
            .map_err(|e| internal(rid, &e))?;
        let Some(row) = row else {
            return Err(unauth("unknown key or bad signature"));
        };
        let enterprise: String = row.try_get("taxpayer_id").map_err(|e| internal(rid, &e))?;
        let secret: String = row.try_get("secret").map_err(|e| internal(rid, &e))?;
        let secret = self
            .inner
            .vault
            .unseal_str(crate::SECRET, &enterprise, &secret)
            .await
            .map_err(|e| internal(rid, &e))?;
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        if !erp::verify(
            secret.as_bytes(),
            method.as_str(),
            path,
            ts,
            nonce,
            body,
            sig,
        ) {
            return Err(unauth("unknown key or bad signature"));
        }
        // Only a correctly signed request counts against the enterprise's rate: knowing a key
        // id is not enough to starve an enterprise.
        if let Err(wait) = self.inner.per_enterprise.check(&enterprise) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(ApiError::new(
                Code::RateLimited,
                format!("too many requests for this enterprise; retry in {secs} s"),
                rid,
            )
            .with_retry_after(secs.max(1)));
        }
        let t = now();
        if (t.unix_timestamp() - ts).abs() > erp::WINDOW_SECONDS {
            return Err(ApiError::new(
                Code::RequestStale,
                format!(
                    "the timestamp is more than {} s from the server's clock",
                    erp::WINDOW_SECONDS
                ),
                rid,
            ));
        }
        let expires = time::OffsetDateTime::from_unix_timestamp(ts + 2 * erp::WINDOW_SECONDS)
            .map_err(|e| internal(rid, &e))?;
        let nonce = Arrival::new(format!("erp:{key}"), nonce, expires, t);
        let fresh = self
            .inner
            .nonces
            .check_and_remember(nonce.sender(), nonce.message_id(), expires, t)
            .map_err(|e| internal(rid, &e))?;
        if !fresh {
            return Err(replayed(rid));
        }
        Ok((enterprise, nonce))
    }

    /// Checks a request that may write ([`Self::signed`]), runs `act` on its enterprise and
    /// nonce, and answers once the nonce is durably spent ([`Self::spend`]) — by `act`'s write
    /// transaction, or after it.
    pub(crate) async fn signed_then<T>(
        &self,
        request: (&Method, &Uri, &HeaderMap, &[u8]),
        rid: &str,
        act: impl AsyncFnOnce(&str, &Arrival) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let (method, uri, headers, body) = request;
        let (enterprise, nonce) = self.signed(method, uri, headers, body, rid).await?;
        let outcome = act(&enterprise, &nonce).await;
        match self.spend(&nonce, rid).await {
            Ok(()) => outcome,
            // The order's outcome is unknown to the ERP already (platform issued, storing
            // failed): that is the answer, whatever became of the nonce — a replay of the
            // request only asks for the same order again.
            Err(_)
                if outcome
                    .as_ref()
                    .is_err_and(|e| e.code == Code::OutcomeUnknown.as_str()) =>
            {
                outcome
            }
            Err(e) => Err(e),
        }
    }

    /// Makes sure a request's nonce is durably spent before it is answered: at once when
    /// the request's write transaction spent it, else in a commit of its own (shared with
    /// concurrent requests). A nonce spent before is a replay.
    pub(crate) async fn spend(&self, nonce: &Arrival, rid: &str) -> Result<(), ApiError> {
        match self.inner.db.remember(nonce).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(replayed(rid)),
            Err(e) => Err(internal(rid, &e)),
        }
    }
}

//! Limits that keep one client from taking a service down: token-bucket rate limits by key
//! (per enterprise, per client address), a request timeout, and (in [`crate::serve_tls_live`])
//! caps on open connections, in all and per address, and handshake and header time limits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fapiao_protocol::Code;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{ApiError, request_id};

/// Configurable limits of a role (the `[limits]` table of its config).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Open connections per listener; further clients wait to be accepted.
    pub max_connections: usize,
    /// Longest time a request may take before it is answered `request_timeout`.
    pub request_timeout_seconds: u64,
    /// ERP requests per second per enterprise (sustained).
    pub enterprise_rate: f64,
    /// ERP requests an enterprise may burst.
    pub enterprise_burst: f64,
    /// Requests per second per client address (sustained).
    pub address_rate: f64,
    /// Requests a client address may burst.
    pub address_burst: f64,
    /// Largest ERP request body, bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Open connections per client address (more are closed at once). Behind a load
    /// balancer that does not pass the client's address, raise it to the balancer's share.
    pub max_connections_per_address: usize,
    /// Longest time for the TLS handshake, and for each request's headers (then the
    /// connection is closed).
    pub handshake_timeout_seconds: u64,
    /// On SIGTERM or SIGINT: how long requests in flight and the workers' current steps
    /// may take to finish (readiness answers 503 meanwhile); what is still running then is
    /// cut.
    pub shutdown_grace_seconds: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            request_timeout_seconds: 30,
            enterprise_rate: 200.0,
            enterprise_burst: 400.0,
            address_rate: 400.0,
            address_burst: 800.0,
            max_body_bytes: 256 * 1024,
            max_connections_per_address: 512,
            handshake_timeout_seconds: 10,
            shutdown_grace_seconds: 20,
        }
    }
}

/// The client's address, put in each request's extensions by the accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `rate` tokens per second, at most `burst` saved.
    #[must_use]
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate: rate.max(0.001),
            burst: burst.max(1.0),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how long until one is available.
    ///
    /// # Errors
    /// The wait, when the bucket is empty.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() > 100_000 {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

/// Failed guesses per key — an invoice number at the download portal and at 查验, where the
/// other facts (date, 价税合计, the buyer's digits) are what is guessed: the first `free`
/// failures cost nothing, each further one doubles a wait (1 s, 2 s, 4 s … up to `max_wait`)
/// during which the key is refused whatever is asked, from any address. A correct answer
/// does not reset the count, so an attacker cannot interleave their own invoice's facts. The
/// count is per process (with replicas, each keeps its own) and forgotten a day after the
/// last failure.
#[derive(Debug)]
pub struct Attempts {
    free: u32,
    max_wait: Duration,
    keys: Mutex<HashMap<String, Guesses>>,
}

#[derive(Debug, Clone, Copy)]
struct Guesses {
    failures: u32,
    until: Instant,
    last: Instant,
}

impl Attempts {
    /// `free` failures per key, then waits doubling up to `max_wait`.
    #[must_use]
    pub fn new(free: u32, max_wait: Duration) -> Self {
        Self {
            free,
            max_wait,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key` may be tried now; else how long until it may.
    ///
    /// # Errors
    /// The wait.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(keys) = self.keys.lock() else {
            return Ok(());
        };
        match keys.get(key) {
            Some(g) if g.until > now => Err(g.until - now),
            _ => Ok(()),
        }
    }

    /// Records a failed guess at `key`.
    pub fn failed(&self, key: &str) {
        let now = Instant::now();
        let Ok(mut keys) = self.keys.lock() else {
            return;
        };
        if keys.len() > 100_000 {
            let day = Duration::from_secs(86_400);
            keys.retain(|_, g| now.duration_since(g.last) < day);
        }
        let g = keys.entry(key.to_owned()).or_insert(Guesses {
            failures: 0,
            until: now,
            last: now,
        });
        if now.duration_since(g.last) > Duration::from_secs(86_400) {
            g.failures = 0;
        }
        g.failures += 1;
        g.last = now;
        if let Some(over) = g.failures.checked_sub(self.free)
            && over > 0
        {
            let wait = Duration::from_secs(1_u64 << (over - 1).min(20)).min(self.max_wait);
            g.until = now + wait;
        }
    }
}

/// The `rate_limited` answer, with `Retry-After` in whole seconds (at least 1).
#[must_use]
pub fn limited(wait: Duration, rid: &str) -> Response {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::new(
        Code::RateLimited,
        format!("too many requests; retry in {secs} s"),
        rid,
    )
    .with_retry_after(secs.max(1))
    .into_response()
}

/// Middleware: refuses a client address over its rate.
pub async fn per_address(
    State(limiter): State<std::sync::Arc<RateLimiter>>,
    req: Request,
    next: Next,
) -> Response {
    let key = req
        .extensions()
        .get::<ClientAddr>()
        .map(|a| a.0.ip().to_string());
    if let Some(key) = key
        && let Err(wait) = limiter.check(&key)
    {
        return limited(wait, &request_id(req.headers()));
    }
    next.run(req).await
}

/// Middleware: answers `request_timeout` when the handler takes longer than the state's
/// duration.
pub async fn timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let rid = request_id(req.headers());
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            ApiError::new(Code::RequestTimeout, "the request took too long", rid).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn buckets_allow_the_burst_then_the_rate() {
        let l = RateLimiter::new(2.0, 3.0);
        for _ in 0..3 {
            assert!(l.check("a").is_ok());
        }
        let wait = l.check("a").unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(l.check("b").is_ok(), "keys are independent");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(l.check("a").is_ok());
        assert!(l.check("a").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn guesses_are_free_then_wait_doubling_whatever_the_answer() {
        let a = Attempts::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            a.check("n").unwrap();
            a.failed("n");
        }
        a.check("n").unwrap();
        a.failed("n");
        assert_eq!(a.check("n"), Err(Duration::from_secs(1)));
        assert!(a.check("other").is_ok(), "per key");
        tokio::time::advance(Duration::from_secs(1)).await;
        a.check("n").unwrap();
        a.failed("n");
        assert_eq!(a.check("n"), Err(Duration::from_secs(2)));
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(60)).await;
            a.failed("n");
        }
        assert_eq!(a.check("n"), Err(Duration::from_secs(60)), "capped");
        tokio::time::advance(Duration::from_secs(86_401)).await;
        a.check("n").unwrap();
        a.failed("n");
        assert!(
            a.check("n").is_ok(),
            "forgotten after a day without failures"
        );
    }
}

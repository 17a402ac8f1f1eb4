//! What a running role knows of its own health beyond its counters, for `/readyz`, `/metrics`
//! and its workers: whether it is stopping, whether its database takes a write (checked with
//! a small write transaction, at most every [`WRITE_CHECK_EVERY`]), and for each peer it
//! calls whether the peer answers, since when it does not, and how far the peer's clock is
//! from ours.
//!
//! Peers are learnt from the calls the role makes anyway ([`Health::observe`]) and from
//! probes ([`Health::probe`]: the peer's encryption-certificate page, the cheapest request
//! its business port answers over mutual TLS). A peer that stopped answering is probed every
//! [`PROBE_DOWN_EVERY`], so that work waiting for it goes out as soon as it is back rather
//! than when each entry's backoff runs out.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fapiao_protocol::client::{CallError, EnvelopeClient};
use fapiao_store::Db;
use time::OffsetDateTime;

use crate::Material;
use crate::metrics::Gauge;
use crate::ops::Check;

/// How long a write check's result is reused.
pub const WRITE_CHECK_EVERY: Duration = Duration::from_secs(2);
/// How often a peer that does not answer is probed.
pub const PROBE_DOWN_EVERY: Duration = Duration::from_secs(2);
/// How often a peer that answers is probed when nothing else was sent to it (its clock).
pub const PROBE_UP_EVERY: Duration = Duration::from_secs(15);

/// A queue whose pending entries can wait for a peer that did not answer (a `waiting_for`
/// column beside `state` and `next_attempt_at`): its statements, in the queue's table.
#[derive(Debug, Clone, Copy)]
pub struct WaitingQueue {
    /// The peers some pending, not yet due entry waits for (`$1`: now).
    pub waiting: &'static str,
    /// Makes the entries waiting for peer `$2` due at `$1`.
    pub release: &'static str,
}

/// The shared health of one running role.
#[derive(Debug, Clone)]
pub struct Health(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    instance: String,
    stopping: AtomicBool,
    /// The last write check: when (monotonic) and what it found.
    write: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), String>)>>,
    peers: Mutex<BTreeMap<String, Peer>>,
}

/// What is known of one peer.
#[derive(Debug, Clone, Default)]
struct Peer {
    /// Whether its failure makes this role not ready.
    required: bool,
    /// `None` until it was first called or probed.
    answering: Option<bool>,
    /// When `answering` last changed (Unix seconds).
    since: i64,
    /// Why it did not answer, or the code of its last refusal.
    last_error: Option<String>,
    /// Its last refusal (logged once, until another comes).
    last_refusal: Option<String>,
    /// Its clock minus ours, seconds (from its `date` header), when last seen.
    skew_seconds: Option<i64>,
    /// When it was last probed or called.
    last_seen: Option<tokio::time::Instant>,
}

/// A peer's state, for the role's own decisions and for `status` pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// `role:name`.
    pub peer: String,
    /// Whether it answered last time (`None`: not called yet).
    pub answering: Option<bool>,
    /// Since when (Unix seconds).
    pub since: i64,
    /// Why it did not answer, or what it refused.
    pub last_error: Option<String>,
    /// Its clock minus ours, seconds.
    pub skew_seconds: Option<i64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Health {
    /// The health of the process `instance` ([`crate::instance_id`]).
    #[must_use]
    pub fn new(instance: impl Into<String>) -> Self {
        Self(Arc::new(Inner {
            instance: instance.into(),
            stopping: AtomicBool::new(false),
            write: tokio::sync::Mutex::new(None),
            peers: Mutex::new(BTreeMap::new()),
        }))
    }

    /// This process's instance id.
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.0.instance
    }

    /// Declares a peer: `required` when this role cannot do its work without it (its failure
    /// makes the role not ready); otherwise it is reported, not counted.
    pub fn watch(&self, peer: &str, required: bool) {
        lock(&self.0.peers)
            .entry(peer.to_owned())
            .or_default()
            .required = required;
    }

    /// From now on the role reports not ready (it is stopping).
    pub fn begin_stopping(&self) {
        self.0.stopping.store(true, Ordering::SeqCst);
    }

    /// Whether the role is stopping.
    #[must_use]
    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::SeqCst)
    }

    /// Records what a call to `peer` came to: an answer (even a refusal: the peer is up),
    /// or a transport failure (unreachable, timeout, 5xx). Returns `true` when the peer
    /// answered after not answering: the caller lets what waited for it go at once.
    pub fn observe<T>(&self, peer: &str, result: &Result<T, CallError>, now: i64) -> bool {
        match result {
            Ok(_) => {
                let back = self.answered(peer, None, now);
                lock(&self.0.peers)
                    .entry(peer.to_owned())
                    .or_default()
                    .last_refusal = None;
                back
            }
            Err(e) if e.is_transient() => {
                self.unreachable(peer, &e.to_string(), now);
                false
            }
            Err(e) => {
                let back = self.answered(peer, None, now);
                let why = e.to_string();
                let mut peers = lock(&self.0.peers);
                let p = peers.entry(peer.to_owned()).or_default();
                // Once per refusal, not once per retry of it.
                if p.last_refusal.as_deref() != Some(why.as_str()) {
                    tracing::warn!(peer, error = %why, "peer refused a request");
                }
                p.last_error = Some(why.clone());
                p.last_refusal = Some(why);
                back
            }
        }
    }

    /// `peer` answered (its clock `skew` seconds from ours, when known). `true` when it had
    /// not answered before.
    pub fn answered(&self, peer: &str, skew: Option<i64>, now: i64) -> bool {
        let mut peers = lock(&self.0.peers);
        let p = peers.entry(peer.to_owned()).or_default();
        let back = p.answering == Some(false);
        if back {
            tracing::info!(peer, down_seconds = now - p.since, "peer answers again");
        }
        if p.answering != Some(true) {
            p.since = now;
        }
        p.answering = Some(true);
        p.last_error = None;
        if skew.is_some() {
            p.skew_seconds = skew;
        }
        p.last_seen = Some(tokio::time::Instant::now());
        back
    }

    /// `peer` could not be reached (`why`).
    pub fn unreachable(&self, peer: &str, why: &str, now: i64) {
        let mut peers = lock(&self.0.peers);
        let p = peers.entry(peer.to_owned()).or_default();
        if p.answering != Some(false) {
            tracing::warn!(peer, error = why, "peer does not answer");
            p.since = now;
        }
        p.answering = Some(false);
        p.last_error = Some(why.to_owned());
        p.last_seen = Some(tokio::time::Instant::now());
    }

    /// Whether `peer` is due a probe: not answering and not tried for [`PROBE_DOWN_EVERY`],
    /// or not seen for [`PROBE_UP_EVERY`].
    #[must_use]
    pub fn probe_due(&self, peer: &str) -> bool {
        let every = if lock(&self.0.peers)
            .get(peer)
            .is_some_and(|p| p.answering == Some(false))
        {
            PROBE_DOWN_EVERY
        } else {
            PROBE_UP_EVERY
        };
        self.probe_due_within(peer, every)
    }

    /// Whether `peer` was not probed or called for `every` (or ever).
    #[must_use]
    pub fn probe_due_within(&self, peer: &str, every: Duration) -> bool {
        lock(&self.0.peers)
            .get(peer)
            .is_none_or(|p| p.last_seen.is_none_or(|t| t.elapsed() >= every))
    }

    /// Probes the peer `client` calls and records the answer and its clock. `true` when it
    /// answered after not answering.
    pub async fn probe(&self, client: &EnvelopeClient, now: OffsetDateTime) -> bool {
        let peer = client.peer_identity();
        match client.probe().await {
            Ok(peer_time) => {
                let skew = peer_time.map(|t| (t - now).whole_seconds());
                self.answered(peer, skew, now.unix_timestamp())
            }
            Err(e) => {
                self.observe::<()>(peer, &Err(e), now.unix_timestamp());
                false
            }
        }
    }

    /// Probes `client`'s peer if [`Self::probe_due`]; whether it answered after not
    /// answering.
    pub async fn probe_if_due(&self, client: &EnvelopeClient, now: OffsetDateTime) -> bool {
        if self.probe_due(client.peer_identity()) {
            self.probe(client, now).await
        } else {
            false
        }
    }

    /// Whether `peer` answered the last call or probe.
    #[must_use]
    pub fn is_answering(&self, peer: &str) -> bool {
        lock(&self.0.peers)
            .get(peer)
            .is_some_and(|p| p.answering == Some(true))
    }

    /// Whether `peer` answers now: known to (the last call or probe got through), or
    /// answering a probe when one is due. For work that waits for the peer.
    pub async fn answers_now(&self, client: &EnvelopeClient, now: OffsetDateTime) -> bool {
        let peer = client.peer_identity();
        if self.is_answering(peer) {
            return true;
        }
        if !self.probe_due(peer) {
            return false;
        }
        self.probe(client, now).await;
        self.is_answering(peer)
    }

    /// The peers entries of `queue` wait for (not yet due at `now`).
    ///
    /// # Errors
    /// [`fapiao_store::StoreError`].
    pub async fn peers_waiting(
        &self,
        db: &Db,
        queue: WaitingQueue,
        now: i64,
    ) -> Result<Vec<String>, fapiao_store::StoreError> {
        fapiao_store::query_scalar(queue.waiting)
            .bind(now)
            .fetch_all(db.pool())
            .await
    }

    /// Makes every entry of `queue` waiting for `peer` due at `now` (the peer answers now),
    /// in a transaction of its own; how many.
    ///
    /// # Errors
    /// [`fapiao_store::StoreError`].
    pub async fn release_waiting(
        &self,
        db: &Db,
        queue: WaitingQueue,
        peer: &str,
        now: i64,
    ) -> Result<u64, fapiao_store::StoreError> {
        let mut tx = db.begin_write().await?;
        let n = fapiao_store::query(queue.release)
            .bind(now)
            .bind(peer)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        if n > 0 {
            tracing::info!(
                peer,
                entries = n,
                "the peer answers: what waited for it is due now"
            );
        }
        Ok(n)
    }

    /// The peers known, in name order.
    #[must_use]
    pub fn peers(&self) -> Vec<PeerState> {
        lock(&self.0.peers)
            .iter()
            .map(|(k, p)| PeerState {
                peer: k.clone(),
                answering: p.answering,
                since: p.since,
                last_error: p.last_error.clone(),
                skew_seconds: p.skew_seconds,
            })
            .collect()
    }

    /// Whether `db` takes a write, checked at most every [`WRITE_CHECK_EVERY`]; a change
    /// either way is logged (an error when writes start failing).
    pub async fn write_check(&self, db: &Db, now: i64) -> Result<(), String> {
        let mut last = self.0.write.lock().await;
        if let Some((at, r)) = &*last
            && at.elapsed() < WRITE_CHECK_EVERY
        {
            return r.clone();
        }
        let r = db.write_check(&self.0.instance, now).await;
        match (&r, last.as_ref().map(|(_, r)| r.is_ok())) {
            (Err(e), Some(true) | None) => {
                tracing::error!(error = %e, "the database does not take writes");
            }
            (Ok(()), Some(false)) => tracing::info!("the database takes writes again"),
            _ => {}
        }
        *last = Some((tokio::time::Instant::now(), r.clone()));
        r
    }

    /// The checks every role has: not stopping, its database takes a write, its
    /// certificates are valid long enough, and each peer watched answers.
    pub async fn checks(&self, db: &Db, material: &Material, now: OffsetDateTime) -> Vec<Check> {
        let mut out = vec![Check::new(
            "stopping",
            !self.is_stopping(),
            if self.is_stopping() {
                "stopping: finishing what is in flight"
            } else {
                "running"
            },
        )];
        out.push(match self.write_check(db, now.unix_timestamp()).await {
            Ok(()) => Check::new("database", true, "takes writes"),
            Err(e) => Check::new("database", false, e),
        });
        out.push(crate::ops::certificate_check(material, now));
        out.extend(self.peer_checks(now.unix_timestamp()));
        out
    }

    /// A check per peer watched (`peer:<role:name>`).
    #[must_use]
    pub fn peer_checks(&self, now: i64) -> Vec<Check> {
        lock(&self.0.peers)
            .iter()
            .map(|(k, p)| {
                let skew = p
                    .skew_seconds
                    .map_or_else(String::new, |s| format!("; its clock {s:+} s from ours"));
                let (ok, detail) = match p.answering {
                    None => (true, "not called yet".to_owned()),
                    Some(true) => (true, format!("answers{skew}")),
                    Some(false) => (
                        false,
                        format!(
                            "not answering for {} s: {}",
                            now - p.since,
                            p.last_error.as_deref().unwrap_or("")
                        ),
                    ),
                };
                let mut c = Check::new(format!("peer:{k}"), ok, detail);
                c.required = p.required;
                c
            })
            .collect()
    }

    /// `fapiao_peer_up{peer}` (1 answering, 0 not) and `fapiao_peer_clock_skew_seconds{peer}`
    /// for each peer seen.
    #[must_use]
    pub fn gauges(&self) -> Vec<Gauge> {
        let mut out = Vec::new();
        for (k, p) in lock(&self.0.peers).iter() {
            if let Some(a) = p.answering {
                out.push(Gauge {
                    name: "fapiao_peer_up",
                    help: "Whether a peer answered the last call or probe (1) or not (0).",
                    labels: vec![("peer", k.clone())],
                    value: if a { 1.0 } else { 0.0 },
                });
            }
            if let Some(s) = p.skew_seconds {
                out.push(Gauge {
                    name: "fapiao_peer_clock_skew_seconds",
                    help: "A peer's clock minus ours, from its last answer's date (1 s steps).",
                    labels: vec![("peer", k.clone())],
                    value: s as f64,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> CallError {
        CallError::Unreachable {
            peer: "https://tax".into(),
            reason: "connection refused".into(),
        }
    }

    #[test]
    fn a_peer_goes_down_comes_back_and_refusals_are_not_outages() {
        let h = Health::new("test");
        h.watch("tax:tax", false);
        assert!(!h.is_answering("tax:tax"));
        assert!(!h.observe::<()>("tax:tax", &Err(unreachable()), 100));
        let c = &h.peer_checks(112)[0];
        assert_eq!(
            (c.name.as_str(), c.ok, c.required),
            ("peer:tax:tax", false, false)
        );
        assert!(
            c.detail.starts_with("not answering for 12 s"),
            "{}",
            c.detail
        );
        // Back: the caller is told, once.
        assert!(h.observe("tax:tax", &Ok(()), 120));
        assert!(!h.observe("tax:tax", &Ok(()), 121));
        assert!(h.is_answering("tax:tax"));
        // A refusal (403) is an answer: the peer is up.
        let refused = CallError::Status {
            peer: "https://tax".into(),
            status: 403,
            code: "forbidden".into(),
        };
        assert!(!h.observe::<()>("tax:tax", &Err(refused), 130));
        assert!(h.is_answering("tax:tax"));
        // A 5xx is not.
        let failing = CallError::Status {
            peer: "https://tax".into(),
            status: 503,
            code: "tax_unavailable".into(),
        };
        h.observe::<()>("tax:tax", &Err(failing), 140);
        assert!(!h.is_answering("tax:tax"));
        let gauges = h.gauges();
        assert!(
            gauges
                .iter()
                .any(|g| g.name == "fapiao_peer_up" && g.value == 0.0)
        );
    }

    #[test]
    fn stopping_is_remembered_once_begun() {
        let h = Health::new("test");
        assert!(!h.is_stopping());
        h.begin_stopping();
        assert!(h.is_stopping());
    }
}

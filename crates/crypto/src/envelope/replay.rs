//! Replay guards: a message id is accepted once per sender within the freshness window.

use super::*;

/// Remembers message ids for the freshness window, so a replay is refused. Persistent stores
/// implement it for multi-process deployments.
pub trait ReplayGuard: Send + Sync {
    /// Records `(sender, message_id)` until `expires`; returns `Ok(false)` if it was already
    /// recorded and has not expired.
    ///
    /// # Errors
    /// A description of a storage failure.
    fn check_and_remember(
        &self,
        sender: &str,
        message_id: &str,
        expires: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, String>;
}

/// An in-memory [`ReplayGuard`], pruned as entries expire.
///
/// Expired entries are swept when the map has doubled since the last sweep, or a minute
/// after it ([`Self::SWEEP_EVERY`]), once it holds at least [`Self::SWEEP_FLOOR`] entries: a
/// check costs amortized O(1) however many ids are live in the window, and the map holds at
/// most the live ones and a minute's more, never more than about twice the live ones — so
/// its size settles as soon as the window has filled. An id is held as
/// 128 bits of SHA-256 over its sender and message id (32 bytes an entry with its expiry, no
/// allocation), so a busy window of ids costs a few MiB, not tens.
#[derive(Debug, Default)]
pub struct MemoryReplayGuard {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashMap<[u8; 16], OffsetDateTime>,
    /// Sweep when `ids` reaches this many entries.
    sweep_at: usize,
    /// When the last sweep was.
    swept_at: Option<OffsetDateTime>,
}

/// The first 128 bits of SHA-256 over `sender` (length-prefixed) and `message_id`: two
/// different ids collide with probability 2^-128, and a guard holding 2^32 ids sees a
/// collision with probability 2^-64.
fn id_key(sender: &str, message_id: &str) -> [u8; 16] {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(
            u64::try_from(sender.len())
                .unwrap_or(u64::MAX)
                .to_be_bytes(),
        )
        .chain_update(sender.as_bytes())
        .chain_update(message_id.as_bytes())
        .finalize();
    let mut key = [0_u8; 16];
    key.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
    key
}

impl MemoryReplayGuard {
    /// No sweep below this many entries.
    pub const SWEEP_FLOOR: usize = 4096;

    /// A sweep at the latest this long after the last one (given the floor).
    pub const SWEEP_EVERY: Duration = Duration::minutes(1);

    /// An empty guard.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How many ids it holds (live, or expired and not swept yet).
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.lock().map_or(0, |s| s.ids.len())
    }

    /// Whether it holds no id.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReplayGuard for MemoryReplayGuard {
    fn check_and_remember(
        &self,
        sender: &str,
        message_id: &str,
        expires: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<bool, String> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| "replay guard lock poisoned".to_owned())?;
        let due = seen.ids.len() >= seen.sweep_at
            || seen.swept_at.is_none_or(|t| now - t >= Self::SWEEP_EVERY);
        if due && seen.ids.len() >= Self::SWEEP_FLOOR {
            seen.ids.retain(|_, exp| *exp > now);
            seen.sweep_at = 2 * seen.ids.len();
            seen.swept_at = Some(now);
        }
        let key = id_key(sender, message_id);
        match seen.ids.get(&key) {
            Some(exp) if *exp > now => Ok(false),
            _ => {
                seen.ids.insert(key, expires);
                Ok(true)
            }
        }
    }
}

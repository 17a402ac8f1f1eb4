//! A trust store that can change while a role runs: CRLs reloaded from their files, so a
//! revocation takes effect without a restart. Readers take the current [`TrustStore`] (an
//! `Arc`, cheap); TLS verifiers rebuild what they derive from it when its generation moves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::path::TrustStore;

/// A shared, replaceable [`TrustStore`].
#[derive(Debug, Clone)]
pub struct LiveTrust(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    current: RwLock<Arc<TrustStore>>,
    generation: AtomicU64,
}

impl LiveTrust {
    /// Starts with `trust`.
    #[must_use]
    pub fn new(trust: TrustStore) -> Self {
        Self(Arc::new(Inner {
            current: RwLock::new(Arc::new(trust)),
            generation: AtomicU64::new(1),
        }))
    }

    /// The trust store now.
    #[must_use]
    pub fn current(&self) -> Arc<TrustStore> {
        self.0
            .current
            .read()
            .map_or_else(|p| p.into_inner().clone(), |t| t.clone())
    }

    /// Replaces the trust store; readers see the new one from their next [`Self::current`].
    pub fn replace(&self, trust: TrustStore) {
        let mut cur = self
            .0
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *cur = Arc::new(trust);
        self.0.generation.fetch_add(1, Ordering::Release);
    }

    /// Moves with every [`Self::replace`].
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::Acquire)
    }
}

impl From<TrustStore> for LiveTrust {
    fn from(trust: TrustStore) -> Self {
        Self::new(trust)
    }
}

impl From<&TrustStore> for LiveTrust {
    fn from(trust: &TrustStore) -> Self {
        Self::new(trust.clone())
    }
}

impl From<&Self> for LiveTrust {
    fn from(trust: &Self) -> Self {
        trust.clone()
    }
}

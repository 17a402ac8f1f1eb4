//! A background worker loop: run a round of work, and when it found nothing, sleep until woken,
//! until the poll interval passes, or until stopped.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::task::Stoppable;

/// A running worker.
#[derive(Debug)]
pub struct Worker(Stoppable);

impl Worker {
    /// Runs `round` repeatedly: it returns how many items it handled (0: wait for `wake` or
    /// `poll`); an error is logged under `name` and counts as 0.
    pub fn spawn<F, Fut, E>(name: &'static str, wake: Arc<Notify>, poll: Duration, round: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<usize, E>> + Send,
        E: std::fmt::Display,
    {
        Self::spawn_settling(name, wake, poll, Duration::ZERO, round)
    }

    /// [`Self::spawn`], but a round that follows a wake waits `settle` first, so that a burst
    /// of wakes (one per stored item) is handled in one round rather than one round each.
    pub fn spawn_settling<F, Fut, E>(
        name: &'static str,
        wake: Arc<Notify>,
        poll: Duration,
        settle: Duration,
        mut round: F,
    ) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<usize, E>> + Send,
        E: std::fmt::Display,
    {
        Self(Stoppable::spawn(|mut stopped| async move {
            loop {
                let worked = match round().await {
                    Ok(n) => n > 0,
                    Err(e) => {
                        tracing::error!(worker = name, error = %e, "worker round failed");
                        false
                    }
                };
                if *stopped.borrow() {
                    break;
                }
                if !worked {
                    tokio::select! {
                        () = wake.notified() => {
                            if !settle.is_zero() {
                                tokio::select! {
                                    () = tokio::time::sleep(settle) => {}
                                    _ = stopped.changed() => break,
                                }
                            }
                        }
                        () = tokio::time::sleep(poll) => {}
                        _ = stopped.changed() => break,
                    }
                }
            }
        }))
    }

    /// Stops after the round in hand.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }

    /// Stops after the round in hand if it ends by `deadline`; else the round is cut there
    /// (what it had committed stays; the rest is done again at the next start). Whether it
    /// ended in time.
    pub async fn shutdown_by(self, deadline: tokio::time::Instant) -> bool {
        self.0.shutdown_by(deadline).await
    }
}

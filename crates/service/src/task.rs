//! A background task that stops when told: the accept loops, the workers, the audit signer and
//! the CRL reloader all run as one.

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A spawned task and the signal that stops it.
#[derive(Debug)]
pub struct Stoppable {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Stoppable {
    /// Spawns `run`, which watches the receiver it is given and ends once it turns `true`.
    pub fn spawn<F, Fut>(run: F) -> Self
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (stop, stopped) = watch::channel(false);
        Self {
            stop,
            task: tokio::spawn(run(stopped)),
        }
    }

    /// Tells the task to stop and waits for it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Tells the task to stop and waits until `deadline`; a task still running then is cut.
    /// Whether it ended in time.
    pub async fn shutdown_by(mut self, deadline: tokio::time::Instant) -> bool {
        let _ = self.stop.send(true);
        if tokio::time::timeout_at(deadline, &mut self.task)
            .await
            .is_ok()
        {
            return true;
        }
        self.task.abort();
        let _ = self.task.await;
        false
    }
}

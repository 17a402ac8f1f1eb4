//! Group commit: concurrent work that would each take a write transaction — and a durable
//! commit — shares one ([`Db::grouped`]).

use crate::replay::{Arrival, ArrivalState};
use crate::tx::{Prefetch, Tx};
use crate::{Db, StoreError};

/// Jobs waiting to share a write transaction ([`Db::begin_group`]).
#[derive(Debug)]
pub struct Group<J>(std::sync::Mutex<Vec<J>>);

impl<J> Default for Group<J> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(Vec::new()))
    }
}

impl<J> Group<J> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<J>> {
        // A panic while pushing or taking leaves the vector whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A job of a group ([`Db::grouped`]), and where its answer goes.
#[derive(Debug)]
pub struct Waiting<J, R> {
    /// The job.
    pub job: J,
    /// Where its answer goes.
    pub answer: Answer<R>,
}

/// Where the answer to a job of a group goes ([`Waiting`]).
#[derive(Debug)]
pub struct Answer<R>(tokio::sync::oneshot::Sender<R>);

impl<R> Answer<R> {
    /// Answers the job's caller (gone already: nothing happens).
    pub fn send(self, answer: R) {
        let _ = self.0.send(answer);
    }
}

/// What [`Db::begin_group`] gives its caller.
#[derive(Debug)]
#[must_use = "the jobs of a group led are answered by its leader"]
#[expect(
    clippy::large_enum_variant,
    reason = "made once per request and moved at once into the leader's task"
)]
pub enum Joined<J> {
    /// This caller leads a group: its write transaction, and its jobs in queue order (the
    /// caller's among them).
    Lead(Tx, Vec<J>),
    /// An earlier caller's group took the job and answers it.
    Taken,
}

impl Db {
    /// Group commit for work that would otherwise take a write transaction — and a durable
    /// commit — each: queues `job` in `group`, waits for this database's writer turn, and, if
    /// jobs are still queued then, begins one write transaction for them all and hands them
    /// over in queue order: `job` and whatever queued up while earlier transactions held the
    /// turn. The transaction has remembered each job's `arrival` already, as
    /// [`Db::remember_in`] does (a job whose arrival is then [`ArrivalState::Replayed`] is a
    /// replay). [`Joined::Taken`] when an earlier caller's group took `job`.
    ///
    /// Whoever leads does every job of the group in the transaction, commits, and answers
    /// each job after the commit — best on a task of its own, so that the group is finished
    /// even if the leading caller is abandoned. Under load a burst of requests costs one
    /// transaction and one `fsync` instead of one each; a job alone costs what
    /// [`Db::begin_write_for`] would (its arrival written with the `BEGIN`).
    ///
    /// A caller abandoned while it waits for the turn leaves its job queued: the next group
    /// does it, unanswered.
    ///
    /// # Errors
    /// The transaction cannot begin or remember the arrivals: the error, and the jobs taken
    /// to be answered with it.
    pub async fn begin_group<J>(
        &self,
        group: &Group<J>,
        job: J,
        arrival: impl Fn(&J) -> Option<&Arrival>,
    ) -> Result<Joined<J>, (StoreError, Vec<J>)> {
        group.lock().push(job);
        let turn = self.take_turn().await;
        let alone = {
            let mut queue = group.lock();
            match queue.len() {
                0 => return Ok(Joined::Taken),
                1 => queue.pop(),
                _ => None,
            }
        };
        let (mut tx, jobs) = match alone {
            Some(job) => {
                let prefetch = match arrival(&job) {
                    Some(a) if a.state() == ArrivalState::Pending => Prefetch::Remember(a),
                    _ => Prefetch::Keys,
                };
                match self.begin_in(turn, prefetch).await {
                    Ok(tx) => (tx, vec![job]),
                    Err(e) => return Err((e, vec![job])),
                }
            }
            // Taken once begun: jobs queued meanwhile join this transaction too.
            None => match self.begin_in(turn, Prefetch::Keys).await {
                Ok(tx) => (tx, std::mem::take(&mut *group.lock())),
                Err(e) => return Err((e, std::mem::take(&mut *group.lock()))),
            },
        };
        let arrivals: Vec<&Arrival> = jobs.iter().filter_map(&arrival).collect();
        if let Err(e) = self.remember_in(&mut tx, &arrivals).await {
            drop(tx);
            return Err((e, jobs));
        }
        Ok(Joined::Lead(tx, jobs))
    }

    /// [`Db::begin_group`] with the discipline every group follows: `job` waits in `group`
    /// with a channel for its answer; if this caller leads, `lead` gets the transaction and
    /// the jobs and runs on a task of its own (so the group is finished and answered even if
    /// this caller is abandoned meanwhile), committing before it answers each job with
    /// [`Answer::send`]; if the transaction cannot begin, each job taken is answered with
    /// `failed`. Returns this job's answer, whoever gave it; `None` if its group ended without
    /// answering it (its leader panicked).
    pub async fn grouped<J, R, L, Fut>(
        &self,
        group: &Group<Waiting<J, R>>,
        job: J,
        arrival: impl Fn(&J) -> Option<&Arrival>,
        lead: L,
        failed: impl Fn(&J, &StoreError) -> R,
    ) -> Option<R>
    where
        L: FnOnce(Tx, Vec<Waiting<J, R>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        use tracing::Instrument as _;
        let (answer, answered) = tokio::sync::oneshot::channel();
        let waiting = Waiting {
            job,
            answer: Answer(answer),
        };
        match self.begin_group(group, waiting, |w| arrival(&w.job)).await {
            Ok(Joined::Lead(tx, jobs)) => {
                tokio::spawn(lead(tx, jobs).in_current_span());
            }
            Ok(Joined::Taken) => {}
            Err((e, jobs)) => {
                for w in jobs {
                    let answer = failed(&w.job, &e);
                    w.answer.send(answer);
                }
            }
        }
        answered.await.ok()
    }
}

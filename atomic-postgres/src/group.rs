//! Group commit, the mechanism: a few writer tasks share one queue of requests; each takes
//! whatever is waiting (up to a maximum, never waiting to fill) and writes it with one
//! statement, so one round trip and one commit serve many concurrent requests. A group is what
//! arrived while the previous one was being written, so an idle server answers at once and a
//! busy one batches more. A caller that gives up (its patience, or its request dropped by an
//! outer timeout or a disconnect) withdraws its request if no writer has taken it yet, so it is
//! never written; once a writer has it, the caller waits for the writer's answer. So a timeout
//! never hides a write that happened; only a connection lost after the commit was sent leaves
//! the outcome unknown (answered unavailable, as for any store).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use atomic_core::{Error, Result};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

/// A request in the writers' queue, with who has it.
pub(crate) struct Queued<T> {
    request: T,
    hold: Arc<Hold>,
}

/// The one decision between a writer and a caller that gives up: whoever moves the request out
/// of `QUEUED` first wins, so a withdrawn request is never written and a taken one is always
/// answered.
#[derive(Default)]
struct Hold(AtomicU8);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Hold {
    /// A writer takes the request; `false` when its caller has withdrawn it.
    fn take(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, TAKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The caller withdraws the request; `false` when a writer already has it.
    fn withdraw(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Withdraws its request when dropped, unless a writer has taken it: a caller cancelled while
/// its request waits in the queue leaves nothing to write.
struct Withdraw(Arc<Hold>);

impl Drop for Withdraw {
    fn drop(&mut self) {
        let _ = self.0.withdraw();
    }
}

/// Hands `request` to the writers behind `queue` and waits for its answer on `answered`. After
/// `patience` the request is withdrawn if no writer has taken it yet (unavailable: nothing was
/// written); once a writer has it, its answer is awaited, since its statement may commit (the
/// writer's own wait is bounded by the pool's acquire timeout and the statement timeout).
pub(crate) async fn submit<T, R>(
    queue: &mpsc::Sender<Queued<T>>,
    request: T,
    answered: oneshot::Receiver<Result<R>>,
    patience: Duration,
) -> Result<R> {
    let hold = Arc::new(Hold::default());
    // Dropped with this call, however it ends: a request still queued is then withdrawn.
    let withdraw = Withdraw(hold.clone());
    let mut answered = answered;
    let stopped = |_| Error::unavailable("the group-commit writers stopped");
    let waited = tokio::time::timeout(patience, async {
        queue
            .send(Queued { request, hold })
            .await
            .map_err(|_| Error::unavailable("the group-commit writers stopped"))?;
        (&mut answered).await.map_err(stopped)?
    })
    .await;
    match waited {
        Ok(result) => result,
        // Never taken (or never even queued): nothing was or will be written.
        Err(elapsed) if withdraw.0.withdraw() => Err(Error::unavailable(elapsed)),
        Err(_) => answered.await.map_err(stopped)?,
    }
}

/// Starts `writers` tasks that pass groups of at most `max` requests to `write`, less those
/// their callers withdrew, each group's size recorded under `statement`; returns where to send
/// requests ([`submit`]). The tasks end when every
/// sender is dropped; a write that panics costs its own group, never the writer.
pub(crate) fn start<T, F, Fut>(
    pool: PgPool,
    writers: usize,
    statement: &'static str,
    max: usize,
    write: F,
) -> mpsc::Sender<Queued<T>>
where
    T: Send + 'static,
    F: Fn(PgPool, Vec<T>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let writers = writers.max(1);
    let (sender, receiver) = mpsc::channel::<Queued<T>>(max * writers * 4);
    let receiver = Arc::new(Mutex::new(receiver));
    for _ in 0..writers {
        let (pool, receiver, write) = (pool.clone(), receiver.clone(), write.clone());
        tokio::spawn(async move {
            loop {
                let mut group = Vec::new();
                {
                    let mut receiver = receiver.lock().await;
                    match receiver.recv().await {
                        Some(first) => group.push(first),
                        None => return,
                    }
                    while group.len() < max {
                        match receiver.try_recv() {
                            Ok(next) => group.push(next),
                            Err(_) => break,
                        }
                    }
                }
                let group: Vec<T> = group
                    .into_iter()
                    .filter(|queued| queued.hold.take())
                    .map(|queued| queued.request)
                    .collect();
                if group.is_empty() {
                    continue;
                }
                atomic_core::telemetry::group_written(statement, group.len());
                // In a task of its own, so a panic in one write (its requests then see their
                // answer channels closed: unavailable) does not stop the writer.
                if let Err(error) = tokio::spawn(write(pool.clone(), group)).await {
                    tracing::error!(%error, "a group-commit write panicked");
                }
            }
        });
    }
    sender
}

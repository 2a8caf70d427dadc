//! Group commit, the mechanism: a few writer tasks share one queue of requests; each takes
//! whatever is waiting (up to a maximum, never waiting to fill) and writes it with one
//! statement, so one round trip and one commit serve many concurrent requests. A group is what
//! arrived while the previous one was being written, so an idle server answers at once and a
//! busy one batches more.

use std::future::Future;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc};

/// Starts `writers` tasks that pass groups of at most `max` requests to `write`; returns where
/// to send requests. The tasks end when every sender is dropped; a write that panics costs its
/// own group, never the writer.
pub(crate) fn start<T, F, Fut>(
    pool: PgPool,
    writers: usize,
    max: usize,
    write: F,
) -> mpsc::Sender<T>
where
    T: Send + 'static,
    F: Fn(PgPool, Vec<T>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let writers = writers.max(1);
    let (sender, receiver) = mpsc::channel::<T>(max * writers * 4);
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

//! Conformance cases for [`crate::ports::JobQueue`]. Each case expects a fresh, empty queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::QueueKit;
use crate::id::{PaymentId, RefundId};
use crate::ports::Job;

// Short enough that a backend on real time (Redis) waits it out in seconds, long enough that
// no case runs past it by accident.
const VISIBILITY: Duration = Duration::from_secs(5);
const NOW: Duration = Duration::ZERO;

fn payment_job() -> Job {
    Job::Payment(PaymentId::generate())
}

fn refund_job() -> Job {
    Job::Refund(RefundId::generate())
}

pub async fn enqueued_jobs_are_delivered_once_then_acked(kit: &QueueKit) {
    // Both kinds of job travel the same way.
    let ids = vec![payment_job(), refund_job(), payment_job()];
    kit.queue.enqueue(&ids).await.unwrap();
    let got = kit.queue.reserve(10, VISIBILITY, NOW).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.job).collect::<HashSet<_>>(),
        ids.iter().copied().collect()
    );
    assert!(got.iter().all(|d| d.attempt == 1));
    assert!(
        kit.queue
            .reserve(10, VISIBILITY, NOW)
            .await
            .unwrap()
            .is_empty(),
        "reserved jobs are not delivered twice"
    );
    for d in &got {
        kit.queue.ack(std::slice::from_ref(d)).await.unwrap();
    }
    kit.time.advance(VISIBILITY + Duration::from_secs(1)).await;
    assert!(
        kit.queue
            .reserve(10, VISIBILITY, NOW)
            .await
            .unwrap()
            .is_empty(),
        "acked jobs are gone"
    );
}

pub async fn ack_acks_a_batch_and_ignores_stale_receipts(kit: &QueueKit) {
    let ids: Vec<_> = (0..5).map(|_| payment_job()).collect();
    kit.queue.enqueue(&ids).await.unwrap();
    let got = kit.queue.reserve(10, VISIBILITY, NOW).await.unwrap();
    assert_eq!(got.len(), 5);
    // One job's first delivery runs out and is redelivered; the stale receipt is in the batch.
    let late = payment_job();
    kit.queue.enqueue(&[late]).await.unwrap();
    let first = kit
        .queue
        .reserve(1, Duration::from_secs(1), NOW)
        .await
        .unwrap();
    kit.time.advance(Duration::from_secs(2)).await;
    let live = kit.queue.reserve(1, VISIBILITY, NOW).await.unwrap();
    assert_eq!(
        live.iter().map(|d| (d.job, d.attempt)).collect::<Vec<_>>(),
        vec![(late, 2)]
    );
    let mut batch = got.clone();
    batch.push(first[0].clone());
    kit.queue.ack(&batch).await.unwrap();
    kit.time.advance(VISIBILITY + Duration::from_secs(1)).await;
    let back = kit.queue.reserve(10, VISIBILITY, NOW).await.unwrap();
    assert_eq!(
        back.iter().map(|d| d.job).collect::<Vec<_>>(),
        vec![late],
        "the batch is gone; the live delivery was not acked by its stale receipt"
    );
    kit.queue.ack(&back).await.unwrap();
}

pub async fn reserve_takes_at_most_max(kit: &QueueKit) {
    let ids: Vec<_> = (0..5).map(|_| payment_job()).collect();
    kit.queue.enqueue(&ids).await.unwrap();
    assert_eq!(
        kit.queue.reserve(2, VISIBILITY, NOW).await.unwrap().len(),
        2
    );
    assert_eq!(
        kit.queue.reserve(10, VISIBILITY, NOW).await.unwrap().len(),
        3
    );
}

pub async fn unacked_jobs_come_back_after_their_visibility(kit: &QueueKit) {
    let id = payment_job();
    kit.queue.enqueue(&[id]).await.unwrap();
    let first = kit
        .queue
        .reserve(1, Duration::from_secs(2), NOW)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    // The worker holding it dies without acking.
    kit.time.advance(Duration::from_secs(3)).await;
    let again = kit.queue.reserve(1, VISIBILITY, NOW).await.unwrap();
    assert_eq!(
        again.iter().map(|d| (d.job, d.attempt)).collect::<Vec<_>>(),
        vec![(id, 2)]
    );
    // The dead worker's late ack must not lose the live delivery... it may be a no-op.
    kit.queue.ack(&first[..1]).await.unwrap();
    kit.queue.ack(&again[..1]).await.unwrap();
}

pub async fn retried_jobs_come_back_after_the_delay_with_attempt_plus_one(kit: &QueueKit) {
    let id = payment_job();
    kit.queue.enqueue(&[id]).await.unwrap();
    let d = kit
        .queue
        .reserve(1, VISIBILITY, NOW)
        .await
        .unwrap()
        .remove(0);
    kit.queue.retry(&d, Duration::from_secs(2)).await.unwrap();
    assert!(
        kit.queue
            .reserve(1, VISIBILITY, NOW)
            .await
            .unwrap()
            .is_empty(),
        "not before its delay"
    );
    kit.time.advance(Duration::from_secs(3)).await;
    let again = kit.queue.reserve(1, VISIBILITY, NOW).await.unwrap();
    assert_eq!(
        again.iter().map(|d| (d.job, d.attempt)).collect::<Vec<_>>(),
        vec![(id, 2)]
    );
    kit.queue.ack(&again[..1]).await.unwrap();
}

pub async fn dead_lettered_jobs_are_not_delivered_again(kit: &QueueKit) {
    let id = payment_job();
    kit.queue.enqueue(&[id]).await.unwrap();
    let d = kit
        .queue
        .reserve(1, Duration::from_secs(1), NOW)
        .await
        .unwrap()
        .remove(0);
    kit.queue
        .dead_letter(&d, "attempts exhausted")
        .await
        .unwrap();
    kit.time.advance(Duration::from_secs(2)).await;
    assert!(
        kit.queue
            .reserve(10, VISIBILITY, NOW)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn concurrent_reservers_never_share_a_job(kit: &QueueKit) {
    let ids: Vec<_> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                payment_job()
            } else {
                refund_job()
            }
        })
        .collect();
    kit.queue.enqueue(&ids).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (queue, barrier) = (kit.queue.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut mine = Vec::new();
            loop {
                let got = queue.reserve(7, VISIBILITY, NOW).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                for d in got {
                    queue.ack(std::slice::from_ref(&d)).await.unwrap();
                    mine.push(d.job);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(all.len(), 200, "every job delivered exactly once");
    assert_eq!(
        all.into_iter().collect::<HashSet<_>>(),
        ids.into_iter().collect()
    );
}

pub async fn a_waiting_reserve_wakes_when_a_job_arrives(kit: &QueueKit) {
    let queue = kit.queue.clone();
    let waiter = tokio::spawn(async move {
        queue
            .reserve(1, VISIBILITY, Duration::from_secs(60))
            .await
            .unwrap()
    });
    // Give the waiter time to block; whether or not it has, the job must reach it.
    tokio::task::yield_now().await;
    let id = payment_job();
    kit.queue.enqueue(&[id]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("a reserve waiting 60 s must return when a job arrives, not when it times out")
        .unwrap();
    assert_eq!(got.iter().map(|d| d.job).collect::<Vec<_>>(), vec![id]);
}

/// Generates the [`crate::ports::JobQueue`] conformance tests for a `QueueKit` expression.
#[macro_export]
macro_rules! job_queue_conformance {
    ($kit:expr) => {
        $crate::conformance_tests!(
            queue,
            $kit,
            [
                enqueued_jobs_are_delivered_once_then_acked,
                ack_acks_a_batch_and_ignores_stale_receipts,
                reserve_takes_at_most_max,
                unacked_jobs_come_back_after_their_visibility,
                retried_jobs_come_back_after_the_delay_with_attempt_plus_one,
                dead_lettered_jobs_are_not_delivered_again,
                concurrent_reservers_never_share_a_job,
                a_waiting_reserve_wakes_when_a_job_arrives,
            ]
        );
    };
}

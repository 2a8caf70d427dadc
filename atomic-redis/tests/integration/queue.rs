//! Queue behaviour beyond the conformance kit, on the shared Redis.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use atomic_core::id::PaymentId;
use atomic_core::ports::{Job, JobQueue};

use crate::support::{TidyQueue, eventually, shared_config};

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn due_retries_come_back_exactly_once_under_concurrent_reservers() {
    let tidy = Arc::new(TidyQueue::new(shared_config().await));
    let ids: Vec<_> = (0..50)
        .map(|_| Job::Payment(PaymentId::generate()))
        .collect();
    tidy.enqueue(&ids).await.unwrap();
    let first = tidy.reserve(100, LONG, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 50);
    for d in &first {
        tidy.retry(d, Duration::from_millis(300)).await.unwrap();
    }
    let seen = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (tidy, seen) = (tidy.clone(), seen.clone());
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut mine = Vec::new();
            while seen.load(Ordering::SeqCst) < 50 && Instant::now() < deadline {
                let got = tidy
                    .reserve(5, LONG, Duration::from_millis(200))
                    .await
                    .unwrap();
                seen.fetch_add(got.len(), Ordering::SeqCst);
                for d in got {
                    tidy.ack(std::slice::from_ref(&d)).await.unwrap();
                    mine.push((d.job, d.attempt));
                }
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    assert_eq!(
        all.len(),
        50,
        "each retried job delivered exactly once: {all:?}"
    );
    assert!(all.iter().all(|(_, attempt)| *attempt == 2));
    assert_eq!(
        all.iter().map(|(id, _)| *id).collect::<HashSet<_>>(),
        ids.into_iter().collect()
    );
    assert!(
        tidy.reserve(100, LONG, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_of_an_earlier_delivery_change_nothing() {
    let tidy = TidyQueue::new(shared_config().await);
    let id = Job::Payment(PaymentId::generate());
    tidy.enqueue(&[id]).await.unwrap();
    let stale = tidy
        .reserve(1, Duration::from_millis(200), Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    let live = eventually(Duration::from_secs(5), "the job comes back", || async {
        tidy.reserve(1, LONG, Duration::ZERO).await.unwrap().pop()
    })
    .await;
    assert_eq!((live.job, live.attempt), (id, 2));
    assert_ne!(stale.receipt, live.receipt);

    tidy.retry(&stale, Duration::ZERO).await.unwrap();
    tidy.dead_letter(&stale, "late").await.unwrap();
    tidy.ack(std::slice::from_ref(&stale)).await.unwrap();
    assert!(tidy.queue.dead_letters(10).await.unwrap().is_empty());
    assert!(
        tidy.reserve(10, LONG, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );

    // The live delivery is still held and can be dead-lettered with its own receipt.
    tidy.dead_letter(&live, "boom").await.unwrap();
    let dead = tidy.queue.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].job, dead[0].attempt), (id, 2));
    assert_eq!(dead[0].reason, "boom");
    assert!(
        tidy.reserve(10, LONG, Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reserve_wakes_when_a_retry_is_due() {
    let tidy = TidyQueue::new(shared_config().await);
    let id = Job::Payment(PaymentId::generate());
    tidy.enqueue(&[id]).await.unwrap();
    let d = tidy
        .reserve(1, LONG, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    tidy.retry(&d, Duration::from_millis(700)).await.unwrap();
    let started = Instant::now();
    let again = tidy
        .reserve(1, LONG, Duration::from_secs(20))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        again.iter().map(|d| (d.job, d.attempt)).collect::<Vec<_>>(),
        vec![(id, 2)]
    );
    assert!(
        took < Duration::from_secs(5),
        "woke after {took:?}, not when the retry was due"
    );
    tidy.ack(&again[..1]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_count_retries_and_redeliveries_together() {
    let tidy = TidyQueue::new(shared_config().await);
    let id = Job::Payment(PaymentId::generate());
    tidy.enqueue(&[id]).await.unwrap();
    let first = tidy
        .reserve(1, LONG, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    assert_eq!(first.attempt, 1);
    tidy.retry(&first, Duration::ZERO).await.unwrap();
    let second = tidy
        .reserve(1, Duration::from_millis(100), Duration::from_secs(5))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.attempt, 2);
    // Lost: its lease runs out and it comes back as attempt 3.
    let third = eventually(
        Duration::from_secs(5),
        "the lost job comes back",
        || async { tidy.reserve(1, LONG, Duration::ZERO).await.unwrap().pop() },
    )
    .await;
    assert_eq!((third.job, third.attempt), (id, 3));
    tidy.ack(std::slice::from_ref(&third)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refund_and_payment_jobs_come_back_as_the_kinds_they_were() {
    let tidy = TidyQueue::new(shared_config().await);
    let jobs = [
        Job::Payment(PaymentId::generate()),
        Job::Refund(atomic_core::RefundId::generate()),
    ];
    tidy.enqueue(&jobs).await.unwrap();
    let got = tidy
        .reserve(10, LONG, Duration::from_secs(2))
        .await
        .unwrap();
    let kinds: HashSet<Job> = got.iter().map(|d| d.job).collect();
    assert_eq!(kinds, jobs.into_iter().collect::<HashSet<_>>());
    tidy.ack(&got).await.unwrap();
}

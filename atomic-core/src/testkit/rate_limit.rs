//! Conformance cases for [`crate::ports::RateLimiter`]. Each case uses identities of its own.

use std::sync::Arc;
use std::time::Duration;

use super::LimiterKit;
use crate::rate_limit::{Hit, RateLimitPolicy};

fn policy(name: &str, limit: u64, window_secs: u64) -> RateLimitPolicy {
    RateLimitPolicy {
        name: name.to_owned(),
        limit,
        window: Duration::from_secs(window_secs),
    }
}

fn identity() -> String {
    format!("test:{}", uuid::Uuid::now_v7())
}

/// Makes sure the rest of the current window of `window` is long enough for a case (the
/// smaller of half the window and 5 s): if not, waits for the next window. With real time
/// (Redis) a case then never waits a long window out.
async fn start_of_a_window(kit: &LimiterKit, window: Duration) {
    let probe = policy("probe", 1_000_000, window.as_secs()).hit(&identity());
    let reset = kit.limiter.hit(&[probe]).await.unwrap()[0].reset;
    if reset < (window / 2).min(Duration::from_secs(5)) {
        kit.time.advance(reset + Duration::from_millis(50)).await;
    }
}

pub async fn allows_up_to_the_limit_then_refuses(kit: &LimiterKit) {
    let p = policy("p", 5, 60);
    start_of_a_window(kit, p.window).await;
    let who = identity();
    for expected_remaining in (0..5).rev() {
        let d = &kit.limiter.hit(&[p.hit(&who)]).await.unwrap()[0];
        assert!(d.allowed);
        assert_eq!((d.limit, d.remaining), (5, expected_remaining));
        assert!(d.reset > Duration::ZERO && d.reset <= p.window);
    }
    let refused = &kit.limiter.hit(&[p.hit(&who)]).await.unwrap()[0];
    assert!(!refused.allowed);
    assert_eq!(refused.remaining, 0);
}

pub async fn identities_and_policies_count_apart(kit: &LimiterKit) {
    let p = policy("p", 1, 60);
    let q = policy("q", 1, 60);
    start_of_a_window(kit, p.window).await;
    let (a, b) = (identity(), identity());
    assert!(kit.limiter.hit(&[p.hit(&a)]).await.unwrap()[0].allowed);
    assert!(kit.limiter.hit(&[p.hit(&b)]).await.unwrap()[0].allowed);
    assert!(kit.limiter.hit(&[q.hit(&a)]).await.unwrap()[0].allowed);
    assert!(!kit.limiter.hit(&[p.hit(&a)]).await.unwrap()[0].allowed);
}

pub async fn a_refusal_stops_the_count_of_later_limiters(kit: &LimiterKit) {
    let strict = policy("strict", 1, 60);
    let loose = policy("loose", 10, 60);
    start_of_a_window(kit, strict.window).await;
    let who = identity();
    let hits: Vec<Hit> = vec![strict.hit(&who), loose.hit(&who)];
    let first = kit.limiter.hit(&hits).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|d| d.allowed));
    let second = kit.limiter.hit(&hits).await.unwrap();
    assert_eq!(second.len(), 1, "the hit after a refusal is not counted");
    assert!(!second[0].allowed);
    let loose_only = &kit.limiter.hit(&[loose.hit(&who)]).await.unwrap()[0];
    assert_eq!(
        loose_only.remaining, 8,
        "loose counted twice: once in the first call, once now"
    );
}

pub async fn a_new_window_starts_fresh(kit: &LimiterKit) {
    let p = policy("p", 2, 2);
    start_of_a_window(kit, p.window).await;
    let who = identity();
    kit.limiter.hit(&[p.hit(&who)]).await.unwrap();
    kit.limiter.hit(&[p.hit(&who)]).await.unwrap();
    let refused = kit.limiter.hit(&[p.hit(&who)]).await.unwrap().remove(0);
    assert!(!refused.allowed);
    kit.time
        .advance(refused.reset + Duration::from_millis(50))
        .await;
    let fresh = kit.limiter.hit(&[p.hit(&who)]).await.unwrap().remove(0);
    assert!(fresh.allowed);
    assert_eq!(fresh.remaining, 1);
}

pub async fn concurrent_hits_allow_exactly_the_limit(kit: &LimiterKit) {
    let p = policy("p", 20, 60);
    start_of_a_window(kit, p.window).await;
    let who = identity();
    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (limiter, hit, barrier) = (kit.limiter.clone(), p.hit(&who), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            limiter.hit(&[hit]).await.unwrap()[0].allowed
        }));
    }
    let mut allowed = 0;
    for task in tasks {
        allowed += usize::from(task.await.unwrap());
    }
    assert_eq!(allowed, 20);
}

/// Generates the [`crate::ports::RateLimiter`] conformance tests for a `LimiterKit` expression.
#[macro_export]
macro_rules! rate_limiter_conformance {
    ($kit:expr) => {
        $crate::conformance_tests!(
            rate_limit,
            $kit,
            [
                allows_up_to_the_limit_then_refuses,
                identities_and_policies_count_apart,
                a_refusal_stops_the_count_of_later_limiters,
                a_new_window_starts_fresh,
                concurrent_hits_allow_exactly_the_limit,
            ]
        );
    };
}

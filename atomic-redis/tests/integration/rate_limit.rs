//! Rate-limit counters beyond the conformance kit, on the shared Redis.

use std::time::Duration;

use atomic_core::ports::RateLimiter;
use atomic_core::rate_limit::RateLimitPolicy;
use atomic_redis::testkit::{DeleteOnDrop, connection};
use atomic_redis::{Redis, RedisConfig};
use redis::aio::MultiplexedConnection;

use crate::support::shared_config;

/// Every key under `prefix`.
async fn keys_under(conn: &mut MultiplexedConnection, pattern: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

fn policy(name: &str, limit: u64, secs: u64) -> RateLimitPolicy {
    RateLimitPolicy {
        name: name.to_owned(),
        limit,
        window: Duration::from_secs(secs),
    }
}

async fn assert_every_counter_expires(
    config: &RedisConfig,
    conn: &mut MultiplexedConnection,
) -> usize {
    let keys = keys_under(conn, &format!("{}:rl:*", config.prefix)).await;
    for key in &keys {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap();
        assert!(ttl > 0 && ttl <= 900_000, "{key} has PTTL {ttl}");
    }
    keys.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_counter_key_is_ever_left_without_a_ttl() {
    let config = shared_config().await;
    let _tidy = DeleteOnDrop::new(&config);
    let limiter = Redis::new(config.clone()).unwrap().rate_limiter();
    let mut conn = connection(&config.url).await.unwrap();
    let policies = [
        policy("global", 100, 900),
        policy("payments", 10, 60),
        policy("burst", 3, 1),
    ];
    let identities: Vec<String> = (0..5).map(|i| format!("ip:10.0.0.{i}")).collect();
    let mut refused = 0;
    for round in 0..60 {
        let who = &identities[round % identities.len()];
        let hits: Vec<_> = policies.iter().map(|p| p.hit(who)).collect();
        let decisions = limiter.hit(&hits).await.unwrap();
        refused += decisions.iter().filter(|d| !d.allowed).count();
    }
    assert!(refused > 0, "the hits must reach refusals too");
    let counted = assert_every_counter_expires(&config, &mut conn).await;
    assert!(counted >= 10, "{counted} counters");

    // A counter that lost its TTL (PERSIST by hand) gets one back on its next hit.
    let hit = policies[0].hit(&identities[0]);
    let base = limiter.counter_key(&hit);
    let keys = keys_under(&mut conn, &format!("{base}:*")).await;
    assert!(!keys.is_empty());
    for key in &keys {
        let _: i64 = redis::cmd("PERSIST")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    limiter.hit(&[hit]).await.unwrap();
    assert_every_counter_expires(&config, &mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decisions_describe_the_window_from_redis_clock() {
    let config = shared_config().await;
    let _tidy = DeleteOnDrop::new(&config);
    let limiter = Redis::new(config).unwrap().rate_limiter();
    let p = policy("payments", 10, 60);
    let d = limiter.hit(&[p.hit("merchant:x")]).await.unwrap().remove(0);
    assert_eq!(
        (d.policy.as_str(), d.limit, d.window),
        ("payments", 10, Duration::from_secs(60))
    );
    assert!(d.allowed && d.remaining == 9);
    assert!(d.reset > Duration::ZERO && d.reset <= Duration::from_secs(60));
    assert!(limiter.hit(&[]).await.unwrap().is_empty());
}

//! Failure cases, each on a `redis-server` child of its own: a restarted or flushed Redis, a
//! consumer lost with jobs in hand, Redis down, and the round trips of one rate-limit check.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use atomic_core::error::Error as CoreError;
use atomic_core::id::PaymentId;
use atomic_core::ports::{Job, JobQueue, RateLimiter};
use atomic_core::rate_limit::RateLimitPolicy;
use atomic_redis::Redis;
use atomic_redis::testkit::RedisServer;
use redis::aio::MultiplexedConnection;

use crate::support::eventually;

const LONG: Duration = Duration::from_secs(30);
/// A guard only: a call that has not answered by then hangs.
const GUARD: Duration = Duration::from_secs(15);

async fn groups(conn: &mut MultiplexedConnection, stream: &str) -> usize {
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
        .unwrap_or_default();
    groups.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_or_flushed_redis_gets_its_group_back_by_itself() {
    let mut server = RedisServer::start().await;
    let queue = Redis::new(server.config()).unwrap().job_queue();
    let stream = queue.keys().stream.clone();
    let round_trip = |queue: atomic_redis::RedisJobQueue| async move {
        let id = Job::Payment(PaymentId::generate());
        queue.enqueue(&[id]).await.unwrap();
        let got = queue
            .reserve(10, LONG, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.iter().map(|d| d.job).collect::<Vec<_>>(), vec![id]);
        queue.ack(&got[..1]).await.unwrap();
    };
    round_trip(queue.clone()).await;

    // Restarted: an empty Redis on the same port; the queue's connections are all broken.
    server.restart().await;
    round_trip(queue.clone()).await;
    assert_eq!(groups(&mut server.connection().await, &stream).await, 1);

    // Flushed: the group is gone, and the next call brings it back.
    let mut conn = server.connection().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    assert_eq!(
        groups(&mut conn, &stream).await,
        0,
        "FLUSHALL took the group"
    );
    round_trip(queue.clone()).await;
    assert_eq!(groups(&mut conn, &stream).await, 1);

    // Flushed while a worker waits in reserve: the waiting call carries on by itself.
    let waiter = tokio::spawn({
        let queue = queue.clone();
        async move { queue.reserve(1, LONG, Duration::from_secs(2)).await }
    });
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let waited = tokio::time::timeout(GUARD, waiter)
        .await
        .expect("the waiting reserve returns");
    assert!(waited.unwrap().unwrap().is_empty());
    round_trip(queue.clone()).await;

    // Flushed, then a job enqueued before any reserve: it is still delivered.
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let id = Job::Payment(PaymentId::generate());
    queue.enqueue(&[id]).await.unwrap();
    let got = queue.reserve(1, LONG, Duration::ZERO).await.unwrap();
    assert_eq!(
        got.iter().map(|d| (d.job, d.attempt)).collect::<Vec<_>>(),
        vec![(id, 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_consumers_jobs_are_reclaimed_once_by_another() {
    let server = RedisServer::start().await;
    let config = server.config();
    let ids: Vec<_> = (0..10)
        .map(|_| Job::Payment(PaymentId::generate()))
        .collect();
    let lost = Redis::new(config.clone().with_consumer("worker-a"))
        .unwrap()
        .job_queue();
    lost.enqueue(&ids).await.unwrap();
    let taken = lost
        .reserve(10, Duration::from_secs(1), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(taken.len(), 10);
    drop(lost); // dies without acking

    let reclaimer = Redis::new(config.with_consumer("worker-b"))
        .unwrap()
        .job_queue();
    assert!(
        reclaimer
            .reserve(10, LONG, Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "not before their visibility runs out"
    );
    let started = Instant::now();
    let mut reclaimed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reclaimed.len() < 10 {
        assert!(
            Instant::now() < deadline,
            "only {} jobs reclaimed",
            reclaimed.len()
        );
        reclaimed.extend(
            reclaimer
                .reserve(10, LONG, Duration::from_millis(200))
                .await
                .unwrap(),
        );
    }
    eprintln!(
        "reclaimed {} jobs {:?} after the first try",
        reclaimed.len(),
        started.elapsed()
    );
    assert_eq!(reclaimed.len(), 10, "each job reclaimed once");
    assert_eq!(
        reclaimed.iter().map(|d| d.job).collect::<HashSet<_>>(),
        ids.iter().copied().collect()
    );
    assert!(reclaimed.iter().all(|d| d.attempt == 2), "{reclaimed:?}");
    assert!(
        reclaimer
            .reserve(10, LONG, Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );

    // Redis agrees: all ten pending for worker-b, delivered twice.
    let mut conn = server.connection().await;
    let pending: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
        .arg(&reclaimer.keys().stream)
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pending.len(), 10);
    assert!(
        pending
            .iter()
            .all(|(_, consumer, _, count)| consumer == "worker-b" && *count == 2)
    );

    // The lost worker's late acks change nothing; the reclaimer's acks empty the group.
    let late = Redis::new(late_config(&reclaimer, &server))
        .unwrap()
        .job_queue();
    for d in &taken {
        late.ack(std::slice::from_ref(d)).await.unwrap();
    }
    let still: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(&reclaimer.keys().stream)
        .arg("workers")
        .arg("-")
        .arg("+")
        .arg(100)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(still.len(), 10);
    for d in &reclaimed {
        reclaimer.ack(std::slice::from_ref(d)).await.unwrap();
    }
    let left: i64 = redis::cmd("XLEN")
        .arg(&reclaimer.keys().stream)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// A config on `server` with the same prefix as `queue`'s.
fn late_config(
    queue: &atomic_redis::RedisJobQueue,
    server: &RedisServer,
) -> atomic_redis::RedisConfig {
    let prefix = queue
        .keys()
        .stream
        .trim_start_matches('{')
        .trim_end_matches(":jobs}:stream")
        .to_owned();
    server
        .config()
        .with_prefix(prefix)
        .with_consumer("worker-a")
}

fn assert_unavailable<T: std::fmt::Debug>(
    what: &str,
    result: Result<atomic_core::error::Result<T>, tokio::time::error::Elapsed>,
    took: Duration,
) {
    let result = result.unwrap_or_else(|_| panic!("{what} hung for {GUARD:?} with Redis down"));
    match result {
        Err(CoreError::Unavailable(_)) => eprintln!("{what}: Unavailable after {took:?}"),
        other => panic!("{what} with Redis down must be Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_as_unavailable_in_bounded_time_when_redis_is_down() {
    let mut server = RedisServer::start().await;
    let redis = Redis::new(server.config()).unwrap();
    let (queue, limiter) = (redis.job_queue(), redis.rate_limiter());
    let hit = RateLimitPolicy::parse("global", "100/15m")
        .unwrap()
        .unwrap()
        .hit("ip:1");
    queue
        .enqueue(&[Job::Payment(PaymentId::generate())])
        .await
        .unwrap();
    let held = queue
        .reserve(1, LONG, Duration::ZERO)
        .await
        .unwrap()
        .remove(0);
    limiter.hit(std::slice::from_ref(&hit)).await.unwrap();

    // A worker waiting in reserve when Redis goes away gets an error, not a hang.
    let waiter = tokio::spawn({
        let queue = queue.clone();
        async move { queue.reserve(1, LONG, Duration::from_secs(60)).await }
    });
    let conn = server.connection().await;
    eventually(
        Duration::from_secs(10),
        "the reserve blocks in XREAD",
        || async {
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
                .filter(|n| *n >= 1)
        },
    )
    .await;
    server.stop();
    let stopped = Instant::now();
    let result = tokio::time::timeout(GUARD, waiter)
        .await
        .map(|joined| joined.unwrap());
    assert_unavailable("waiting reserve", result, stopped.elapsed());

    macro_rules! down {
        ($what:expr, $call:expr) => {{
            let started = Instant::now();
            let result = tokio::time::timeout(GUARD, $call).await;
            assert_unavailable($what, result, started.elapsed());
        }};
    }
    down!(
        "enqueue",
        queue.enqueue(&[Job::Payment(PaymentId::generate())])
    );
    down!("reserve", queue.reserve(1, LONG, Duration::ZERO));
    down!(
        "reserve with wait",
        queue.reserve(1, LONG, Duration::from_secs(5))
    );
    down!("ack", queue.ack(std::slice::from_ref(&held)));
    down!("retry", queue.retry(&held, Duration::ZERO));
    down!("dead_letter", queue.dead_letter(&held, "x"));
    down!("queue ping", JobQueue::ping(&queue));
    down!("limiter hit", limiter.hit(std::slice::from_ref(&hit)));
    down!("limiter ping", RateLimiter::ping(&limiter));

    // Built while Redis is down: construction works, calls fail as unavailable.
    let never = Redis::new(server.config()).unwrap();
    down!(
        "first call of a queue built while down",
        never
            .job_queue()
            .enqueue(&[Job::Payment(PaymentId::generate())])
    );
    down!(
        "first call of a limiter built while down",
        never.rate_limiter().hit(std::slice::from_ref(&hit))
    );

    // And when Redis is back, the same handles work again.
    server.restart().await;
    eventually(Duration::from_secs(10), "queue works again", || async {
        queue
            .enqueue(&[Job::Payment(PaymentId::generate())])
            .await
            .ok()
    })
    .await;
    assert!(limiter.hit(&[hit]).await.unwrap()[0].allowed);
}

/// `INFO commandstats` as command → calls.
async fn command_calls(conn: &mut MultiplexedConnection) -> BTreeMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|kv| kv.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_check_of_three_limiters_is_one_command() {
    let server = RedisServer::start().await;
    let limiter = Redis::new(server.config()).unwrap().rate_limiter();
    let policies = [
        RateLimitPolicy::parse("global", "100/15m")
            .unwrap()
            .unwrap(),
        RateLimitPolicy::parse("payments", "10/1m")
            .unwrap()
            .unwrap(),
        RateLimitPolicy::parse("burst", "5/10s").unwrap().unwrap(),
    ];
    let hits: Vec<_> = policies.iter().map(|p| p.hit("merchant:m")).collect();
    // Warm up: connects and loads the script once.
    limiter.hit(&hits).await.unwrap();
    let mut conn = server.connection().await;
    let before = command_calls(&mut conn).await;
    let decisions = limiter.hit(&hits).await.unwrap();
    let after = command_calls(&mut conn).await;
    assert_eq!(decisions.len(), 3);
    assert!(decisions.iter().all(|d| d.allowed && d.remaining < d.limit));

    let delta: BTreeMap<_, _> = after
        .iter()
        .map(|(name, calls)| (name.clone(), calls - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, d)| *d > 0)
        .collect();
    eprintln!("commandstats delta of one check with 3 limiters: {delta:?}");
    assert_eq!(delta.get("evalsha"), Some(&1), "{delta:?}");
    assert_eq!(
        delta.get("incr"),
        Some(&3),
        "each limiter counted inside the script: {delta:?}"
    );
    // Inside the script: TIME, INCR, PTTL/PEXPIRE. Outside: only our own INFO.
    let allowed = ["evalsha", "time", "incr", "pttl", "pexpire", "info"];
    for name in delta.keys() {
        assert!(
            allowed.contains(&name.as_str()),
            "unexpected command {name}: {delta:?}"
        );
    }
}

//! [`RedisJobQueue`]: the [`JobQueue`] port on a Redis Stream read through one consumer group.
//! A job is a stream entry (`p` = payment id, `a` = attempt it starts at). Every delivery is
//! made by one Lua script that also gives it a lease (a sorted set: entry id → lease end) for
//! the visibility the worker asked for; a delivery whose lease runs out is claimed again by the
//! next `reserve` (`XCLAIM`, delivery count + 1), so a dead worker's jobs come back. The attempt
//! is the entry's starting attempt plus its redeliveries. Ack, retry and dead-letter are one
//! script each way, fenced by the delivery count in the receipt, so a late ack from a worker that
//! lost its lease changes nothing. Retries wait in a delayed sorted set until the reserve script
//! moves them back (moved and removed in one script: never twice). A waiting `reserve` blocks
//! with `XREAD` on a dedicated connection and wakes as soon as an entry is added. All keys share
//! one hash tag, so the keys and scripts are Cluster-ready (one slot); the client itself is a
//! single-node connection (Redis 7 or newer, `maxmemory-policy noeviction`). If the group is missing (Redis was
//! restarted or flushed) it is created again and the call retried, by itself.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atomic_core::error::Result;
use atomic_core::ports::{Delivery, Job, JobQueue};
use redis::aio::ConnectionLike;
use redis::{RedisResult, Value};
use tokio::time::Instant;

use crate::config::RedisConfig;
use crate::connection::Redis;
use crate::error::Error;
use crate::scripts::{ACK_MANY, PRUNE_CONSUMERS, RESERVE, SETTLE};

/// The consumer group every worker reads through.
const GROUP: &str = "workers";

/// A delayed job or lease end this close is waited for in one piece.
const MIN_BLOCK: Duration = Duration::from_millis(1);

/// How often one queue looks for consumers of gone processes.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// A consumer idle this long with nothing pending belongs to a process that is gone.
const CONSUMER_GONE_AFTER: Duration = Duration::from_secs(3600);

/// The keys of one queue, all under one hash tag (`{<prefix>:jobs}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueKeys {
    /// The stream of jobs.
    pub stream: String,
    /// Retried jobs waiting for their delay (score: due time, ms).
    pub delayed: String,
    /// Leases of delivered jobs (score: lease end, ms).
    pub leases: String,
    /// Dead-lettered jobs, for an operator.
    pub dead: String,
}

impl QueueKeys {
    /// The keys for a key prefix.
    pub fn new(prefix: &str) -> Self {
        let tag = format!("{{{prefix}:jobs}}");
        Self {
            stream: format!("{tag}:stream"),
            delayed: format!("{tag}:delayed"),
            leases: format!("{tag}:leases"),
            dead: format!("{tag}:dead"),
        }
    }
}

/// A dead-lettered job as an operator sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// The job.
    pub job: Job,
    /// The attempt that was dead-lettered.
    pub attempt: u32,
    /// Why.
    pub reason: String,
}

/// A [`JobQueue`] on Redis Streams.
#[derive(Clone, Debug)]
pub struct RedisJobQueue {
    redis: Redis,
    keys: QueueKeys,
    /// When this queue last pruned gone consumers (`None`: not yet).
    pruned_at: Arc<Mutex<Option<Instant>>>,
}

/// What one run of the reserve script found.
struct Reserved {
    deliveries: Vec<Delivery>,
    /// Time until a delayed job is due or a lease runs out.
    next_due: Option<Duration>,
    /// The newest entry id: a blocking read waits for entries after it.
    last_id: String,
}

impl RedisJobQueue {
    /// A queue for `config`; does not connect (the first call does).
    pub fn new(config: RedisConfig) -> Result<Self, Error> {
        Ok(Redis::new(config)?.job_queue())
    }

    pub(crate) fn from_redis(redis: Redis) -> Self {
        let keys = QueueKeys::new(&redis.config().prefix);
        Self {
            redis,
            keys,
            pruned_at: Arc::new(Mutex::new(None)),
        }
    }

    /// The keys this queue uses.
    pub fn keys(&self) -> &QueueKeys {
        &self.keys
    }

    /// This queue's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.redis.config().consumer
    }

    /// The oldest `max` dead-lettered jobs.
    pub async fn dead_letters(&self, max: usize) -> Result<Vec<DeadLetter>, Error> {
        let entries: Vec<(String, Vec<(String, String)>)> = self
            .redis
            .run("XRANGE", |mut conn| async move {
                redis::cmd("XRANGE")
                    .arg(&self.keys.dead)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(max)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        entries
            .into_iter()
            .map(|(id, fields)| {
                let get = |name: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                        .unwrap_or_default()
                };
                Ok(DeadLetter {
                    job: decode_job(get("p"))
                        .ok_or_else(|| Error::Reply(format!("dead letter {id} has no job")))?,
                    attempt: get("a").parse().unwrap_or(0),
                    reason: get("reason").to_owned(),
                })
            })
            .collect()
    }

    /// Deletes consumers of gone processes (idle for an hour, nothing pending); best effort,
    /// at most once per ten minutes per queue.
    async fn prune_consumers(&self) {
        {
            let mut pruned_at = self
                .pruned_at
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if pruned_at.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return;
            }
            *pruned_at = Some(Instant::now());
        }
        let idle_ms = u64::try_from(CONSUMER_GONE_AFTER.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = PRUNE_CONSUMERS.prepare_invoke();
        invocation.key(&self.keys.stream).arg(GROUP).arg(idle_ms);
        let invocation = &invocation;
        let pruned: Result<i64, Error> = self
            .redis
            .run("EVALSHA prune_consumers", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await;
        match pruned {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "deleted consumers of gone workers"),
            Err(error) => tracing::debug!(?error, "could not prune consumers; will try later"),
        }
    }

    /// Runs the reserve script once, creating the group first if it is missing.
    async fn reserve_once(&self, max: usize, visibility: Duration) -> Result<Reserved, Error> {
        let visibility_ms = u64::try_from(visibility.as_millis()).unwrap_or(u64::MAX);
        let mut invocation = RESERVE.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.delayed)
            .key(&self.keys.leases)
            .key(&self.keys.dead)
            .arg(GROUP)
            .arg(self.consumer())
            .arg(max)
            .arg(visibility_ms);
        let invocation = &invocation;
        let reply: Vec<String> = self
            .redis
            .run("EVALSHA reserve", |mut conn| async move {
                match invocation.invoke_async(&mut conn).await {
                    Err(error) if is_no_group(&error) => {
                        self.create_group(&mut conn).await?;
                        invocation.invoke_async(&mut conn).await
                    }
                    other => other,
                }
            })
            .await?;
        self.parse_reserved(reply)
    }

    /// Creates the consumer group (and the stream), reading from the first entry on.
    async fn create_group(&self, conn: &mut impl ConnectionLike) -> RedisResult<()> {
        let created: RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.keys.stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(_) => {
                tracing::warn!(
                    stream = %self.keys.stream,
                    "job queue consumer group was missing (new, restarted or flushed Redis); created it"
                );
                Ok(())
            }
            Err(error) if error.code() == Some("BUSYGROUP") => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn parse_reserved(&self, reply: Vec<String>) -> Result<Reserved, Error> {
        let bad = || Error::Reply("malformed reserve reply".to_owned());
        let mut items = reply.into_iter();
        let next_due: i64 = items.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let last_id = items.next().ok_or_else(bad)?;
        let rest: Vec<String> = items.collect();
        if !rest.len().is_multiple_of(4) {
            return Err(bad());
        }
        let mut deliveries = Vec::with_capacity(rest.len() / 4);
        for chunk in rest.chunks_exact(4) {
            let [id, count, job, attempt] = chunk else {
                return Err(bad());
            };
            let count: u32 = count.parse().map_err(|_| bad())?;
            let base: u32 = attempt.parse().map_err(|_| bad())?;
            let job = decode_job(job)
                .ok_or_else(|| Error::Reply(format!("job {id} names no payment or refund")))?;
            deliveries.push(Delivery {
                receipt: format!("{id}/{count}"),
                job,
                attempt: base.saturating_add(count.saturating_sub(1)).max(1),
            });
        }
        let reclaimed = deliveries.iter().filter(|d| d.attempt > 1).count();
        if reclaimed > 0 {
            tracing::debug!(reclaimed, "redelivered jobs");
        }
        Ok(Reserved {
            deliveries,
            next_due: u64::try_from(next_due).ok().map(Duration::from_millis),
            last_id,
        })
    }

    /// Waits up to `block` for an entry newer than `after` on a dedicated connection.
    async fn wait_for_entries(&self, after: &str, block: Duration) -> Result<(), Error> {
        let block_ms = u64::try_from(block.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&self.keys.stream)
            .arg(after);
        let limit = self
            .redis
            .config()
            .operation_timeout()
            .saturating_add(block);
        loop {
            let (mut conn, pooled) = self.redis.blocking_connection().await?;
            let result = tokio::time::timeout(limit, read.query_async::<Value>(&mut conn)).await;
            match result {
                Ok(Ok(_)) => {
                    self.redis.release_blocking_connection(conn);
                    return Ok(());
                }
                // An idle connection from before a Redis restart: try a fresh one.
                Ok(Err(error)) if pooled && Redis::is_broken(&error) => {
                    tracing::debug!(%error, "dropping a broken blocking connection");
                }
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => return Err(Error::Timeout(limit)),
            }
        }
    }

    /// Runs the settle script for `delivery`; a stale or malformed receipt changes nothing.
    async fn settle(&self, delivery: &Delivery, action: &str, extra: String) -> Result<(), Error> {
        let Some((id, count)) = delivery
            .receipt
            .split_once('/')
            .and_then(|(id, count)| Some((id, count.parse::<u32>().ok()?)))
        else {
            tracing::debug!(receipt = %delivery.receipt, "not a receipt of this queue; ignored");
            return Ok(());
        };
        let mut invocation = SETTLE.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.delayed)
            .key(&self.keys.leases)
            .key(&self.keys.dead)
            .arg(GROUP)
            .arg(id)
            .arg(count)
            .arg(action)
            .arg(extra);
        let invocation = &invocation;
        let settled: i64 = self
            .redis
            .run("EVALSHA settle", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        if settled == 0 {
            tracing::debug!(
                job = ?delivery.job,
                receipt = %delivery.receipt,
                action,
                "stale delivery (redelivered or already settled); nothing changed"
            );
        }
        Ok(())
    }
}

/// The stream's length bound (approximate, so trimming is cheap). Jobs are wake-up hints and
/// the recovery sweep re-enqueues every unfinished payment, so a job trimmed away under an
/// extreme backlog delays its payment by one sweep; it never loses it. The bound keeps a long
/// backlog, re-enqueued by every sweep, from growing the stream without end.
const STREAM_CAP: u64 = 1_000_000;

/// A job as the stream's `p` field holds it: a payment as its bare id (the form every job had
/// before refunds, so a queue written by an older process still reads), a refund as `r:<id>`.
fn encode_job(job: Job) -> String {
    match job {
        Job::Payment(id) => id.to_string(),
        Job::Refund(id) => format!("r:{id}"),
    }
}

fn decode_job(field: &str) -> Option<Job> {
    match field.strip_prefix("r:") {
        Some(refund) => refund.parse().ok().map(Job::Refund),
        None => field.parse().ok().map(Job::Payment),
    }
}

fn is_no_group(error: &redis::RedisError) -> bool {
    error.code() == Some("NOGROUP")
}

#[async_trait]
impl JobQueue for RedisJobQueue {
    async fn ping(&self) -> Result<()> {
        Ok(self.redis.ping().await?)
    }

    async fn enqueue(&self, jobs: &[Job]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for job in jobs {
            pipe.cmd("XADD")
                .arg(&self.keys.stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(STREAM_CAP)
                .arg("*")
                .arg("p")
                .arg(encode_job(*job))
                .arg("a")
                .arg(1)
                .ignore();
        }
        let pipe = &pipe;
        self.redis
            .run("XADD", |mut conn| async move {
                pipe.query_async::<()>(&mut conn).await
            })
            .await?;
        Ok(())
    }

    async fn reserve(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let now = Instant::now();
        // A wait too long to represent is a wait without end (an hour is plenty).
        let deadline = now
            .checked_add(wait)
            .unwrap_or(now + Duration::from_secs(3600));
        if max == 0 {
            // Nothing can be taken: wait as asked, like a reserve that finds nothing.
            tokio::time::sleep_until(deadline).await;
            return Ok(Vec::new());
        }
        self.prune_consumers().await;
        loop {
            let reserved = self.reserve_once(max, visibility).await?;
            let now = Instant::now();
            if !reserved.deliveries.is_empty() || now >= deadline {
                return Ok(reserved.deliveries);
            }
            let mut block = (deadline - now).min(self.redis.config().block);
            if let Some(due) = reserved.next_due {
                block = block.min(due.max(MIN_BLOCK));
            }
            self.wait_for_entries(&reserved.last_id, block).await?;
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let mut invocation = ACK_MANY.prepare_invoke();
        invocation
            .key(&self.keys.stream)
            .key(&self.keys.leases)
            .arg(GROUP);
        let mut any = false;
        for delivery in deliveries {
            if let Some((id, count)) = delivery.receipt.split_once('/') {
                invocation.arg(id).arg(count);
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        let invocation = &invocation;
        self.redis
            .run("EVALSHA ack_many", |mut conn| async move {
                invocation.invoke_async::<i64>(&mut conn).await
            })
            .await?;
        Ok(())
    }

    async fn retry(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        Ok(self.settle(delivery, "retry", delay_ms.to_string()).await?)
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<()> {
        Ok(self.settle(delivery, "dead", reason.to_owned()).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_round_trip_and_bare_ids_are_payments() {
        let payment = atomic_core::Job::Payment(PaymentId::generate());
        let refund = atomic_core::RefundId::generate();
        for job in [Job::Payment(payment), Job::Refund(refund)] {
            assert_eq!(decode_job(&encode_job(job)), Some(job));
        }
        assert_eq!(
            decode_job(&payment.to_string()),
            Some(Job::Payment(payment))
        );
        assert_eq!(decode_job("r:nope"), None);
        assert_eq!(decode_job(""), None);
    }

    #[test]
    fn all_queue_keys_share_one_hash_tag() {
        let keys = QueueKeys::new("atomic");
        for key in [&keys.stream, &keys.delayed, &keys.leases, &keys.dead] {
            assert!(key.starts_with("{atomic:jobs}:"), "{key}");
        }
    }
}

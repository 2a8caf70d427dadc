//! [`RedisRateLimiter`]: the [`RateLimiter`] port as fixed-window counters in Redis. One check
//! is one `EVALSHA` of `lua/fixed_window.lua`, whatever the number of limiters: the script reads
//! the window from Redis's clock (`TIME`), increments each limiter's counter in order, gives
//! every counter a TTL to the end of its window (when created, or when found without one), and
//! stops at the first refusal so later limiters are not counted. A counter's key carries the
//! prefix, policy, window length, identity (as the hash tag, so all counters of one caller live
//! in one Cluster slot) and window number.

use std::time::Duration;

use async_trait::async_trait;
use atomic_core::error::Result;
use atomic_core::ports::RateLimiter;
use atomic_core::rate_limit::{Decision, Hit};

use crate::config::RedisConfig;
use crate::connection::Redis;
use crate::error::Error;
use crate::scripts::FIXED_WINDOW;

/// A [`RateLimiter`] on Redis.
#[derive(Clone, Debug)]
pub struct RedisRateLimiter {
    redis: Redis,
}

impl RedisRateLimiter {
    /// A limiter for `config`; does not connect (the first call does).
    pub fn new(config: RedisConfig) -> Result<Self, Error> {
        Ok(Redis::new(config)?.rate_limiter())
    }

    pub(crate) fn from_redis(redis: Redis) -> Self {
        Self { redis }
    }

    /// The key of `hit`'s counter, without the window number the script appends.
    pub fn counter_key(&self, hit: &Hit) -> String {
        counter_key(&self.redis.config().prefix, hit)
    }

    /// Counts `hits` in one round trip; the crate's own error type.
    pub async fn check(&self, hits: &[Hit]) -> Result<Vec<Decision>, Error> {
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let prefix = &self.redis.config().prefix;
        let mut invocation = FIXED_WINDOW.prepare_invoke();
        for hit in hits {
            invocation
                .key(counter_key(prefix, hit))
                .arg(hit.limit.max(1))
                .arg(window_micros(hit.window));
        }
        let invocation = &invocation;
        let reply: Vec<i64> = self
            .redis
            .run("EVALSHA fixed_window", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        if !reply.len().is_multiple_of(2) || reply.len() > 2 * hits.len() || reply.is_empty() {
            return Err(Error::Reply(format!(
                "fixed window script answered {} values for {} limiters",
                reply.len(),
                hits.len()
            )));
        }
        Ok(reply
            .chunks_exact(2)
            .zip(hits)
            .map(|(pair, hit)| {
                let count = u64::try_from(pair[0]).unwrap_or(0);
                let elapsed = Duration::from_micros(u64::try_from(pair[1]).unwrap_or(0));
                Decision::from_count(hit, count, elapsed)
            })
            .collect())
    }
}

/// `<prefix>:rl:<policy>:<window>:{<identity>}`; braces in the policy name are replaced so the
/// identity stays the hash tag.
fn counter_key(prefix: &str, hit: &Hit) -> String {
    let policy = hit.policy.replace(['{', '}'], "_");
    let window = if hit.window.subsec_micros() == 0 {
        format!("{}s", hit.window.as_secs())
    } else {
        format!("{}us", window_micros(hit.window))
    };
    format!("{prefix}:rl:{policy}:{window}:{{{}}}", hit.identity)
}

fn window_micros(window: Duration) -> u64 {
    u64::try_from(window.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[async_trait]
impl RateLimiter for RedisRateLimiter {
    async fn ping(&self) -> Result<()> {
        Ok(self.redis.ping().await?)
    }

    async fn hit(&self, hits: &[Hit]) -> Result<Vec<Decision>> {
        Ok(self.check(hits).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(policy: &str, identity: &str, window: Duration) -> Hit {
        Hit {
            policy: policy.to_owned(),
            identity: identity.to_owned(),
            limit: 10,
            window,
        }
    }

    #[test]
    fn keys_carry_prefix_policy_window_and_identity_as_hash_tag() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            counter_key("atomic", &hit("payments", "merchant:1", minute)),
            "atomic:rl:payments:60s:{merchant:1}"
        );
        assert_eq!(
            counter_key(
                "atomic",
                &hit("a{b}", "ip:::1", Duration::from_millis(1500))
            ),
            "atomic:rl:a_b_:1500000us:{ip:::1}"
        );
    }
}

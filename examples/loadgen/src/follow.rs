//! Following settlement: how many payments are still open (`PENDING` or `PROCESSING`), sampled
//! every `--poll-interval` while the load runs and after, until none is left. With refunds
//! followed too (`--follow-refunds`, `--mixed-backlog`), open refunds count the same way, each
//! list counted and estimated on its own (refund ids are UUIDv7 as well).
//!
//! A sample first counts the backlog exactly by paging the open lists (`?status=PENDING`, then
//! `?status=PROCESSING`, 100 a page, per merchant key), spending at most `--poll-budget`
//! requests. A large backlog would cost too much to count that way, so past the budget the
//! sample estimates it: the workers settle roughly oldest first and ids are UUIDv7 (ordered by
//! creation), so a binary search over the accepted ids, one `GET /payments/{id}` a step, finds
//! the oldest payment still open; everything after it counts as backlog. That costs about
//! log2(accepted) requests, whatever the backlog. While the last backlog was well over what the
//! budget can count (or there are more merchants than it covers), the exact attempt is skipped.
//! After the load, a sample that estimates nothing open is confirmed by a full exact count, so
//! "all settled" is never a guess.

use std::time::Duration;

use uuid::Uuid;

use crate::args::{Load, Options};
use crate::client::{Api, Failure, Key, OPEN_STATUSES};
use crate::run::{Accepted, Kind, Shared};

/// The backlog at one moment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// Time since the run started.
    pub(crate) at: Duration,
    /// Payments (and refunds) accepted by then.
    pub(crate) accepted: u64,
    /// Payments (and refunds) still `PENDING` or `PROCESSING`.
    pub(crate) backlog: u64,
    /// Counted (true) or estimated by the binary search (false).
    pub(crate) exact: bool,
}

impl Sample {
    /// Accepted payments that are no longer open.
    pub(crate) fn settled(&self) -> u64 {
        self.accepted.saturating_sub(self.backlog)
    }
}

/// How following ended.
#[derive(Debug, Clone, Default)]
pub(crate) struct FollowOutcome {
    /// Every sample, in time order.
    pub(crate) samples: Vec<Sample>,
    /// Time since start of the first sample that found nothing open (exactly counted).
    pub(crate) drained_at: Option<Duration>,
    /// Gave up after `--follow-timeout`.
    pub(crate) timed_out: bool,
    /// Requests spent on sampling.
    pub(crate) requests: u64,
    /// Samples that failed (a request of theirs got no usable answer).
    pub(crate) failed_samples: u64,
}

impl FollowOutcome {
    /// Whether every payment reached a final state.
    pub(crate) fn drained(&self) -> bool {
        self.drained_at.is_some()
    }
}

/// Samples the backlog of a set of merchant keys (or the platform key).
#[derive(Debug)]
pub(crate) struct Follower {
    api: Api,
    platform: Key,
    scopes: Vec<Key>,
    /// What is followed: payments, and refunds too when asked.
    kinds: Vec<Kind>,
    budget: usize,
    interval: Duration,
    timeout: Duration,
    requests: u64,
    /// The previous sample's backlog: when it was far over what the budget can count, the
    /// next sample goes straight to the estimate instead of spending the budget first.
    last_backlog: Option<u64>,
}

impl Follower {
    /// Follows the payments visible to `scopes`; single payments are read with `platform`.
    pub(crate) fn new(api: Api, platform: Key, scopes: Vec<Key>, opts: &Options) -> Follower {
        let refunds = opts.follow_refunds || matches!(opts.load, Load::Mixed { .. });
        Follower {
            api,
            platform,
            scopes,
            kinds: match refunds {
                true => vec![Kind::Payment, Kind::Refund],
                false => vec![Kind::Payment],
            },
            budget: opts.poll_budget,
            interval: opts.poll_interval,
            timeout: opts.follow_timeout,
            requests: 0,
            last_backlog: None,
        }
    }

    /// Samples until nothing is open after the load has ended, or the timeout passes.
    pub(crate) async fn follow(mut self, shared: &Shared) -> FollowOutcome {
        let mut outcome = FollowOutcome::default();
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut woken_for_end = false;
        loop {
            if woken_for_end {
                ticker.tick().await;
            } else {
                tokio::select! {
                    _ = ticker.tick() => {}
                    // One extra sample right when the load ends: the "while accepting" figure.
                    _ = shared.load_ended.notified() => woken_for_end = true,
                }
            }
            let load_done = shared.load_done_at();
            match self.sample(shared, load_done.is_some()).await {
                Ok(sample) => {
                    shared.set_latest(sample.clone());
                    let drained = load_done.is_some() && sample.exact && sample.backlog == 0;
                    let at = sample.at;
                    outcome.samples.push(sample);
                    if drained {
                        outcome.drained_at = Some(at);
                        break;
                    }
                }
                Err(failure) => {
                    outcome.failed_samples += 1;
                    if outcome.failed_samples == 1 {
                        eprintln!("loadgen: a settlement sample failed: {failure}");
                    }
                }
            }
            if let Some(done) = load_done
                && shared.start.elapsed() > done + self.timeout
            {
                eprintln!(
                    "loadgen: still not settled {}s after the load ended; giving up",
                    self.timeout.as_secs()
                );
                outcome.timed_out = true;
                break;
            }
        }
        outcome.requests = self.requests;
        outcome
    }

    /// One sample: an exact count within the budget, else the estimate; once the load is done,
    /// an estimate of zero is confirmed by a full count.
    async fn sample(&mut self, shared: &Shared, load_done: bool) -> Result<Sample, Failure> {
        let countable = (self.budget as u64).saturating_mul(100) * 3 / 4;
        // Each scope costs two requests a kind even when empty: with more scopes than the
        // budget covers, only the estimate (and the final full count) can be had.
        let lists = OPEN_STATUSES.len() * self.kinds.len() * self.scopes.len();
        let try_exact = lists <= self.budget && self.last_backlog.is_none_or(|b| b <= countable);
        let counted = if try_exact {
            self.count_open(Some(self.budget)).await?
        } else {
            None
        };
        let (backlog, exact) = match counted {
            Some(n) => (n, true),
            None => {
                let accepted = shared.accepted_snapshot();
                let mut estimate = 0;
                for kind in self.kinds.clone() {
                    let mut ids: Vec<Uuid> = accepted
                        .iter()
                        .filter(|a| a.kind == kind)
                        .map(|a| a.id)
                        .collect();
                    ids.sort_unstable();
                    estimate += self.estimate_open(kind, &ids).await?;
                }
                if estimate == 0 && load_done {
                    // Never call it drained on an estimate (while the load runs, a zero
                    // estimate is left as it is: a full count then costs too much).
                    match self.count_open(None).await? {
                        Some(n) => (n, true),
                        None => (estimate, false),
                    }
                } else {
                    (estimate, false)
                }
            }
        };
        self.last_backlog = Some(backlog);
        Ok(Sample {
            at: shared.start.elapsed(),
            accepted: shared.accepted.load(std::sync::atomic::Ordering::Relaxed),
            backlog,
            exact,
        })
    }

    /// Counts the open payments exactly; `None` when it would take more than `budget` requests.
    async fn count_open(&mut self, budget: Option<usize>) -> Result<Option<u64>, Failure> {
        let mut used = 0usize;
        let mut total = 0u64;
        for key in &self.scopes {
            for (kind, status) in self.lists() {
                let mut after = None;
                loop {
                    if budget.is_some_and(|b| used >= b) {
                        self.requests += used as u64;
                        return Ok(None);
                    }
                    used += 1;
                    let page = match open_page(&self.api, key, kind, status, after).await {
                        Ok(page) => page,
                        Err(e) => {
                            self.requests += used as u64;
                            return Err(e);
                        }
                    };
                    total += page.ids.len() as u64;
                    match page.ids.last() {
                        Some(last) if page.has_more => after = Some(*last),
                        _ => break,
                    }
                }
            }
        }
        self.requests += used as u64;
        Ok(Some(total))
    }

    /// Every (kind, open status) list a count walks.
    fn lists(&self) -> Vec<(Kind, &'static str)> {
        self.kinds
            .iter()
            .flat_map(|kind| OPEN_STATUSES.map(|status| (*kind, status)))
            .collect()
    }

    /// Estimates the open payments (or refunds) among `ids` (sorted): finds the first one
    /// still open by binary search, assuming the ones before it are settled.
    async fn estimate_open(&mut self, kind: Kind, ids: &[Uuid]) -> Result<u64, Failure> {
        let mut search = Bisect::new(ids.len());
        while let Some(i) = search.probe() {
            self.requests += 1;
            let settled = match kind {
                Kind::Payment => self
                    .api
                    .payment(&self.platform, ids[i])
                    .await?
                    .is_terminal(),
                Kind::Refund => self
                    .api
                    .refund_by_id(&self.platform, ids[i])
                    .await?
                    .is_terminal(),
            };
            search.answer(settled);
        }
        Ok((ids.len() - search.first_open()) as u64)
    }

    /// Every open payment (and refund, when followed) visible to the scopes, oldest first
    /// (follow-only mode).
    pub(crate) async fn snapshot_open(&self) -> Result<Vec<Accepted>, Failure> {
        let mut open = Vec::new();
        for key in &self.scopes {
            for (kind, status) in self.lists() {
                let mut after = None;
                loop {
                    let page = open_page(&self.api, key, kind, status, after).await?;
                    open.extend(page.ids.iter().map(|id| Accepted {
                        id: *id,
                        kind,
                        merchant: 0,
                        amount: 0,
                        succeeds: true,
                    }));
                    match page.ids.last() {
                        Some(last) if page.has_more => after = Some(*last),
                        _ => break,
                    }
                }
            }
        }
        open.sort_unstable_by_key(|a| a.id);
        open.dedup_by_key(|a| a.id);
        Ok(open)
    }
}

/// The ids of one page of an open list, and whether more follow.
struct IdPage {
    ids: Vec<Uuid>,
    has_more: bool,
}

/// One page (100) of `GET /payments?status=` or `GET /refunds?status=`.
async fn open_page(
    api: &Api,
    key: &Key,
    kind: Kind,
    status: &str,
    after: Option<Uuid>,
) -> Result<IdPage, Failure> {
    Ok(match kind {
        Kind::Payment => {
            let page = api.payments(key, status, 100, after).await?;
            IdPage {
                ids: page.items.iter().map(|p| p.id).collect(),
                has_more: page.has_more,
            }
        }
        Kind::Refund => {
            let page = api.refunds(key, status, 100, after).await?;
            IdPage {
                ids: page.items.iter().map(|r| r.id).collect(),
                has_more: page.has_more,
            }
        }
    })
}

/// A binary search for the first open payment in `0..len`, assuming the settled ones form a
/// prefix (like `slice::partition_point`, one probe at a time so each can be a request).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bisect {
    lo: usize,
    hi: usize,
}

impl Bisect {
    /// A search over `0..len`.
    pub(crate) fn new(len: usize) -> Bisect {
        Bisect { lo: 0, hi: len }
    }

    /// The index to look at next, or `None` when the search is over.
    pub(crate) fn probe(&self) -> Option<usize> {
        (self.lo < self.hi).then(|| self.lo + (self.hi - self.lo) / 2)
    }

    /// Whether the payment at the last probe is settled.
    pub(crate) fn answer(&mut self, settled: bool) {
        if let Some(mid) = self.probe() {
            if settled {
                self.lo = mid + 1;
            } else {
                self.hi = mid;
            }
        }
    }

    /// The first open index (`len` when all are settled), once `probe` is `None`.
    pub(crate) fn first_open(&self) -> usize {
        self.lo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisect_finds_the_first_open_payment_in_log_steps() {
        for (len, first_open) in [
            (0, 0),
            (1, 0),
            (1, 1),
            (10, 0),
            (10, 7),
            (10, 10),
            (20_000, 12_345),
        ] {
            let mut search = Bisect::new(len);
            let mut probes = 0;
            while let Some(i) = search.probe() {
                probes += 1;
                search.answer(i < first_open);
            }
            assert_eq!(search.first_open(), first_open, "len {len}");
            assert!(probes <= 16, "{probes} probes for {len}");
        }
    }

    #[test]
    fn settled_never_goes_negative() {
        let s = Sample {
            at: Duration::ZERO,
            accepted: 3,
            backlog: 5,
            exact: true,
        };
        assert_eq!(s.settled(), 0);
    }
}

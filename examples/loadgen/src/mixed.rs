//! `--mixed-backlog`: the requests of a mixed backlog (bench/run's S2M). Every `AUTHORIZED`
//! payment the platform key sees gets one capture of all of it, every `SUCCESS` payment one
//! refund of half its amount, and `--payments` new charges go to the merchant of those
//! payments; the three are interleaved in a seeded order over the connections, so every
//! stretch of the backlog has about the same mix. Each request's latency is recorded; the
//! captured payments and the refunds are the jobs a worker then settles (followed like
//! payments, when following).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::args::{Options, TokenMix, splitmix64, token_succeeds};
use crate::client::{Api, Capture, Failure, Key, NewPayment, PaymentView};
use crate::follow::{FollowOutcome, Follower};
use crate::report::Report;
use crate::run::{
    Accepted, Kind, Shared, join_follower, new_histogram, payment_amount, spawn_follower,
};

/// One request of the backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Capture all of this `AUTHORIZED` payment.
    Capture(Uuid),
    /// Refund this much of this `SUCCESS` payment.
    Refund(Uuid, i64),
    /// New charge number `n`.
    Charge(u64),
}

impl Work {
    fn route(&self) -> &'static str {
        match self {
            Work::Capture(_) => "POST /payments/:id/capture",
            Work::Refund(..) => "POST /payments/:id/refunds",
            Work::Charge(_) => "POST /payments",
        }
    }
}

/// Everything the connections share, read-only but for `next`.
struct Plan {
    api: Api,
    key: Key,
    merchant: Uuid,
    tokens: TokenMix,
    currency: String,
    run_id: String,
    seed: u64,
    work: Vec<Work>,
    next: AtomicU64,
}

/// What one connection did, or all of them merged.
struct Done {
    histogram: hdrhistogram::Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Done {
    /// Adds another connection's latencies and errors.
    fn merge(&mut self, other: Done) -> Result<(), String> {
        self.histogram
            .add(&other.histogram)
            .map_err(|e| format!("histogram merge: {e}"))?;
        for (label, n) in other.errors {
            *self.errors.entry(label).or_default() += n;
        }
        Ok(())
    }
}

/// The payments the backlog works on.
struct Backlog {
    /// Every `AUTHORIZED` payment the platform key sees: one capture each.
    authorized: Vec<PaymentView>,
    /// Every `SUCCESS` payment the platform key sees: one refund each.
    succeeded: Vec<PaymentView>,
    /// The merchant of the first of them; the new charges go to it.
    merchant: Uuid,
}

/// What sending the backlog left once the load ended and the follower (if any) was done.
struct Sent {
    /// The connections' latencies and errors, merged.
    done: Done,
    follow: Option<FollowOutcome>,
    /// Requests handed to a connection.
    sent: u64,
    /// Requests answered 202.
    accepted: u64,
    /// Time from start to the last answer.
    accept_elapsed: Duration,
}

/// Lists the payments to capture and refund, sends the backlog, follows it if asked.
pub(crate) async fn run(
    opts: &Options,
    api: &Api,
    platform: &Key,
    run_id: &str,
    seed: u64,
    charges: u64,
) -> Result<Report, String> {
    let backlog = list_backlog(api, platform).await?;
    let work = interleave(&backlog.authorized, &backlog.succeeded, charges, seed);
    let mix = format!(
        "captures {} / refunds {} / charges {charges}",
        backlog.authorized.len(),
        backlog.succeeded.len()
    );
    eprintln!("loadgen: mixed backlog: {mix}");
    let offered = work.len() as u64;
    let plan = Plan {
        api: api.clone(),
        key: platform.clone(),
        merchant: backlog.merchant,
        tokens: opts.tokens.clone(),
        currency: opts.currency.clone(),
        run_id: run_id.to_owned(),
        seed,
        work,
        next: AtomicU64::new(0),
    };
    let sent = send_backlog(opts, plan).await?;
    Ok(Report {
        mode: opts.load,
        run_id: run_id.to_owned(),
        connections: opts.connections,
        merchants: 1,
        tokens: opts.tokens.describe(),
        mix: Some(mix),
        offered,
        sent: sent.sent,
        accepted: sent.accepted,
        errors: sent.done.errors,
        accept_elapsed: sent.accept_elapsed,
        histogram: Some(sent.done.histogram),
        max_lag: Duration::ZERO,
        follow: sent.follow,
        timeline: None,
        books: None,
    })
}

/// Every `AUTHORIZED` and `SUCCESS` payment the platform key sees, and their merchant; with
/// neither there is nothing to capture or refund, and no merchant to charge.
async fn list_backlog(api: &Api, platform: &Key) -> Result<Backlog, String> {
    let authorized = all_payments(api, platform, "AUTHORIZED").await?;
    let succeeded = all_payments(api, platform, "SUCCESS").await?;
    let merchant = authorized
        .iter()
        .chain(&succeeded)
        .map(|p| p.merchant_id)
        .next()
        .ok_or(
            "no AUTHORIZED or SUCCESS payment to capture or refund: settle some first \
             (e.g. loadgen --payments 4000 --manual 50 --tokens tok_visa)",
        )?;
    Ok(Backlog {
        authorized,
        succeeded,
        merchant,
    })
}

/// Sends the plan's requests over `--connections` connections, with the progress line and
/// (when following) the follower running alongside; returns once both the load and the
/// follower are done.
async fn send_backlog(opts: &Options, plan: Plan) -> Result<Sent, String> {
    let shared = Arc::new(Shared::new());
    let total = plan.work.len() as u64;
    let progress = tokio::spawn(crate::report::progress_lines(shared.clone(), total));
    let follower = opts.follow.then(|| {
        let scopes = vec![plan.key.clone()];
        let follower = Follower::new(plan.api.clone(), plan.key.clone(), scopes, opts);
        spawn_follower(follower, &shared)
    });
    let done = run_connections(Arc::new(plan), &shared, opts.connections).await?;
    shared.end_load();
    let follow = join_follower(follower).await?;
    progress.abort();
    Ok(Sent {
        done,
        follow,
        sent: shared.sent.load(Ordering::Relaxed),
        accepted: shared.accepted.load(Ordering::Relaxed),
        accept_elapsed: shared.load_done_at().unwrap_or_default(),
    })
}

/// Runs `count` connections over the plan until it is used up and merges what they did.
async fn run_connections(
    plan: Arc<Plan>,
    shared: &Arc<Shared>,
    count: usize,
) -> Result<Done, String> {
    let mut connections = tokio::task::JoinSet::new();
    for _ in 0..count {
        connections.spawn(connection(plan.clone(), shared.clone()));
    }
    let mut totals = Done {
        histogram: new_histogram()?,
        errors: BTreeMap::new(),
    };
    while let Some(joined) = connections.join_next().await {
        let done = joined.map_err(|e| format!("a connection task failed: {e}"))??;
        totals.merge(done)?;
    }
    Ok(totals)
}

/// Every payment of `status` the key sees.
async fn all_payments(api: &Api, key: &Key, status: &str) -> Result<Vec<PaymentView>, String> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = api
            .payments(key, status, 100, after)
            .await
            .map_err(|e| format!("cannot list the {status} payments: {e}"))?;
        let more = page.has_more;
        after = page.items.last().map(|p| p.id);
        all.extend(page.items);
        if !more || after.is_none() {
            return Ok(all);
        }
    }
}

/// One capture per authorized payment, one refund of half per succeeded one, `charges` new
/// charges, in an order drawn from `seed`.
fn interleave(
    authorized: &[PaymentView],
    succeeded: &[PaymentView],
    charges: u64,
    seed: u64,
) -> Vec<Work> {
    let mut work: Vec<Work> = authorized
        .iter()
        .map(|p| Work::Capture(p.id))
        .chain(
            succeeded
                .iter()
                .map(|p| Work::Refund(p.id, (p.amount / 2).max(1))),
        )
        .chain((0..charges).map(Work::Charge))
        .collect();
    let mut keyed: Vec<(u64, Work)> = work
        .drain(..)
        .enumerate()
        .map(|(i, w)| {
            (
                splitmix64(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407)),
                w,
            )
        })
        .collect();
    keyed.sort_unstable_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, w)| w).collect()
}

/// One keep-alive connection: take the next request of the plan, send it, record the answer.
async fn connection(plan: Arc<Plan>, shared: Arc<Shared>) -> Result<Done, String> {
    let mut histogram = new_histogram()?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        let i = plan.next.fetch_add(1, Ordering::Relaxed);
        let Some(work) = usize::try_from(i)
            .ok()
            .and_then(|i| plan.work.get(i))
            .copied()
        else {
            break;
        };
        let started = Instant::now();
        shared.sent.fetch_add(1, Ordering::Relaxed);
        match send(&plan, work, i).await {
            Ok(accepted) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                histogram.saturating_record(micros.max(1));
                shared.push_accepted(accepted);
            }
            Err(failure) => {
                shared.note_failure(work.route(), &failure);
                *errors.entry(failure.label()).or_default() += 1;
            }
        }
    }
    Ok(Done { histogram, errors })
}

/// Sends one request; what it left for a worker once accepted.
async fn send(plan: &Plan, work: Work, i: u64) -> Result<Accepted, Failure> {
    let key = format!("lgm-{}-{i}", plan.run_id);
    let (id, kind, amount, succeeds) = match work {
        Work::Capture(payment) => {
            let id = plan.api.capture(&plan.key, &key, payment).await?;
            (id, Kind::Payment, 0, true)
        }
        Work::Refund(payment, amount) => {
            let id = plan.api.refund(&plan.key, &key, payment, amount).await?;
            (id, Kind::Refund, amount, true)
        }
        Work::Charge(n) => {
            let token = plan.tokens.pick(plan.seed, n);
            let amount = payment_amount(plan.seed, n);
            let payment = NewPayment::new(
                plan.merchant,
                amount,
                &plan.currency,
                token,
                Capture::Automatic,
            );
            let id = plan.api.create_payment(&plan.key, &key, &payment).await?;
            (id, Kind::Payment, amount, token_succeeds(token))
        }
    };
    Ok(Accepted {
        id,
        kind,
        merchant: 0,
        amount,
        succeeds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(n: u128, amount: i64) -> PaymentView {
        PaymentView {
            id: Uuid::from_u128(n),
            merchant_id: Uuid::from_u128(7),
            amount,
            status: "SUCCESS".into(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn interleave_keeps_every_request_once_and_mixes_them() {
        let authorized: Vec<_> = (0..100).map(|n| payment(n, 1_000)).collect();
        let succeeded: Vec<_> = (100..200).map(|n| payment(n, 301)).collect();
        let work = interleave(&authorized, &succeeded, 800, 42);
        assert_eq!(work.len(), 1_000);
        let captures = work
            .iter()
            .filter(|w| matches!(w, Work::Capture(_)))
            .count();
        let refunds: Vec<_> = work
            .iter()
            .filter_map(|w| match w {
                Work::Refund(_, amount) => Some(*amount),
                _ => None,
            })
            .collect();
        assert_eq!((captures, refunds.len()), (100, 100));
        assert!(refunds.iter().all(|a| *a == 150), "half, rounded down");
        // Mixed: the first tenth holds some of each kind, not a block of one.
        let head = &work[..100];
        assert!(head.iter().any(|w| matches!(w, Work::Capture(_))));
        assert!(head.iter().any(|w| matches!(w, Work::Refund(..))));
        assert!(head.iter().any(|w| matches!(w, Work::Charge(_))));
        assert_eq!(work, interleave(&authorized, &succeeded, 800, 42));
    }
}

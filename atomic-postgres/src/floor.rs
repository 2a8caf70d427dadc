//! The SQL floor of the money path: `pgbench` scripts that send the very statements this
//! adapter sends, batched as it batches them, with generated rows in place of requests. What
//! PostgreSQL does for them in a second is the most any server on this schema could do; a
//! benchmark reads its own figure against it to see how much of the cost is ours.
//!
//! Each `$n` of a statement is replaced by an expression that builds its array of values on
//! the server, so the statement text is the adapter's own and moves with it. The scripts expect
//! the `pgbench` variables `merchant`, `merchant_account` and `funding_account` (`-D name=uuid`):
//! an onboarded merchant, its account and the system account of its currency. Both work in
//! USD: the accept script makes USD payments, and the settle script posts them.
//!
//! [`accept_script`] replays the accept path of one group: the payments with their idempotency
//! keys, taken and completed by the same statement.
//!
//! [`settle_script`] replays what a worker sends to settle one batch of automatic-capture
//! charges the card network approves (bench S2), in the adapter's transactions and order:
//!
//! 1. The claim, `BEGIN_PAYMENTS`: the batch to `PROCESSING` under a lease.
//! 2. The settlement, ONE transaction: `LOCK_PAYMENTS` (no refunds: the refund half of its id
//!    array is empty), `READ_ACCOUNTS` (the merchant's and the system account, unlocked: a
//!    charge only adds to balances), `WRITE_PAYMENTS` (each to `SUCCESS`, the amount captured),
//!    `RECEIVING_ENDPOINTS` and `INSERT_EVENTS` (one `payment.succeeded` each, its body of the
//!    real shape and size; no deliveries, as S2 has no endpoint), `POST_MANY` (a posting and its
//!    two entries each), `LOCK_ACCOUNTS_LATE` (the hot rows, in id order) and `MOVE_BALANCES`.
//!
//! The statements a charge batch does not send are left out as the adapter leaves them out:
//! `LOCK_REFUNDS`, `WRITE_REFUNDS`, `LOCK_ACCOUNTS`. What the worker computes in Rust becomes
//! an expression: the batch's one lease is `gen_random_uuid()`; postings, entries and events get
//! time-ordered (v7) ids as the core mints them (a posting's and an event's are derived from its
//! payment's id, as two arrays must name them alike); times are `now()`; the amount posted is
//! the payment's own.
//!
//! The script adds one thing of its own: the pick. The adapter is handed the batch's ids by the
//! job queue; the script picks up to `batch` PENDING payments of the merchant (lowest id first)
//! with `FOR NO KEY UPDATE SKIP LOCKED` and keeps their ids and amounts (`\gset` into `ids`
//! and `amounts`), in one transaction with the claim, so concurrent clients never pick the same
//! payment and every payment picked is claimed. That costs a round trip and a statement more
//! than the adapter's claim (`BEGIN`, the pick, the claim, `COMMIT` for one autocommit claim).
//! A run that picks nothing writes nothing (its arrays are empty), so while the backlog lasts
//! one run settles `batch` payments, and `pgbench`'s tps times `batch` is settled/s.
//!
//! Left out, as they are not PostgreSQL's: the job queue's reserve and ack (Redis), the card
//! processor's call, and the worker's decisions between the statements (the lease check, the
//! posting's check against its payment, the event's rendering).

use crate::accept::INSERT_GROUP;
use crate::events::{INSERT_EVENTS, RECEIVING_ENDPOINTS};
use crate::ledger::{
    LOCK_ACCOUNTS_LATE, LOCK_PAYMENTS, MOVE_BALANCES, POST_MANY, READ_ACCOUNTS, WRITE_PAYMENTS,
};
use crate::settlement::BEGIN_PAYMENTS;

/// The response body kept with each idempotency completion: about the size of a payment's JSON.
const RESPONSE_BYTES: usize = 420;

/// The accept path of one group of `group` payments: one statement takes their idempotency
/// keys and inserts the payments, in one transaction as in the adapter. One script run accepts
/// `group` payments.
pub fn accept_script(group: usize) -> String {
    let rows = |expr: &str, ty: &str| generated(group, expr, ty);
    let key = "'floor-' || :client_id || '-' || :run || '-' || n";
    let token = format!("md5({key})::uuid");
    let insert = bind(
        INSERT_GROUP,
        &[
            rows("gen_random_uuid()", "uuid"),
            rows("':merchant_account'", "uuid"),
            rows("':funding_account'", "uuid"),
            rows("':merchant'", "uuid"),
            rows("1000 + n", "bigint"),
            rows("'USD'", "text"),
            rows("'tok_visa'", "text"),
            rows("''", "text"),
            rows(key, "text"),
            rows(&token, "uuid"),
            rows("':merchant'", "uuid"),
            rows("now()", "timestamptz"),
            rows("202", "smallint"),
            rows(
                &format!("convert_to(repeat('x', {RESPONSE_BYTES}), 'UTF8')"),
                "bytea",
            ),
            rows("':merchant'", "uuid"),
            rows("'automatic'", "text"),
            rows("'{}'", "text"),
            rows(&format!("sha256(({key})::bytea)"), "bytea"),
            rows("86400000000", "bigint"),
            "60000000".to_owned(),
        ],
    );
    format!("\\set run random(1, 2000000000)\n{insert};\n")
}

/// The lease a worker claims a batch for (its default), in microseconds.
const LEASE_MICROS: u64 = 30_000_000;

/// The settlement of one batch of up to `batch` PENDING payments of the merchant, as a worker
/// settles approved automatic charges: the pick (the script's own, see the module doc), then
/// the claim in one transaction with it, then the settlement in one transaction. One script
/// run settles `batch` payments while the backlog lasts.
pub fn settle_script(batch: usize) -> String {
    let claim = bind(
        BEGIN_PAYMENTS,
        &[
            "':ids'::uuid[]".to_owned(),
            "(SELECT gen_random_uuid())".to_owned(),
            LEASE_MICROS.to_string(),
        ],
    );
    let lock = bind(
        LOCK_PAYMENTS,
        &["':ids'::uuid[]".to_owned(), "'{}'".to_owned()],
    );
    let read = bind(READ_ACCOUNTS, &[per_account("a.id", "uuid")]);
    let write = bind(
        WRITE_PAYMENTS,
        &[
            per_payment("b.id", "uuid"),
            per_payment("'SUCCESS'", "text"),
            per_payment("NULL", "text"),
            per_payment("b.amount", "bigint"),
            per_payment("0", "bigint"),
            per_payment("0", "bigint"),
        ],
    );
    let endpoints = bind(
        RECEIVING_ENDPOINTS,
        &["ARRAY[':merchant']::uuid[]".to_owned()],
    );
    let statements = [
        "BEGIN".to_owned(),
        claim,
        "COMMIT".to_owned(),
        "BEGIN".to_owned(),
        lock,
        read,
        write,
        endpoints,
        insert_events(),
        post_many(),
        bind(LOCK_ACCOUNTS_LATE, &[per_account("a.id", "uuid")]),
        bind(
            MOVE_BALANCES,
            &[
                per_account("a.id", "uuid"),
                per_account("a.delta", "bigint"),
            ],
        ),
        "COMMIT".to_owned(),
    ];
    let mut script = String::new();
    for (i, statement) in statements.iter().enumerate() {
        script.push_str(statement);
        script.push_str(";\n");
        if i == 0 {
            script.push_str(&pick(batch));
        }
    }
    script
}

/// Up to `batch` PENDING payments of the merchant, oldest id first, locked until the claim
/// commits and skipped by every other client meanwhile: their ids and amounts, in id order,
/// into the variables `ids` and `amounts` (empty arrays when none is left).
fn pick(batch: usize) -> String {
    format!(
        "SELECT coalesce(array_agg(id ORDER BY id), '{{}}') AS ids, \
         coalesce(array_agg(amount ORDER BY id), '{{}}') AS amounts \
         FROM (SELECT id, amount FROM payments \
         WHERE owner_merchant = ':merchant' AND status = 'PENDING' \
         ORDER BY id LIMIT {batch} FOR NO KEY UPDATE SKIP LOCKED) AS picked \\gset\n"
    )
}

/// The events of the batch: one `payment.succeeded` per payment, with no delivery.
fn insert_events() -> String {
    let mut values = vec![
        per_payment(&derived_id("event", "b.id"), "uuid"),
        per_payment("'payment.succeeded'", "text"),
        per_payment("':merchant_account'", "uuid"),
        per_payment("':merchant'", "uuid"),
        per_payment("b.id", "uuid"),
        per_payment("NULL", "uuid"),
        per_payment("now()", "timestamptz"),
        per_payment(&event_body(), "text"),
    ];
    // The deliveries' thirteen columns.
    values.resize(21, "'{}'".to_owned());
    bind(INSERT_EVENTS, &values)
}

/// The postings of the batch: per payment, one transaction (DEBIT the system account, CREDIT
/// the merchant's, of the payment's amount) and its two entries.
fn post_many() -> String {
    let posting = derived_id("posting", "b.id");
    let entry = time_ordered("clock_timestamp()", "gen_random_uuid()");
    bind(
        POST_MANY,
        &[
            per_payment(&posting, "uuid"),
            per_payment("b.id", "uuid"),
            per_payment("NULL", "uuid"),
            per_payment("':funding_account'", "uuid"),
            per_payment("':merchant_account'", "uuid"),
            per_payment("b.amount", "bigint"),
            per_payment("'USD'", "text"),
            per_payment("now()", "timestamptz"),
            per_entry(&entry, "uuid"),
            per_entry(&posting, "uuid"),
            per_entry("b.id", "uuid"),
            per_entry("NULL", "uuid"),
            per_entry("e.account_id", "uuid"),
            per_entry("e.direction", "text"),
            per_entry("b.amount", "bigint"),
            per_entry("'USD'", "text"),
            per_entry("now()", "timestamptz"),
        ],
    )
}

/// The picked payments (`b.id`, `b.amount`, and `b.n` their place), in id order.
const PICKED: &str =
    "unnest(':ids'::uuid[], ':amounts'::bigint[]) WITH ORDINALITY AS b(id, amount, n)";

/// An array of `expr` (over `b`) for each picked payment, in id order, as type `ty`.
fn per_payment(expr: &str, ty: &str) -> String {
    format!("ARRAY(SELECT ({expr})::{ty} FROM {PICKED} ORDER BY b.n)")
}

/// An array of `expr` (over `b`, and `e` the entry: `e.direction`, `e.account_id`) for each
/// entry of each picked payment's posting, the DEBIT then the CREDIT, as type `ty`.
fn per_entry(expr: &str, ty: &str) -> String {
    format!(
        "ARRAY(SELECT ({expr})::{ty} FROM {PICKED} CROSS JOIN (VALUES \
         (1, 'DEBIT', ':funding_account'::uuid), (2, 'CREDIT', ':merchant_account'::uuid)) \
         AS e(side, direction, account_id) ORDER BY b.n, e.side)"
    )
}

/// An array of `expr` (over `a`: `a.id`, and `a.delta` what the batch moves on it) for each
/// account the batch posts to, in id order; none when nothing was picked.
fn per_account(expr: &str, ty: &str) -> String {
    format!(
        "ARRAY(SELECT ({expr})::{ty} FROM (SELECT id, CASE WHEN id = ':merchant_account'::uuid \
         THEN total ELSE -total END AS delta \
         FROM unnest(ARRAY[':merchant_account', ':funding_account']::uuid[]) AS id, \
         (SELECT sum(amount)::bigint AS total FROM unnest(':amounts'::bigint[]) AS amount) AS t \
         WHERE total IS NOT NULL) AS a ORDER BY a.id)"
    )
}

/// A time-ordered (v7) id: the milliseconds of `at`, then the bits of the uuid `tail`.
fn time_ordered(at: &str, tail: &str) -> String {
    format!(
        "(lpad(to_hex((extract(epoch FROM {at}) * 1000)::bigint), 12, '0') || '7' \
         || substr(({tail})::text, 16))::uuid"
    )
}

/// The id of the `what` ("posting", "event") of payment `payment`: time-ordered by the
/// transaction's time, the same in every array that names it.
fn derived_id(what: &str, payment: &str) -> String {
    time_ordered("now()", &format!("md5('{what} ' || {payment})::uuid"))
}

/// A `payment.succeeded` event's body as the core renders it (`Event::of_payment`): the same
/// fields, and about the same size. Its id is the event's; the idempotency key and the
/// payment's creation time, which the script does not carry, are stand-ins of their length.
fn event_body() -> String {
    let stamp = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')";
    format!(
        "format('{{\"id\":\"%s\",\"type\":\"payment.succeeded\",\"merchantId\":\"%s\",\
         \"createdAt\":\"%s\",\"data\":{{\"object\":{{\"id\":\"%s\",\"merchantId\":\"%s\",\
         \"amount\":%s,\"currency\":\"USD\",\"source\":\"tok_visa\",\"description\":\"\",\
         \"status\":\"SUCCESS\",\"failureReason\":null,\"captureMethod\":\"automatic\",\
         \"amountCaptured\":%s,\"amountRefunded\":0,\"cancellationReason\":null,\
         \"metadata\":{{}},\"idempotencyKey\":\"%s\",\"createdAt\":\"%s\",\
         \"updatedAt\":\"%s\"}}}}}}', {id}, ':merchant_account', {stamp}, b.id, \
         ':merchant_account', b.amount, b.amount, 'floor-' || left(b.id::text, 13), {stamp}, \
         {stamp})",
        id = derived_id("event", "b.id"),
    )
}

/// An array of `group` values of `expr` (which may use the row number `n`), as type `ty`.
fn generated(group: usize, expr: &str, ty: &str) -> String {
    format!("ARRAY(SELECT ({expr})::{ty} FROM generate_series(1, {group}) AS n)")
}

/// `sql` with each `$n` replaced by `values[n - 1]`.
fn bind(sql: &str, values: &[String]) -> String {
    let mut out = String::with_capacity(sql.len() + values.iter().map(String::len).sum::<usize>());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits = rest[at + 1..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let number: Option<usize> = rest[at + 1..at + 1 + digits].parse().ok();
        match number
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| values.get(i))
        {
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &rest[at + 1 + digits..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_replaces_each_parameter_by_its_number() {
        let values = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let values: Vec<String> = values.into_iter().cycle().take(12).collect();
        assert_eq!(bind("$1, $2::int, $12 $", &values), "a, b::int, c $");
    }

    #[test]
    fn the_accept_script_leaves_no_parameter_unbound() {
        let script = accept_script(16);
        assert!(!script.contains('$'), "{script}");
        assert_eq!(script.matches("generate_series(1, 16)").count(), 19);
    }

    #[test]
    fn the_settle_script_claims_then_settles_in_two_transactions_with_nothing_unbound() {
        let script = settle_script(64);
        assert!(!script.contains('$'), "{script}");
        let commands = script.replace(" \\gset\n", ";\n");
        let commands: Vec<&str> = commands
            .split_terminator(";\n")
            .map(|command| command.split_whitespace().next().unwrap_or(""))
            .collect();
        assert_eq!(
            commands,
            [
                "BEGIN", "SELECT", "WITH", "COMMIT", "BEGIN", "SELECT", "SELECT", "UPDATE",
                "SELECT", "WITH", "WITH", "SELECT", "UPDATE", "COMMIT"
            ],
            "{script}"
        );
        assert_eq!(script.matches("\\gset\n").count(), 1);
        assert!(script.contains("LIMIT 64 FOR NO KEY UPDATE SKIP LOCKED"));
    }
}

//! `LedgerAudit` on [`PgStore`]: the L1–L16 books audit (TEST-MATRIX.md) as one SQL statement,
//! so every count comes from one consistent snapshot. L8 counts the keys with two payments
//! created less than one window (the key's TTL) apart, whichever claim made them. A ledger
//! transaction is a payment's charge (`refund_id` NULL) or a refund's posting; L6 counts rows
//! in a state no legal sequence of transitions reaches (the transitions themselves are guarded
//! by triggers, so a row is where a broken one would show). L12 leaves `AUTHORIZED` payments
//! out (they wait for their merchant) and measures a capture from its request. L15 and L16
//! leave out what is older than the oldest event kept (`EVENT_RETENTION` purged it).

use std::time::Duration;

use async_trait::async_trait;
use atomic_core::Result;
use atomic_core::money::MAX_PAYMENT_AMOUNT;
use atomic_core::ports::{AuditReport, LedgerAudit};

use crate::error::from_sqlx;
use crate::rows::{count, micros};
use crate::store::PgStore;

const AUDIT: &str = "\
WITH signed AS (
    SELECT e.*, CASE e.direction WHEN 'CREDIT' THEN e.amount ELSE -e.amount END AS delta
    FROM ledger_entries e
), charges AS (
    SELECT payment_id, count(*) AS n, min(amount) AS low, max(amount) AS high
    FROM ledger_transactions WHERE refund_id IS NULL GROUP BY payment_id
), refunded AS (
    SELECT payment_id,
           sum(amount) FILTER (WHERE status <> 'FAILED') AS reserved,
           sum(amount) FILTER (WHERE status = 'SUCCESS') AS succeeded
    FROM refunds GROUP BY payment_id
), refund_postings AS (
    SELECT refund_id, count(*) AS n FROM ledger_transactions
    WHERE refund_id IS NOT NULL GROUP BY refund_id
), written AS (
    SELECT payment_id, refund_id,
           count(*) FILTER (WHERE type = 'payment.authorized') AS authorized,
           count(*) FILTER (WHERE type = 'payment.succeeded') AS succeeded,
           count(*) FILTER (WHERE type = 'payment.failed') AS failed,
           count(*) FILTER (WHERE type = 'payment.canceled') AS canceled,
           count(*) FILTER (WHERE type = 'refund.succeeded') AS refund_succeeded,
           count(*) FILTER (WHERE type = 'refund.failed') AS refund_failed
    FROM events GROUP BY payment_id, refund_id
), kept AS (
    SELECT coalesce(min(created_at), '-infinity') AS since FROM events
)
SELECT
    (SELECT count(*) FROM (
        SELECT currency FROM signed GROUP BY currency HAVING sum(delta) <> 0) s) AS zero_sum,
    (SELECT count(*) FROM ledger_transactions t
     LEFT JOIN payments p ON p.id = t.payment_id
     LEFT JOIN refunds r ON r.id = t.refund_id
     WHERE p.id IS NULL
        OR (t.refund_id IS NULL AND (t.debit_account <> p.funding_account
            OR t.credit_account <> p.merchant_account OR t.amount <> p.amount_captured))
        OR (t.refund_id IS NOT NULL AND (r.id IS NULL OR r.payment_id <> t.payment_id
            OR t.debit_account <> r.merchant_account OR t.credit_account <> r.funding_account
            OR t.amount <> r.amount))
        OR t.currency <> p.currency
        OR (SELECT count(*) FROM ledger_entries e WHERE e.transaction_id = t.id) <> 2
        OR NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transaction_id = t.id
                       AND e.direction = 'DEBIT' AND e.account_id = t.debit_account
                       AND e.amount = t.amount
                       AND e.refund_id IS NOT DISTINCT FROM t.refund_id)
        OR NOT EXISTS (SELECT 1 FROM ledger_entries e WHERE e.transaction_id = t.id
                       AND e.direction = 'CREDIT' AND e.account_id = t.credit_account
                       AND e.amount = t.amount
                       AND e.refund_id IS NOT DISTINCT FROM t.refund_id))
        AS unbalanced_transactions,
    (SELECT count(*) FROM payments p LEFT JOIN charges c ON c.payment_id = p.id
     WHERE coalesce(c.n, 0) <> CASE WHEN p.status = 'SUCCESS' THEN 1 ELSE 0 END)
        AS status_posting_mismatch,
    (SELECT count(*) FROM accounts a
     LEFT JOIN (SELECT account_id, sum(delta) AS total FROM signed GROUP BY account_id) s
       ON s.account_id = a.id
     WHERE a.balance <> coalesce(s.total, 0)) AS cached_balance_mismatch,
    (SELECT count(*) FROM accounts WHERE kind <> 'system' AND balance < 0) AS negative_balances,
    (SELECT count(*) FROM payments
     WHERE status NOT IN ('PENDING', 'PROCESSING', 'AUTHORIZED', 'SUCCESS', 'FAILED', 'CANCELED')
        OR (status = 'FAILED') <> (failure_reason IS NOT NULL)
        OR (status = 'CANCELED') <> (cancellation_reason IS NOT NULL)
        OR (status = 'SUCCESS') <> (amount_captured > 0)
        OR (lease_id IS NOT NULL AND status <> 'PROCESSING')
        OR (capture_requested IS NOT NULL AND status <> 'PROCESSING')
        OR (status = 'PROCESSING' AND lease_id IS NULL AND capture_requested IS NULL)
        OR (capture_method = 'automatic' AND (status IN ('AUTHORIZED', 'CANCELED')
            OR capture_requested IS NOT NULL
            OR (status = 'SUCCESS' AND amount_captured <> amount))))
    + (SELECT count(*) FROM refunds
       WHERE status NOT IN ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED')
          OR (status = 'FAILED') <> (failure_reason IS NOT NULL)
          OR (status = 'PROCESSING') <> (lease_id IS NOT NULL)) AS illegal_transitions,
    (SELECT count(DISTINCT (w.scope, w.key)) FROM (
        SELECT coalesce(p.created_by, '00000000-0000-0000-0000-000000000000'::uuid) AS scope,
               p.idempotency_key AS key, p.created_at,
               lag(p.created_at) OVER (
                   PARTITION BY p.created_by, p.idempotency_key ORDER BY p.created_at) AS previous
        FROM payments p WHERE p.idempotency_key IS NOT NULL) w
     JOIN idempotency_keys k ON k.scope = w.scope AND k.key = w.key
     WHERE w.created_at - w.previous < k.expires_at - k.locked_at) AS duplicate_idempotency_keys,
    (SELECT count(*) FROM payments p
     LEFT JOIN accounts m ON m.id = p.merchant_account
     LEFT JOIN accounts f ON f.id = p.funding_account
     WHERE m.id IS NULL OR f.id IS NULL OR m.kind <> 'merchant' OR f.kind <> 'system'
        OR m.currency <> p.currency OR f.currency <> p.currency
        OR m.owner_merchant IS DISTINCT FROM p.owner_merchant) AS tenant_currency_mismatch,
    (SELECT count(*) FROM payments
     WHERE status IN ('PENDING', 'PROCESSING')
       AND CASE WHEN capture_requested IS NULL THEN created_at ELSE updated_at END
           < now() - $1 * interval '1 microsecond')
    + (SELECT count(*) FROM refunds
       WHERE status IN ('PENDING', 'PROCESSING')
         AND created_at < now() - $1 * interval '1 microsecond') AS stuck_payments,
    (SELECT count(*) FROM (VALUES
        ('ledger_entries', 'ledger_entries_append_only'),
        ('ledger_entries', 'ledger_entries_no_truncate'),
        ('ledger_transactions', 'ledger_transactions_append_only'),
        ('ledger_transactions', 'ledger_transactions_no_truncate')) AS g (tab, trigger)
     WHERE NOT EXISTS (
        SELECT 1 FROM pg_trigger t
        WHERE t.tgrelid = to_regclass(g.tab) AND t.tgname = g.trigger
          AND t.tgenabled <> 'D')) AS mutable_ledger,
    (SELECT count(*) FROM payments WHERE amount < 1 OR amount > $2)
    + (SELECT count(*) FROM ledger_entries WHERE amount < 1 OR amount > $2)
        AS amount_out_of_domain,
    (SELECT count(*) FROM refunds r LEFT JOIN refund_postings rp ON rp.refund_id = r.id
     WHERE coalesce(rp.n, 0) <> CASE WHEN r.status = 'SUCCESS' THEN 1 ELSE 0 END)
    + (SELECT count(*) FROM refund_postings rp
       WHERE NOT EXISTS (SELECT 1 FROM refunds r WHERE r.id = rp.refund_id))
    + (SELECT count(*) FROM payments p JOIN charges c ON c.payment_id = p.id
       WHERE p.status = 'SUCCESS'
         AND (c.n <> 1 OR c.low <> p.amount_captured OR c.high <> p.amount_captured))
        AS refund_posting_mismatch,
    (SELECT count(*) FROM payments p LEFT JOIN refunded r ON r.payment_id = p.id
     WHERE NOT (coalesce(r.reserved, 0) <= p.amount_captured AND p.amount_captured <= p.amount
            AND p.amount_reserved = coalesce(r.reserved, 0)
            AND p.amount_refunded = coalesce(r.succeeded, 0))) AS refund_over_capture,
    (SELECT count(*) FROM payments p CROSS JOIN kept
     LEFT JOIN written w ON w.payment_id = p.id AND w.refund_id IS NULL
     WHERE p.updated_at >= kept.since AND (
        coalesce(w.succeeded, 0) <> (p.status = 'SUCCESS')::int
        OR coalesce(w.failed, 0) <> (p.status = 'FAILED')::int
        OR coalesce(w.canceled, 0) <> (p.status = 'CANCELED')::int
        OR CASE WHEN p.capture_method = 'manual' AND p.status = 'FAILED'
                THEN coalesce(w.authorized, 0) > 1
                ELSE coalesce(w.authorized, 0) <> (p.capture_method = 'manual'
                    AND (p.status IN ('AUTHORIZED', 'CANCELED', 'SUCCESS')
                         OR p.capture_requested IS NOT NULL))::int END))
    + (SELECT count(*) FROM refunds r CROSS JOIN kept
       LEFT JOIN written w ON w.refund_id = r.id
       WHERE r.updated_at >= kept.since
         AND (coalesce(w.refund_succeeded, 0) <> (r.status = 'SUCCESS')::int
              OR coalesce(w.refund_failed, 0) <> (r.status = 'FAILED')::int))
    + (SELECT count(*) FROM written w
       WHERE NOT EXISTS (SELECT 1 FROM payments p WHERE p.id = w.payment_id)
          OR (w.refund_id IS NOT NULL AND NOT EXISTS (
              SELECT 1 FROM refunds r WHERE r.id = w.refund_id AND r.payment_id = w.payment_id)))
        AS outbox_mismatch,
    (SELECT count(*) FROM events e JOIN webhook_endpoints ep
       ON ep.created_at <= e.created_at
      AND (ep.deleted_at IS NULL OR ep.deleted_at > e.created_at)
      AND (ep.owner_merchant IS NULL OR ep.owner_merchant = e.owner_merchant)
      AND (ep.events = ARRAY['*'] OR e.type = ANY (ep.events))
     WHERE NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                       WHERE d.event_id = e.id AND d.endpoint_id = ep.id))
    + (SELECT count(*) FROM webhook_deliveries
       WHERE status = 'DELIVERED' AND coalesce(last_status_code NOT BETWEEN 200 AND 299, true))
        AS delivery_mismatch";

#[async_trait]
impl LedgerAudit for PgStore {
    async fn audit(&self, stuck_after: Duration) -> Result<AuditReport> {
        self.call(async {
            let row = sqlx::query(AUDIT)
                .bind(micros(stuck_after))
                .bind(MAX_PAYMENT_AMOUNT)
                .fetch_one(self.pool())
                .await
                .map_err(from_sqlx)?;
            Ok(AuditReport {
                zero_sum: count(&row, "zero_sum")?,
                unbalanced_transactions: count(&row, "unbalanced_transactions")?,
                status_posting_mismatch: count(&row, "status_posting_mismatch")?,
                cached_balance_mismatch: count(&row, "cached_balance_mismatch")?,
                negative_balances: count(&row, "negative_balances")?,
                illegal_transitions: count(&row, "illegal_transitions")?,
                duplicate_idempotency_keys: count(&row, "duplicate_idempotency_keys")?,
                tenant_currency_mismatch: count(&row, "tenant_currency_mismatch")?,
                mutable_ledger: count(&row, "mutable_ledger")?,
                amount_out_of_domain: count(&row, "amount_out_of_domain")?,
                stuck_payments: count(&row, "stuck_payments")?,
                refund_posting_mismatch: count(&row, "refund_posting_mismatch")?,
                refund_over_capture: count(&row, "refund_over_capture")?,
                outbox_mismatch: count(&row, "outbox_mismatch")?,
                delivery_mismatch: count(&row, "delivery_mismatch")?,
            })
        })
        .await
    }
}

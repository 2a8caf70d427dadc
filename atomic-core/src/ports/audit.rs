//! [`LedgerAudit`]: the books audit, an optional capability of a ledger store. It counts the
//! violations of the ledger and outbox invariants (TEST-MATRIX.md L1–L16) in one consistent snapshot.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

/// Violation counts, one per invariant; a clean ledger has every count at zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// L1: currencies whose entries do not sum to zero.
    pub zero_sum: u64,
    /// L2: transactions that are not one DEBIT and one CREDIT of the payment's amount on its
    /// funding and merchant accounts.
    pub unbalanced_transactions: u64,
    /// L3: `SUCCESS` payments without exactly one charge transaction, or others with any.
    pub status_posting_mismatch: u64,
    /// L4: accounts whose cached balance differs from credits minus debits.
    pub cached_balance_mismatch: u64,
    /// L5: non-system accounts below zero.
    pub negative_balances: u64,
    /// L6: recorded status changes that are not transitions of the payment or refund state
    /// machines (API.md v1.1).
    pub illegal_transitions: u64,
    /// L7: guards missing that keep the journal append-only (an adapter whose journal has no
    /// update or delete path at all reports 0).
    pub mutable_ledger: u64,
    /// L8: idempotency keys with more than one payment inside their live window (a key is
    /// new again once its window has passed, as Stripe's are).
    pub duplicate_idempotency_keys: u64,
    /// L9: payments or entries whose amount is outside 1..=`MAX_PAYMENT_AMOUNT` minor units.
    pub amount_out_of_domain: u64,
    /// L10: payments whose accounts differ from them in currency or owner.
    pub tenant_currency_mismatch: u64,
    /// L12: payments and refunds not terminal although older than the audit's `stuck_after`
    /// (an `AUTHORIZED` payment waits for its merchant, not for us, and is not stuck; a
    /// capture's age counts from its request).
    pub stuck_payments: u64,
    /// L13: refunds whose postings disagree with their status (a `SUCCESS` refund without
    /// exactly one balanced posting of its amount from the merchant to the system account, or
    /// another with any), and charge postings of a `SUCCESS` payment that are not exactly one
    /// of `amountCaptured`.
    pub refund_posting_mismatch: u64,
    /// L14: payments whose refunds break `Σ not FAILED <= amountCaptured <= amount` or whose
    /// `amountRefunded` differs from the sum of their `SUCCESS` refunds.
    pub refund_over_capture: u64,
    /// L15: payments and refunds whose events disagree with their state (each event state
    /// entered has exactly one event of its type, no event without its state), and events of
    /// records that do not exist. Records changed before the oldest event kept are past
    /// `EVENT_RETENTION` and not counted.
    pub outbox_mismatch: u64,
    /// L16: (event, endpoint) pairs where the endpoint existed and subscribed when the event
    /// was written but has no delivery of it, and `DELIVERED` deliveries without a 2xx.
    pub delivery_mismatch: u64,
}

impl AuditReport {
    /// Every invariant with its violation count, in order.
    pub fn rows(&self) -> [(&'static str, &'static str, u64); 15] {
        [
            ("L1", "zero-sum per currency", self.zero_sum),
            ("L2", "balanced transactions", self.unbalanced_transactions),
            (
                "L3",
                "SUCCESS <=> one transaction",
                self.status_posting_mismatch,
            ),
            (
                "L4",
                "cached balance = journal",
                self.cached_balance_mismatch,
            ),
            ("L5", "no negative merchant balance", self.negative_balances),
            ("L6", "legal transitions only", self.illegal_transitions),
            ("L7", "ledger append-only", self.mutable_ledger),
            (
                "L8",
                "one payment per idempotency key",
                self.duplicate_idempotency_keys,
            ),
            ("L9", "amounts in domain", self.amount_out_of_domain),
            (
                "L10",
                "tenant and currency consistency",
                self.tenant_currency_mismatch,
            ),
            ("L12", "no stuck payments", self.stuck_payments),
            (
                "L13",
                "refund postings match status",
                self.refund_posting_mismatch,
            ),
            ("L14", "refunds within captured", self.refund_over_capture),
            ("L15", "one event per change", self.outbox_mismatch),
            ("L16", "one delivery per receiver", self.delivery_mismatch),
        ]
    }

    /// Whether no invariant is violated.
    pub fn is_clean(&self) -> bool {
        self.rows().iter().all(|(_, _, n)| *n == 0)
    }
}

impl fmt::Display for AuditReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (id, name, count) in self.rows() {
            writeln!(f, "{id:<4} {name:<34} {count}")?;
        }
        Ok(())
    }
}

/// A store that can audit its own books.
#[async_trait]
pub trait LedgerAudit: Send + Sync + 'static {
    /// Counts violations in one consistent snapshot; payments not terminal after
    /// `stuck_after` count as stuck.
    async fn audit(&self, stuck_after: Duration) -> Result<AuditReport>;
}

//! The crate's one error type, and how database failures become core errors: constraint
//! violations by constraint name, connection trouble as `Unavailable`, the rest as `Backend`.

use atomic_core::error::Invariant;

/// Why connecting to, or migrating, the database failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not a PostgreSQL connection URL.
    #[error("DATABASE_URL is not a valid PostgreSQL URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    /// The database did not answer.
    #[error("could not connect: {0}")]
    Unreachable(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("migrating the schema failed: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// SQLSTATE classes and codes that mean "try again later": connection exceptions, insufficient
/// resources, operator intervention (shutdown, cancel, statement timeout), serialization
/// failures and deadlocks, lock timeouts.
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || code == "40001"
        || code == "40P01"
        || code == "55P03"
        // A read-only transaction: connected to a standby after a failover.
        || code == "25006"
}

/// Maps a database failure to the core's error.
pub(crate) fn from_sqlx(error: sqlx::Error) -> atomic_core::Error {
    match &error {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default().into_owned();
            let constraint = db.constraint().unwrap_or_default();
            match (code.as_str(), constraint) {
                (c, _) if is_transient(c) => atomic_core::Error::unavailable(error),
                (
                    "23505",
                    "ledger_transactions_one_charge_per_payment"
                    | "ledger_transactions_one_per_refund",
                ) => Invariant::AlreadyPosted.into(),
                ("23505", "payments_one_per_claim" | "refunds_one_per_claim") => {
                    atomic_core::Error::IdempotencyClaimLost
                }
                // Also a second event for one change (`events_one_per_payment_change`,
                // `events_one_per_refund_change`) and a second delivery of one event to one
                // endpoint (`webhook_deliveries_one_per_endpoint`): refused as duplicates.
                ("23505", _) => Invariant::DuplicateId.into(),
                ("23514", "accounts_non_negative") => Invariant::InsufficientFunds.into(),
                ("23514", "payments_voided_only_fails") => Invariant::Voided.into(),
                // A payment changed against its state machine: a bug in the caller, not a
                // posting the books refuse (which the worker would void and fail).
                (
                    "23514",
                    "payments_legal_transition"
                    | "payments_immutable"
                    | "payments_voiding_permanent"
                    | "payments_capture_once"
                    | "payments_refund_counters"
                    | "refunds_legal_transition"
                    | "refunds_immutable",
                ) => atomic_core::Error::backend(error),
                // An event or a webhook record the schema refuses: a bug in the caller, not
                // a posting the books refuse.
                ("23514", c) if c.starts_with("events_") || c.starts_with("webhook_") => {
                    atomic_core::Error::backend(error)
                }
                ("23514", _) => Invariant::PostingMismatch.into(),
                ("23503", _) => Invariant::MissingReference.into(),
                ("22003", _) => Invariant::BalanceOverflow.into(),
                _ => atomic_core::Error::backend(error),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => atomic_core::Error::unavailable(error),
        _ => atomic_core::Error::backend(error),
    }
}

/// A stored value the core refuses (the row was written by something else, or is corrupt).
pub(crate) fn corrupt(what: &'static str) -> atomic_core::Error {
    atomic_core::Error::backend(format!("stored {what} is not valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_codes_are_recognised() {
        for code in [
            "08006", "53300", "57P01", "57014", "40001", "40P01", "55P03",
        ] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "23514", "22003", "42P01"] {
            assert!(!is_transient(code), "{code}");
        }
    }

    #[test]
    fn pool_exhaustion_is_unavailable() {
        assert!(matches!(
            from_sqlx(sqlx::Error::PoolTimedOut),
            atomic_core::Error::Unavailable(_)
        ));
        assert!(matches!(
            from_sqlx(sqlx::Error::RowNotFound),
            atomic_core::Error::Backend(_)
        ));
    }
}

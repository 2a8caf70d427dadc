//! The SQL floor of the money path: `pgbench` scripts that send the very statements this
//! adapter sends, batched as it batches them, with generated rows in place of requests. What
//! PostgreSQL does for them in a second is the most any server on this schema could do; a
//! benchmark reads its own figure against it to see how much of the cost is ours.
//!
//! Each `$n` of a statement is replaced by an expression that builds its array of `group`
//! values on the server, so the statement text is the adapter's own and moves with it. The
//! scripts expect the `pgbench` variables `merchant`, `merchant_account` and `funding_account`
//! (`-D name=uuid`): an onboarded merchant, its account and the system account of its currency.

use crate::accept::INSERT_GROUP;
use crate::idempotency::CLAIM_MANY;

/// The response body kept with each idempotency completion: about the size of a payment's JSON.
const RESPONSE_BYTES: usize = 420;

/// The accept path of one group of `group` payments: the claims of their idempotency keys in
/// one statement, then the payments with their completions in another, each its own
/// transaction as in the adapter. One script run accepts `group` payments.
pub fn accept_script(group: usize) -> String {
    let rows = |expr: &str, ty: &str| generated(group, expr, ty);
    let key = "'floor-' || :client_id || '-' || :run || '-' || n";
    let token = format!("md5({key})::uuid");
    let claim = bind(
        CLAIM_MANY,
        &[
            rows("':merchant'", "uuid"),
            rows(key, "text"),
            rows(&format!("sha256(({key})::bytea)"), "bytea"),
            rows(&token, "uuid"),
            rows("86400000000", "bigint"),
            "30000000".to_owned(),
        ],
    );
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
        ],
    );
    format!("\\set run random(1, 2000000000)\n{claim};\n{insert};\n")
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
        assert_eq!(script.matches("generate_series(1, 16)").count(), 22);
    }
}

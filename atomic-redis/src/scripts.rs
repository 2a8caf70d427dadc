//! The Lua scripts, one file each under `lua/` (each opens with its KEYS/ARGV/return header),
//! loaded once as [`redis::Script`]s so calls go out as `EVALSHA` (falling back to `EVAL`
//! semantics by loading the script on `NOSCRIPT`).

use std::sync::LazyLock;

use redis::Script;

/// Counts one request against each limiter, stopping at the first refusal.
pub(crate) static FIXED_WINDOW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/fixed_window.lua")));

/// Moves due delayed jobs back, reclaims expired leases and reads new jobs for one consumer.
pub(crate) static RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/reserve.lua")));

/// Acks, retries or dead-letters one delivery, if it is still the current one.
pub(crate) static SETTLE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/settle.lua")));

/// Deletes consumers that hold nothing and have been idle for long.
pub(crate) static PRUNE_CONSUMERS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/prune_consumers.lua")));

/// Acks many deliveries of one batch, each if it is still the current one.
pub(crate) static ACK_MANY: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/ack_many.lua")));

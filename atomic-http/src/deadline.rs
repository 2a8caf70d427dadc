//! The request deadline: a request still running after `request_timeout` is answered 503
//! `unavailable`, unless it has begun its write. A 503 means nothing was stored (API.md), so
//! once a handler hands its write to the store ([`Commit::begin`]) the answer waits for the
//! write's own outcome, which the store bounds (pool acquire, statement and call timeouts).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Set by a handler when its write begins; read by [`deadline`] when the time is up.
#[derive(Clone, Debug, Default)]
pub(crate) struct Commit(Arc<AtomicBool>);

impl Commit {
    /// The write begins: from now on the request is answered with its outcome, however long
    /// it takes.
    pub(crate) fn begin(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn begun(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Middleware: 503 for a request past `timeout` that has not begun its write. The handler runs
/// in this task, so when the time is up it is not running: [`Commit::begun`] is exact.
pub(crate) async fn deadline(
    State(timeout): State<Duration>,
    mut request: Request,
    next: Next,
) -> Response {
    let commit = Commit::default();
    request.extensions_mut().insert(commit.clone());
    let handler = next.run(request);
    tokio::pin!(handler);
    tokio::select! {
        response = &mut handler => response,
        () = tokio::time::sleep(timeout) => {
            if commit.begun() {
                handler.await
            } else {
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            }
        }
    }
}

//! Serving the router over TCP with the limits a public endpoint needs, which `axum::serve`
//! does not set: a header-read timeout (a client that trickles its request head, as in a
//! slowloris attack, is disconnected, and so is a keep-alive connection idle that long) and a
//! cap on open connections (past it, new connections wait in the kernel's accept queue instead
//! of costing a file descriptor and a task each). Shutdown is graceful: the listener closes,
//! requests in flight are answered, idle connections are closed, within a drain timeout.
//! Connections close lingering: what the client is still sending after its answer is read and
//! discarded, up to a bound, so the client receives the answer rather than a reset.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tower::ServiceExt;

/// The largest request head accepted (request line and header fields), as for Node's and
/// nginx's defaults; larger ones get 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The connection limits of [`serve`].
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// How long a client may take to send a request head (also the longest a keep-alive
    /// connection may sit idle between requests).
    pub header_read_timeout: Duration,
    /// Open connections at most; further clients wait to be accepted.
    pub max_connections: usize,
    /// How long shutdown waits for open connections to finish before it drops them.
    pub drain_timeout: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains. Handlers see the
/// client's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        // A request head larger than this is refused with 431 (bodies stream through it).
        .max_buf_size(MAX_HEAD_BYTES);
    let mut shutdown = std::pin::pin!(shutdown);
    while let Some(accepted) = accept(&listener, &permits, shutdown.as_mut()).await {
        spawn_connection(&http, &graceful, &router, accepted);
    }
    drop(listener);
    if tokio::time::timeout(config.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the drain timeout; dropping them");
    }
}

/// A connection accepted under a permit of the cap, which it holds until it closes.
struct Accepted {
    permit: OwnedSemaphorePermit,
    stream: TcpStream,
    peer: SocketAddr,
}

/// The next connection, or `None` once `shutdown` resolves. The permit comes first: at the
/// cap, the next connection is not even accepted. A failed accept (out of descriptors, a
/// connection reset before accept) is logged and retried.
async fn accept<F: Future<Output = ()>>(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    mut shutdown: Pin<&mut F>,
) -> Option<Accepted> {
    let permit = tokio::select! {
        permit = permits.clone().acquire_owned() => permit.ok()?,
        () = shutdown.as_mut() => return None,
    };
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => return Some(Accepted { permit, stream, peer }),
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            () = shutdown.as_mut() => return None,
        }
    }
}

/// Serves one connection on its own task, watched by `graceful`, with the peer's address in
/// every request's extensions.
fn spawn_connection(
    http: &hyper::server::conn::http1::Builder,
    graceful: &GracefulShutdown,
    router: &Router,
    accepted: Accepted,
) {
    let Accepted {
        permit,
        stream,
        peer,
    } = accepted;
    let _ = stream.set_nodelay(true);
    let service = router
        .clone()
        .map_request(move |mut request: axum::http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.map(Body::new)
        })
        .map_err(|never: Infallible| match never {});
    let connection = http.serve_connection(
        TokioIo::new(Lingering::new(stream)),
        TowerToHyperService::new(service),
    );
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, %peer, "connection ended with an error");
        }
        drop(permit);
    });
}

/// How much of a request the server still reads, and discards, after it has answered, before
/// it closes the connection (see [`Lingering`]).
pub(crate) const LINGER_BYTES: u64 = 8 << 20;
/// How long the server keeps reading, and discarding, after it has answered, at most.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);

/// A connection that closes gracefully. Closing a socket whose receive buffer holds data the
/// server never read (a body refused with 413 from its `Content-Length`, the rest of a head
/// refused with 431) makes the kernel answer with a reset, which can fail the client's write
/// before it reads the answer, or discard the answer itself. So on shutdown the write side is
/// closed first (the client sees the whole answer and its end), then what the client still
/// sends is read and discarded until it closes too, [`LINGER_BYTES`] have been read or
/// [`LINGER_TIME`] has passed; only then is the socket closed.
struct Lingering {
    stream: TcpStream,
    closing: Option<Closing>,
}

/// The state of a lingering close.
struct Closing {
    discarded: u64,
    deadline: Pin<Box<Sleep>>,
    done: bool,
}

impl Lingering {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            closing: None,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closing.is_none() {
            ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
            this.closing = Some(Closing {
                discarded: 0,
                deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
                done: false,
            });
        }
        let Some(closing) = this.closing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 8192];
        while !closing.done {
            if closing.deadline.as_mut().poll(cx).is_ready() || closing.discarded >= LINGER_BYTES {
                closing.done = true;
                break;
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut this.stream).poll_read(cx, &mut buf)) {
                Ok(()) if !buf.filled().is_empty() => {
                    closing.discarded = closing
                        .discarded
                        .saturating_add(u64::try_from(buf.filled().len()).unwrap_or(u64::MAX));
                }
                // The client closed its side (or the connection failed): nothing left to wait for.
                _ => closing.done = true,
            }
        }
        Poll::Ready(Ok(()))
    }
}

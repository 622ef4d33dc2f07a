//! The HTTP listener: busbar's own accept loop serving the axum router over
//! hyper's HTTP/1.1, so that no client can hold a connection, or the process's
//! file descriptors, for free.
//!
//! - At most `server.max_connections` connections are open at once. One more
//!   gets a short 503 written without waiting and is closed, so the
//!   connections already admitted keep being served.
//! - A connection must deliver a complete request head within
//!   `server.header_read_timeout_ms` of being opened, or of its first byte
//!   after a previous response (a client trickling headers is cut off).
//! - A request's body must arrive whole within `server.body_read_timeout_ms`
//!   of its head; otherwise the answer is 408 and the connection is closed.
//! - A kept-alive connection with no request in progress is closed after
//!   `server.idle_timeout_ms` without a byte from the client.
//! - At shutdown, idle connections close at once and busy ones after their
//!   response; whatever is still open after [`SHUTDOWN_GRACE`] (a `tail`
//!   stream) is closed.

use super::SHUTDOWN_GRACE;
use super::errors::ApiError;
use crate::config::ServerConfig;
use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use axum::response::IntoResponse;
use http_body::Frame;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::time::Instant;

/// File descriptors kept back from connections for the store, the plugins
/// watcher, outbound HTTP and the like.
const RESERVED_FDS: u64 = 256;

/// Written to a connection over the bound. The client has not been read, so
/// the answer goes out before its request: most clients still show it.
fn busy_response() -> &'static [u8] {
    static BUSY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let body = r#"{"error":{"code":"TooManyConnections","message":"busbar has server.max_connections open; retry later, or raise the limit"}}"#;
        format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
             retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    });
    &BUSY
}

/// How often at most a refused connection or a failed accept is logged
/// (a flood would otherwise turn into a flood of log lines).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The listener's bounds, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Bounds {
    pub fn from_config(server: &ServerConfig) -> Bounds {
        Bounds {
            max_connections: server.max_connections,
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(server.body_read_timeout_ms),
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
        }
    }
}

/// Raises the soft limit on open files to the hard limit, so the connection
/// bound, not the default soft limit (often 1024), is what stops a flood.
/// Returns the limit before and after.
#[cfg(unix)]
pub fn raise_fd_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = nofile()?;
    let before = widen(lim.rlim_cur);
    if lim.rlim_cur >= lim.rlim_max {
        return Ok((before, before));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((before, widen(lim.rlim_cur)))
}

#[cfg(not(unix))]
pub fn raise_fd_limit() -> std::io::Result<(u64, u64)> {
    Ok((0, 0))
}

#[cfg(unix)]
fn nofile() -> std::io::Result<libc::rlimit> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(lim)
}

/// `rlim_t` is 32 bits wide on some targets.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)]
fn widen(n: libc::rlim_t) -> u64 {
    n as u64
}

/// The current soft limit on open files, if there is one.
fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    if let Ok(lim) = nofile()
        && lim.rlim_cur != libc::RLIM_INFINITY
    {
        return Some(widen(lim.rlim_cur));
    }
    None
}

/// `max_connections`, lowered so that admitted connections cannot use up the
/// file descriptors the rest of the node needs.
fn admissible(configured: usize) -> usize {
    let capped = configured.min(u32::MAX as usize);
    match fd_limit() {
        Some(limit) if (capped as u64).saturating_add(RESERVED_FDS) > limit => {
            let allowed = limit.saturating_sub(RESERVED_FDS).max(1) as usize;
            tracing::warn!(
                configured,
                allowed,
                fd_limit = limit,
                "server.max_connections is more than the open-file limit allows; \
                 raise the hard limit (ulimit -Hn) to admit more"
            );
            allowed
        }
        _ => capped,
    }
}

/// Serves `app` on `listener` within `bounds` until `stopped` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    bounds: Bounds,
    mut stopped: watch::Receiver<bool>,
) {
    let max = admissible(bounds.max_connections);
    let permits = Arc::new(Semaphore::new(max));
    // Turned true when the grace period is over: connections still open close.
    let (force, forced) = watch::channel(false);
    let mut last_refusal_log: Option<Instant> = None;
    let mut last_error_log: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stopped.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, mostly: retrying at once would spin.
                if due(&mut last_error_log) {
                    tracing::warn!(error = %e, "cannot accept HTTP connections");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            ::metrics::counter!("busbar_http_connections_refused_total").increment(1);
            if due(&mut last_refusal_log) {
                tracing::warn!(
                    max_connections = max,
                    "refusing HTTP connections: server.max_connections are open"
                );
            }
            // Best effort and never waiting: the point is to let go quickly.
            let _ = stream.try_write(busy_response());
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let stopped = stopped.clone();
        let forced = forced.clone();
        tokio::spawn(async move {
            ::metrics::gauge!("busbar_http_connections").increment(1.0);
            serve_connection(stream, app, bounds, stopped, forced).await;
            ::metrics::gauge!("busbar_http_connections").decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    // Every permit back means every connection has closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(SHUTDOWN_GRACE, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "closing connections still open {} s after shutdown began",
            SHUTDOWN_GRACE.as_secs()
        );
        let _ = force.send(true);
    }
}

fn due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

/// One connection, from accept to close.
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    bounds: Bounds,
    mut stopped: watch::Receiver<bool>,
    mut forced: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            handle(app.clone(), activity.clone(), bounds.body_read_timeout, req)
        })
    };
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            // Dropping the connection closes the socket: nothing is in progress.
            _ = activity.expired(&bounds), if !stopping => return,
            _ = stopped.wait_for(|s| *s), if !stopping => {
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
            _ = forced.wait_for(|f| *f) => return,
        }
    }
}

/// One request through the router, its body bounded in time, its response
/// tracked so the connection knows when it is idle again.
async fn handle(
    mut app: Router,
    activity: Arc<Activity>,
    body_timeout: Duration,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let in_flight = InFlight::start(activity);
    let timed_out = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| {
        if body.is_end_stream() {
            Body::new(body)
        } else {
            Body::new(TimedBody {
                inner: body,
                deadline: Instant::now() + body_timeout,
                sleep: None,
                limit: body_timeout,
                timed_out: timed_out.clone(),
            })
        }
    });
    let response = match tower_service::Service::call(&mut app, req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    // Whatever the handler made of the failed read, the cause was the timeout.
    let response = if timed_out.load(Ordering::Acquire) {
        body_timeout_response(body_timeout)
    } else {
        response
    };
    Ok(response.map(|body| {
        Body::new(Tracked {
            inner: body,
            _in_flight: in_flight,
        })
    }))
}

fn body_timeout_response(limit: Duration) -> Response<Body> {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "RequestTimeout",
        format!(
            "the request body did not arrive within server.body_read_timeout_ms ({} ms)",
            limit.as_millis()
        ),
    )
    .into_response();
    // The rest of the body may still be on its way: this connection is done.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// What one connection is doing, as the idle and header timeouts need it.
struct Activity {
    start: Instant,
    /// Requests whose response has not been sent whole.
    in_flight: AtomicUsize,
    /// When the current wait began, in ms since `start`: for the first
    /// request, the accept; then the end of the last response or the first
    /// byte of the next request.
    since_ms: AtomicU64,
    /// Bytes of a request head have arrived (or the connection is new): the
    /// header timeout applies, not the idle timeout.
    reading_head: AtomicBool,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            since_ms: AtomicU64::new(0),
            reading_head: AtomicBool::new(true),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Bytes came in: when idle, a request head has begun.
    fn on_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0
            && !self.reading_head.swap(true, Ordering::AcqRel)
        {
            self.since_ms.store(self.now_ms(), Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// When the connection is to be closed, or `None` while a request is in progress.
    fn deadline(&self, bounds: &Bounds) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let wait = if self.reading_head.load(Ordering::Acquire) {
            bounds.header_read_timeout
        } else {
            bounds.idle_timeout
        };
        Some(self.start + Duration::from_millis(self.since_ms.load(Ordering::Acquire)) + wait)
    }

    /// Completes once the connection has been idle, or reading a head, too long.
    async fn expired(&self, bounds: &Bounds) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so no change is missed.
            changed.as_mut().enable();
            match self.deadline(bounds) {
                None => changed.await,
                Some(at) => tokio::select! {
                    _ = changed => {}
                    _ = tokio::time::sleep_until(at) => {
                        if self.deadline(bounds).is_some_and(|d| d <= Instant::now()) {
                            return;
                        }
                    }
                },
            }
        }
    }
}

/// Held from a request's head until its response has been sent or dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.reading_head.store(false, Ordering::Release);
        activity.changed.notify_one();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.since_ms.store(a.now_ms(), Ordering::Release);
        a.reading_head.store(false, Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
        a.changed.notify_one();
    }
}

/// The socket, telling [`Activity`] when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.on_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A request body that fails once its deadline passes before its end.
struct TimedBody {
    inner: Incoming,
    deadline: Instant,
    /// Made at the first wait only: most bodies arrive with their head.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    limit: Duration,
    timed_out: Arc<AtomicBool>,
}

#[derive(Debug)]
struct BodyTimedOut(Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} ms",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted as in progress until it
/// has been sent (or dropped with the connection).
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

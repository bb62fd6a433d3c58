//! Accepting connections and watching each one: the connection cap, the header, idle and
//! write time-outs, TLS, and a graceful end.
//!
//! hyper's own header timeout also runs while a kept-alive connection waits for its next
//! request, so it cannot tell a slow client from an idle one. Each connection here has a
//! watchdog instead, fed by its I/O and its requests: headers that started arriving must be
//! complete within `header_timeout`, an idle connection may wait `idle_timeout`, and a
//! response whose writes stay blocked (a client that does not read) is cut after
//! `write_timeout`. Whatever the client does, its connection ends within those bounds.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::state::AppState;

/// What a connection's watchdog knows, updated by its I/O and its requests. Times are
/// milliseconds since the server started; 0 means "not set".
#[derive(Debug)]
pub(crate) struct Activity {
    epoch: Instant,
    /// Requests whose response is not finished.
    in_flight: AtomicUsize,
    /// When the first byte of the next request's head arrived.
    head_started: AtomicU64,
    /// When the connection last became idle.
    idle_since: AtomicU64,
    /// When a write started to wait for the client to read.
    write_blocked_since: AtomicU64,
    /// Requests served on the connection so far.
    served: AtomicU64,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let a = Activity {
            epoch,
            in_flight: AtomicUsize::new(0),
            head_started: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            write_blocked_since: AtomicU64::new(0),
            served: AtomicU64::new(0),
        };
        a.idle_since.store(a.now(), Relaxed);
        a
    }

    fn now(&self) -> u64 {
        // Never 0, which means "not set".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A request arrived: its head is complete.
    pub(crate) fn request_started(&self) {
        self.served.fetch_add(1, Relaxed);
        self.in_flight.fetch_add(1, Relaxed);
        self.head_started.store(0, Relaxed);
    }

    /// A response is finished (or abandoned).
    pub(crate) fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Relaxed) == 1 {
            self.idle_since.store(self.now(), Relaxed);
        }
    }

    fn read_bytes(&self) {
        if self.in_flight.load(Relaxed) == 0 && self.head_started.load(Relaxed) == 0 {
            self.head_started.store(self.now(), Relaxed);
        }
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &crate::Limits) -> Option<&'static str> {
        let now = self.now();
        let older = |since: u64, limit: Duration| {
            since != 0 && now.saturating_sub(since) > limit.as_millis() as u64
        };
        if older(self.write_blocked_since.load(Relaxed), limits.write_timeout) {
            return Some("the client did not read the response");
        }
        if self.in_flight.load(Relaxed) > 0 {
            // The handler bounds the body read itself (408).
            return None;
        }
        let head = self.head_started.load(Relaxed);
        if head != 0 {
            return older(head, limits.header_timeout).then_some("headers too slow");
        }
        // A connection that has not sent its first request yet holds a slot for nothing:
        // it gets the header time-out, not the (longer) keep-alive idle time.
        if self.served.load(Relaxed) == 0 {
            return older(self.idle_since.load(Relaxed), limits.header_timeout)
                .then_some("headers too slow");
        }
        older(self.idle_since.load(Relaxed), limits.idle_timeout).then_some("idle")
    }
}

/// A stream that reports its reads and blocked writes to the watchdog.
pub(crate) struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read_bytes();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    fn track<T>(&self, r: Poll<T>) -> Poll<T> {
        let blocked = &self.activity.write_blocked_since;
        match r {
            Poll::Pending => {
                if blocked.load(Relaxed) == 0 {
                    blocked.store(self.activity.now(), Relaxed);
                }
            }
            Poll::Ready(_) => blocked.store(0, Relaxed),
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.track(r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.track(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.track(r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts connections until `stop` turns true, then waits (up to the shutdown time-out)
/// for the connections to finish their requests.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    state: Arc<AppState>,
    tls: Option<crate::tls::Tls>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = state.config.limits.clone();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let epoch = Instant::now();
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.changed() => break,
            r = listener.accept() => r,
        };
        let (stream, _peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ECONNABORTED: the listener is fine; wait a moment
                // (so that a descriptor shortage does not spin) and go on accepting.
                state.counters.accept_errors.fetch_add(1, Relaxed);
                if last_accept_error.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!("accept failed (accepting goes on): {e}");
                    last_accept_error = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            state.counters.connections_refused.fetch_add(1, Relaxed);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let state = Arc::clone(&state);
        let tls = tls.clone();
        let stop = stop.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            state.counters.connections_open.fetch_add(1, Relaxed);
            serve_connection(stream, app, &state, tls, stop, &limits, epoch).await;
            state.counters.connections_open.fetch_sub(1, Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    // Every connection holds a permit: they are all gone when every permit is back.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(limits.shutdown_timeout, permits.acquire_many(all)).await;
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    state: &Arc<AppState>,
    tls: Option<crate::tls::Tls>,
    stop: watch::Receiver<bool>,
    limits: &crate::Limits,
    epoch: Instant,
) {
    let activity = Arc::new(Activity::new(epoch));
    match tls {
        None => {
            let io = Watched { inner: stream, activity: Arc::clone(&activity) };
            run_http(io, app, state, activity, stop, limits).await;
        }
        Some(tls) => {
            let handshake =
                tokio::time::timeout(limits.header_timeout, tls.acceptor().accept(stream)).await;
            match handshake {
                Ok(Ok(stream)) => {
                    let io = Watched { inner: stream, activity: Arc::clone(&activity) };
                    run_http(io, app, state, activity, stop, limits).await;
                }
                Ok(Err(e)) => {
                    state.counters.tls_handshake_errors.fetch_add(1, Relaxed);
                    tracing::debug!("TLS handshake failed: {e}");
                }
                Err(_) => {
                    state.counters.timeouts_header.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

async fn run_http<S>(
    io: Watched<S>,
    app: Router,
    state: &Arc<AppState>,
    activity: Arc<Activity>,
    mut stop: watch::Receiver<bool>,
    limits: &crate::Limits,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            activity.request_started();
            let guard = RequestGuard(Arc::clone(&activity));
            let response = app.clone().oneshot(request.map(axum::body::Body::new));
            async move {
                let response = response.await?;
                // The guard lives as long as the response body: a streamed answer counts as
                // in flight until its last byte is written (or the connection drops).
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| GuardedBody { inner: body, _guard: guard }),
                )
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(limits.max_header_bytes)
        .max_headers(100)
        .keep_alive(true)
        // The watchdog below bounds header time; hyper's own timer is not used.
        .header_read_timeout(None);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let tick = (limits.header_timeout.min(limits.idle_timeout).min(limits.write_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::trace!("connection ended: {e}");
                }
                return;
            }
            _ = stop.changed(), if !stopping => {
                // Finish the request in flight, then close; idle connections close now.
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = ticker.tick() => {
                if let Some(why) = activity.expired(limits) {
                    match why {
                        "headers too slow" => state.counters.timeouts_header.fetch_add(1, Relaxed),
                        "idle" => state.counters.timeouts_idle.fetch_add(1, Relaxed),
                        _ => state.counters.timeouts_write.fetch_add(1, Relaxed),
                    };
                    tracing::debug!("closing a connection: {why}");
                    return;
                }
            }
        }
    }
}

/// Held by a request until its response is finished or dropped; tells the watchdog.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that holds its request's guard.
struct GuardedBody {
    inner: axum::body::Body,
    _guard: RequestGuard,
}

impl http_body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

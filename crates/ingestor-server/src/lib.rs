//! The network service of `ingestor` as a library: HTTP writes in Influx line protocol,
//! `/metrics` in the Prometheus text format, a Prometheus-shaped query API, health and
//! readiness, and StatsD/DogStatsD over UDP, in front of an [`ingestor::Ingestor`]. The
//! `ingestor serve` command is this crate with flags; embed it to serve from your own process.
//!
//! ```no_run
//! use ingestor::{Config, Ingestor};
//! use ingestor_server::{Server, ServerConfig};
//!
//! let mut config = ServerConfig::default(); // 127.0.0.1:8428, every limit at its default
//! config.http = "127.0.0.1:0".parse()?;
//! let server = Server::start(config, || {
//!     Ingestor::open("./data", Config::default()).map(|(db, _report)| db).map_err(|e| e.to_string())
//! })?;
//! println!("listening on {}", server.http_addr());
//! let stop = server.stopper();
//! std::thread::spawn(move || {
//!     std::thread::sleep(std::time::Duration::from_secs(1));
//!     stop.stop(); // what SIGTERM does in `ingestor serve`
//! });
//! server.wait()?; // finishes requests in flight, then closes the ingestor
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - A write is answered 204 only once its batch reached the durability level the ingestor
//!   is configured for; a refused body leaves nothing of itself behind.
//! - Status codes tell a sender what to do: 4xx means the data is bad (do not retry), 503
//!   with `Retry-After` means retry later (recovering, over the parse-memory budget, a
//!   poisoned log, a failing disk), 500 only for a fault of the server.
//! - Every resource a client can hold is bounded ([`Limits`]): connections, header bytes and
//!   time, body bytes before and after gzip and body time, idle time, memory for bodies being
//!   parsed, query results. No client can stop the server from accepting or answering
//!   `/-/healthy` and `/-/ready`.
//! - Engine calls (ingest, queries, rendering `/metrics`) run on blocking threads, never on
//!   the async workers; `/metrics` renders from a frozen copy-on-write view and streams.
//! - Metric names starting with `ingestor_` belong to the server's own metrics: writes that
//!   would create one are refused, so `/metrics` always parses.
#![forbid(unsafe_code)]
// Handlers return `Result<_, Response>`: the error is the answer to send, as axum's own
// extractors do; boxing it would buy nothing on a path that allocates a body anyway.
#![allow(clippy::result_large_err)]

mod auth;
mod body;
mod config;
mod conn;
mod exposition;
mod otlp;
mod pool;
mod query;
pub mod query_api;
mod remote_write;
mod routes;
mod rw_cache;
mod state;
mod statsd;
mod tls;
mod write;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ingestor::Ingestor;
use tokio::sync::watch;

pub use config::{AuthConfig, Credentials, ForwardSetup, Limits, ServerConfig, TlsFiles};

use crate::state::AppState;

/// How often the TLS files are checked for changes.
const TLS_POLL: Duration = Duration::from_secs(5);

/// Stops a running [`Server`]; clone it into a signal handler.
#[derive(Debug, Clone)]
pub struct Stopper(Arc<watch::Sender<bool>>);

impl Stopper {
    /// Asks the server to stop: it stops accepting, finishes the requests in flight (up to
    /// [`Limits::shutdown_timeout`]) and [`Server::wait`] returns once the ingestor is closed.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// A running server: HTTP (and StatsD) on their own runtime, the ingestor opening in the
/// background (`/-/ready` answers 503 until it is open).
pub struct Server {
    runtime: tokio::runtime::Runtime,
    state: Arc<AppState>,
    stop: Stopper,
    http_addr: SocketAddr,
    statsd_addr: Option<SocketAddr>,
    accept: tokio::task::JoinHandle<()>,
    statsd: Option<(tokio::task::JoinHandle<()>, std::thread::JoinHandle<()>)>,
    tls_watch: Option<tokio::task::JoinHandle<()>>,
    opener: std::thread::JoinHandle<Result<(), String>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("http_addr", &self.http_addr)
            .field("statsd_addr", &self.statsd_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds the listeners and starts serving at once; `open` runs on its own thread and
    /// gives the ingestor (recovery can take a while: `/-/healthy` answers meanwhile,
    /// `/-/ready` once it is done). If `open` fails, the server stops and [`Server::wait`]
    /// returns its error.
    ///
    /// # Errors
    /// An invalid configuration, an address that cannot be bound, unreadable TLS files.
    pub fn start(
        config: ServerConfig,
        open: impl FnOnce() -> Result<Ingestor, String> + Send + 'static,
    ) -> Result<Server, String> {
        config.validate()?;
        let tls = config.tls.as_ref().map(tls::Tls::new).transpose()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("ingestor-http")
            // Engine calls run on the server's own pool (pool.rs); tokio's blocking threads
            // serve only tokio's own needs.
            .max_blocking_threads(4)
            .thread_keep_alive(Duration::from_secs(2))
            .build()
            .map_err(|e| format!("the async runtime: {e}"))?;
        let http = config.http;
        let _guard = runtime.enter();
        let listener = listen(http).map_err(|e| format!("listen on {http}: {e}"))?;
        let http_addr = listener.local_addr().map_err(|e| format!("listen on {http}: {e}"))?;
        let udp = match config.statsd {
            Some(addr) => {
                let s = std::net::UdpSocket::bind(addr)
                    .map_err(|e| format!("statsd: bind {addr}: {e}"))?;
                s.set_nonblocking(true).map_err(|e| format!("statsd: {e}"))?;
                Some(s)
            }
            None => None,
        };
        warn_if_open(&config, http_addr);
        let state = Arc::new(AppState::new(config));
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop = Stopper(Arc::new(stop_tx));
        let app = routes::router(Arc::clone(&state));
        let tls_watch = tls.clone().map(|t| runtime.spawn(t.watch(TLS_POLL)));
        let accept = runtime.spawn(conn::accept_loop(
            listener,
            app,
            Arc::clone(&state),
            tls,
            stop_rx.clone(),
        ));
        let mut statsd_addr = None;
        let statsd = match udp {
            Some(socket) => {
                let socket =
                    tokio::net::UdpSocket::from_std(socket).map_err(|e| format!("statsd: {e}"))?;
                statsd_addr = socket.local_addr().ok();
                let (tx, rx) = statsd::queue();
                let receiver =
                    runtime.spawn(statsd::receive(socket, Arc::clone(&state), tx, stop_rx));
                let st = Arc::clone(&state);
                let batcher = std::thread::Builder::new()
                    .name("ingestor-statsd".into())
                    .spawn(move || statsd::batcher(&st, &rx))
                    .map_err(|e| format!("statsd: {e}"))?;
                tracing::info!(
                    "statsd on udp://{}",
                    statsd_addr.map_or(String::new(), |a| a.to_string())
                );
                Some((receiver, batcher))
            }
            None => None,
        };
        let opener = {
            let state = Arc::clone(&state);
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("ingestor-open".into())
                .spawn(move || match open() {
                    Ok(db) => {
                        let db = Arc::new(db);
                        if let Some(setup) = &state.config.forward {
                            let fs: Arc<dyn ingestor::Fs> = Arc::new(ingestor::StdFs::new());
                            match ingestor_forward::Forwarder::start(
                                Arc::clone(&db),
                                fs,
                                &setup.dir,
                                setup.config.clone(),
                            ) {
                                Ok(f) => {
                                    let names: Vec<&str> = setup
                                        .config
                                        .destinations
                                        .iter()
                                        .map(|d| d.name.as_str())
                                        .collect();
                                    tracing::info!("forwarding to {}", names.join(", "));
                                    let _ = state.forwarder.set(f);
                                }
                                Err(e) => {
                                    stop.stop();
                                    drop(db);
                                    return Err(e.to_string());
                                }
                            }
                        }
                        tracing::info!("ready");
                        let _ = state.db.set(db);
                        Ok(())
                    }
                    Err(e) => {
                        stop.stop();
                        Err(e)
                    }
                })
                .map_err(|e| format!("the recovery thread: {e}"))?
        };
        drop(_guard);
        tracing::info!(
            "listening on {}://{http_addr}",
            if state.config.tls.is_some() { "https" } else { "http" }
        );
        Ok(Server {
            runtime,
            state,
            stop,
            http_addr,
            statsd_addr,
            accept,
            statsd,
            tls_watch,
            opener,
        })
    }

    /// The HTTP address bound (the port is known here when the configuration asked for 0).
    #[must_use]
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The StatsD address bound, if StatsD is on.
    #[must_use]
    pub fn statsd_addr(&self) -> Option<SocketAddr> {
        self.statsd_addr
    }

    /// A handle that stops the server.
    #[must_use]
    pub fn stopper(&self) -> Stopper {
        self.stop.clone()
    }

    /// The ingestor, once it is open: for reads (and writes) in the embedding process.
    #[must_use]
    pub fn ingestor(&self) -> Option<Arc<Ingestor>> {
        self.state.db.get().cloned()
    }

    /// Whether the ingestor is open and its log usable (what `/-/ready` answers).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.state.db.get().is_some_and(|db| !db.is_poisoned())
    }

    /// Serves until stopped, then stops accepting, finishes requests in flight (bounded by
    /// [`Limits::shutdown_timeout`]) and closes the ingestor (sync, final snapshot).
    ///
    /// # Errors
    /// The ingestor failed to open, or to close cleanly.
    pub fn wait(self) -> Result<(), String> {
        let Server { runtime, state, stop, accept, statsd, tls_watch, opener, .. } = self;
        let mut stopped = stop.0.subscribe();
        runtime.block_on(async {
            let _ = stopped.wait_for(|s| *s).await;
            let _ = accept.await;
        });
        if let Some(t) = tls_watch {
            t.abort();
        }
        if let Some((receiver, batcher)) = statsd {
            let _ = runtime.block_on(receiver);
            let _ = batcher.join();
        }
        let opened = opener.join().map_err(|_| "the recovery thread panicked".to_string())?;
        runtime.shutdown_timeout(state.config.limits.shutdown_timeout);
        // Engine calls still running finish here, within the time-out.
        let drained = state.pool.wait_drained(state.config.limits.shutdown_timeout)
            && state.read_pool.wait_drained(state.config.limits.shutdown_timeout);
        if !drained {
            tracing::warn!("engine calls still running after the shutdown time-out");
        }
        opened?;
        tracing::info!("stopping: syncing and writing a final snapshot");
        let mut state =
            Arc::try_unwrap(state).map_err(|_| "the server is still in use".to_string())?;
        if let Some(f) = state.forwarder.take() {
            // A last flush, then the cursors persisted; the forwarder lets go of the ingestor.
            f.stop();
        }
        if let Some(db) = state.db.into_inner() {
            let db = Arc::try_unwrap(db).map_err(|_| "the ingestor is still in use".to_string())?;
            db.close().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// The listen backlog: connections the kernel completes before they are accepted. The
/// default of `std` (128) drops SYNs in a burst of connections (a reconnect storm, or a
/// crowd of idle clients), which delays the next health probe by a whole SYN retry.
const LISTEN_BACKLOG: u32 = 4_096;

/// Binds `addr` with [`LISTEN_BACKLOG`] (the kernel caps it at `net.core.somaxconn`).
fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// A loud warning when the server is reachable from beyond this machine with no credentials.
fn warn_if_open(config: &ServerConfig, addr: SocketAddr) {
    if addr.ip().is_loopback() {
        return;
    }
    for (who, creds) in [("write", &config.auth.write), ("read", &config.auth.read)] {
        if creds.is_none() {
            tracing::warn!(
                "listening on {addr}, beyond loopback, and anyone who can reach it may {who}: \
                 set {who} credentials (bearer token or basic auth files)"
            );
        }
    }
    if config.tls.is_none() {
        tracing::warn!(
            "listening on {addr}, beyond loopback, without TLS: credentials travel in clear"
        );
    }
}

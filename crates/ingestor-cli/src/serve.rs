//! `ingestor serve`: the flags of `ingestor-server`'s configuration, signals, and the file
//! descriptor limit.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use ingestor::Config;
use ingestor_forward::{BudgetPolicy, Destination, ForwardConfig};
use ingestor_server::{
    AuthConfig, Credentials, ForwardSetup, Limits, Server, ServerConfig, TlsFiles,
};

use crate::args::{Bytes, parse_duration};

/// The server's flags; every default is the library's.
#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// Read flags from this TOML file first, one key per long flag (`body-limit = "16MiB"`,
    /// `forward = ["vm=http://..."]`, `data-dir`); flags on the command line override it,
    /// and any --forward on the command line replaces the file's list. See docs/server.md.
    #[arg(long = "config", value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// The address to listen on (HTTP, or HTTPS with --tls-cert-file).
    #[arg(long, default_value = "127.0.0.1:8428")]
    http: SocketAddr,
    /// Also listen for StatsD/DogStatsD over UDP on this address (conventional port 8125).
    #[arg(long)]
    statsd: Option<SocketAddr>,
    /// Connections open at once; beyond it new connections are closed at once.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Time a client may take to send a request's headers (and a TLS handshake).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    header_timeout: std::time::Duration,
    /// Time a client may take to send a request body; a slower one gets 408.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    body_timeout: std::time::Duration,
    /// Time a response may wait for a client that does not read it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    write_timeout: std::time::Duration,
    /// Time a kept-alive connection may sit idle between requests.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    idle_timeout: std::time::Duration,
    /// The most bytes of request line and headers (at least 8192); more gets 431.
    #[arg(long, default_value = "64KiB")]
    max_header_bytes: Bytes,
    /// The largest request body on the wire; more gets 413.
    #[arg(long, default_value = "16MiB")]
    body_limit: Bytes,
    /// The largest request body after gzip; more gets 413.
    #[arg(long, default_value = "64MiB")]
    decoded_body_limit: Bytes,
    /// Memory for request bodies being read and parsed at once (wire bytes plus 4x decoded
    /// bytes); a request over it gets 503 with Retry-After.
    #[arg(long, default_value = "256MiB")]
    parse_memory: Bytes,
    /// The most series a query may return; more gets 422.
    #[arg(long, default_value_t = Limits::default().query_max_series)]
    query_max_series: usize,
    /// The most match[] selectors in one /api/v1/series request; more gets 400.
    #[arg(long, default_value_t = Limits::default().query_max_matchers)]
    query_max_matchers: usize,
    /// Threads for writes (parsing and ingesting bodies), off the async workers.
    #[arg(long, default_value_t = Limits::default().blocking_threads)]
    blocking_threads: usize,
    /// Threads for reads (queries, /metrics), at a lower CPU priority than writes.
    #[arg(long, default_value_t = Limits::default().read_threads)]
    read_threads: usize,
    /// Time a clean shutdown waits for requests in flight.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    shutdown_timeout: std::time::Duration,
    /// TLS certificate chain (PEM); with --tls-key-file, serve HTTPS. Reloaded on SIGHUP or
    /// when the file changes.
    #[arg(long, requires = "tls_key_file")]
    tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert_file")]
    tls_key_file: Option<PathBuf>,
    /// Bearer tokens that may write, one per line.
    #[arg(long)]
    write_token_file: Option<PathBuf>,
    /// user:password lines that may write (HTTP basic auth).
    #[arg(long)]
    write_basic_auth_file: Option<PathBuf>,
    /// Bearer tokens that may read (/metrics, /api/v1/...), one per line.
    #[arg(long)]
    read_token_file: Option<PathBuf>,
    /// user:password lines that may read (HTTP basic auth).
    #[arg(long)]
    read_basic_auth_file: Option<PathBuf>,
    /// Forward to a remote-write receiver, NAME=URL (repeatable), for example
    /// vm=http://127.0.0.1:8428/api/v1/write. Changed series go through a durable outbox
    /// under DATA_DIR/outbox.
    #[arg(long = "forward", value_name = "NAME=URL")]
    forward: Vec<Destination>,
    /// Forward to a remote-write receiver with remote write 2.0, NAME=URL (repeatable).
    #[arg(long = "forward-v2", value_name = "NAME=URL")]
    forward_v2: Vec<Destination>,
    /// How often the series changed since the last flush are queued for forwarding.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    forward_interval: std::time::Duration,
    /// The most samples in one forwarded request.
    #[arg(long, default_value_t = ForwardConfig::default().max_samples_per_request)]
    forward_max_samples: usize,
    /// Outbox bytes a destination may have waiting before --forward-budget-policy applies.
    #[arg(long, default_value = "1GiB")]
    forward_budget: Bytes,
    /// At the budget: block (writes answered 503 until the backlog shrinks) or drop_oldest
    /// (the destination skips its oldest requests, counted).
    #[arg(long, default_value = "block")]
    forward_budget_policy: BudgetPolicy,
    /// First retry delay after a 5xx, 429 or network error (doubling, with jitter).
    #[arg(long, default_value = "30ms", value_parser = parse_duration)]
    forward_backoff_min: std::time::Duration,
    /// Longest retry delay (a receiver's Retry-After can ask for longer).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    forward_backoff_max: std::time::Duration,
    /// Drop requests answered 429 instead of retrying them.
    #[arg(long)]
    forward_no_retry_429: bool,
    /// Time-out of one forwarded request.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    forward_timeout: std::time::Duration,
    /// Senders per destination (1 to 256), each with its own cursor: a series always goes
    /// through the same one (by its key's hash), so its samples stay in order.
    #[arg(long, default_value_t = ForwardConfig::default().shards)]
    forward_shards: usize,
}

fn credentials(token: Option<&Path>, basic: Option<&Path>) -> Result<Option<Credentials>, String> {
    if token.is_none() && basic.is_none() {
        return Ok(None);
    }
    let mut c = Credentials::default();
    if let Some(p) = token {
        c.add_token_file(p)?;
    }
    if let Some(p) = basic {
        c.add_basic_file(p)?;
    }
    Ok(Some(c))
}

impl ServeArgs {
    /// The forwarding these flags describe, with its outbox under `data_dir`; none without
    /// a `--forward`.
    fn forward(&self, data_dir: &Path) -> Result<Option<ForwardSetup>, String> {
        if self.forward.is_empty() && self.forward_v2.is_empty() {
            return Ok(None);
        }
        let mut c = ForwardConfig::default();
        c.destinations = self.forward.clone();
        c.destinations.extend(self.forward_v2.iter().cloned().map(Destination::remote_write_v2));
        c.flush_interval = self.forward_interval;
        c.max_samples_per_request = self.forward_max_samples;
        c.budget_bytes = self.forward_budget.0 as u64;
        c.budget_policy = self.forward_budget_policy;
        c.backoff_min = self.forward_backoff_min;
        c.backoff_max = self.forward_backoff_max;
        c.retry_429 = !self.forward_no_retry_429;
        c.request_timeout = self.forward_timeout;
        c.shards = self.forward_shards;
        c.validate().map_err(|e| e.to_string())?;
        Ok(Some(ForwardSetup { dir: data_dir.join("outbox"), config: c }))
    }

    /// The server configuration these flags describe.
    pub(crate) fn config(&self, data_dir: &Path) -> Result<ServerConfig, String> {
        let mut config = ServerConfig::default();
        config.http = self.http;
        config.statsd = self.statsd;
        let l = &mut config.limits;
        l.max_connections = self.max_connections;
        l.header_timeout = self.header_timeout;
        l.body_timeout = self.body_timeout;
        l.write_timeout = self.write_timeout;
        l.idle_timeout = self.idle_timeout;
        l.max_header_bytes = self.max_header_bytes.0;
        l.max_body_bytes = self.body_limit.0;
        l.max_decoded_body_bytes = self.decoded_body_limit.0;
        l.parse_memory_bytes = self.parse_memory.0;
        l.query_max_series = self.query_max_series;
        l.query_max_matchers = self.query_max_matchers;
        l.blocking_threads = self.blocking_threads;
        l.read_threads = self.read_threads;
        l.shutdown_timeout = self.shutdown_timeout;
        config.tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: cert.clone(), key: key.clone() }),
            _ => None,
        };
        let mut auth = AuthConfig::default();
        auth.write =
            credentials(self.write_token_file.as_deref(), self.write_basic_auth_file.as_deref())?;
        auth.read =
            credentials(self.read_token_file.as_deref(), self.read_basic_auth_file.as_deref())?;
        config.auth = auth;
        config.forward = self.forward(data_dir)?;
        config.validate()?;
        Ok(config)
    }
}

/// Raises the soft limit on open files to the hard limit, so that the connection limit, not
/// the descriptor limit, is what bounds clients.
fn raise_fd_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), hard) = (limit.current, limit.maximum) {
        let wanted = hard.unwrap_or(u64::MAX).min(1 << 20);
        if wanted > current {
            limit.current = Some(wanted);
            if setrlimit(Resource::Nofile, limit).is_err() {
                tracing::debug!("could not raise the open-file limit above {current}");
            }
        }
        let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        if now < max_connections as u64 + 64 {
            tracing::warn!(
                "the open-file limit ({now}) is below --max-connections ({max_connections}) plus \
                 the engine's files: accepts will fail (and be retried) before the limit is reached"
            );
        }
    }
}

/// Runs the server until SIGINT or SIGTERM, then closes the ingestor cleanly.
pub(crate) fn serve(data_dir: &Path, args: &ServeArgs, engine: Config) -> Result<(), String> {
    let config = args.config(data_dir)?;
    raise_fd_limit(config.limits.max_connections);
    let dir = data_dir.to_path_buf();
    if let Some(file) = &args.config_file {
        tracing::info!("flags from {}", file.display());
    }
    tracing::info!("data in {}", dir.display());
    let server =
        Server::start(config, move || crate::progress::open(&dir, engine).map(|(db, _)| db))?;
    let stopper = server.stopper();
    ctrlc::set_handler(move || stopper.stop()).map_err(|e| format!("signal handler: {e}"))?;
    server.wait()
}

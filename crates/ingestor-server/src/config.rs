//! Everything a client can hold has a limit, and every limit lives here with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the server listens and what it allows a client. Every field documents its default;
/// [`ServerConfig::validate`] checks them all.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The HTTP (or HTTPS, with [`ServerConfig::tls`]) address. Default: `127.0.0.1:8428`.
    pub http: SocketAddr,
    /// The StatsD/DogStatsD UDP address, if any. Default: none.
    pub statsd: Option<SocketAddr>,
    /// Limits on connections, requests and queries.
    pub limits: Limits,
    /// TLS certificate and key files, if HTTPS. Default: none (plain HTTP).
    pub tls: Option<TlsFiles>,
    /// Who may write and who may read. Default: anyone (fit for loopback only).
    pub auth: AuthConfig,
    /// StatsD packets are coalesced into one ingest of at most this many updates...
    /// Default: 10,000.
    pub statsd_batch_updates: usize,
    /// ... or of what arrived within this time after the first. Default: 10 ms.
    pub statsd_batch_delay: Duration,
    /// Line-protocol series remembered by their text, so that a body of known series is
    /// parsed without building keys and ingested by handle (about 250 bytes each, in each of
    /// the server's caches: one per core, at least 2, at most 8; a cache is emptied when
    /// full). Default: 262,144.
    pub line_cache_series: usize,
    /// Forwarding to remote-write receivers through a durable outbox, if any. Default: none.
    pub forward: Option<ForwardSetup>,
}

/// Where forwarding keeps its outbox and how it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardSetup {
    /// The outbox directory (`outbox/` in the data directory, by `ingestor serve`).
    pub dir: std::path::PathBuf,
    /// Destinations, flush interval, retries, budget.
    pub config: ingestor_forward::ForwardConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http: SocketAddr::from(([127, 0, 0, 1], 8428)),
            statsd: None,
            limits: Limits::default(),
            tls: None,
            auth: AuthConfig::default(),
            statsd_batch_updates: 10_000,
            statsd_batch_delay: Duration::from_millis(10),
            line_cache_series: 262_144,
            forward: None,
        }
    }
}

/// The resources a client can hold, each bounded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Limits {
    /// Connections open at once; a connection beyond it is closed as soon as it is
    /// accepted (accepting goes on). Default: 4,096.
    pub max_connections: usize,
    /// The longest a client may take to send a request's headers, counted from its first
    /// byte; also the longest a TLS handshake may take. Default: 10 s.
    pub header_timeout: Duration,
    /// The longest a client may take to send a request's body; a slower one gets 408.
    /// Default: 30 s.
    pub body_timeout: Duration,
    /// The longest a response may wait for a client that does not read it (a stalled write);
    /// the connection is closed after it. Default: 30 s.
    pub write_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests. Default: 60 s.
    pub idle_timeout: Duration,
    /// The most bytes of request line and headers; more gets 431. Default: 64 KiB.
    pub max_header_bytes: usize,
    /// The largest request body on the wire; more gets 413. Default: 16 MiB.
    pub max_body_bytes: usize,
    /// The largest request body after decompression (gzip); more gets 413, cut while
    /// decompressing. Default: 64 MiB.
    pub max_decoded_body_bytes: usize,
    /// The memory request bodies being read and parsed may take at once, counted as each
    /// body's wire bytes plus four times its decoded bytes (parsed updates take about that);
    /// a request that would go over it gets 503 with `Retry-After`. Default: 256 MiB.
    pub parse_memory_bytes: usize,
    /// The most series a query (`/api/v1/query`, `/api/v1/series`) may return; more gets
    /// 422. Default: 100,000.
    pub query_max_series: usize,
    /// The most `match[]` selectors one `/api/v1/series` request may carry; more gets 400.
    /// Default: 64.
    pub query_max_matchers: usize,
    /// Threads for writes (parsing and ingesting bodies), off the async workers; beyond
    /// them requests queue. Default: 32.
    pub blocking_threads: usize,
    /// Threads for reads (queries, rendering `/metrics`), at a lower CPU priority than
    /// writes; beyond them reads queue. Default: 4.
    pub read_threads: usize,
    /// How long a clean shutdown waits for requests in flight. Default: 10 s.
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4_096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 << 10,
            max_body_bytes: 16 << 20,
            max_decoded_body_bytes: 64 << 20,
            parse_memory_bytes: 256 << 20,
            query_max_series: 100_000,
            query_max_matchers: 64,
            blocking_threads: 32,
            read_threads: 4,
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// A certificate chain and its private key, PEM files, read at start and again on SIGHUP or
/// when either file changes (a failed reload keeps the certificate in use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Who may write (`/api/v2/write`, `/write`) and who may read (`/metrics`, `/api/v1/...`).
/// `/-/healthy` and `/-/ready` are always open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Credentials writes need. Default: none (anyone may write).
    pub write: Option<Credentials>,
    /// Credentials reads need. Default: none (anyone may read).
    pub read: Option<Credentials>,
}

/// What a request must present, read from files so that secrets stay out of argument lists.
#[derive(Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credentials {
    /// Bearer tokens accepted (`Authorization: Bearer <token>`).
    pub bearer_tokens: Vec<String>,
    /// User and password pairs accepted (`Authorization: Basic ...`).
    pub basic: Vec<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        f.debug_struct("Credentials")
            .field("bearer_tokens", &self.bearer_tokens.len())
            .field("basic_users", &self.basic.iter().map(|(u, _)| u).collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// Reads bearer tokens from a file: one per line, blank lines and `#` comments skipped.
    ///
    /// # Errors
    /// The file cannot be read, or holds no token.
    pub fn add_token_file(&mut self, path: &std::path::Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("token file {}: {e}", path.display()))?;
        let before = self.bearer_tokens.len();
        self.bearer_tokens.extend(secret_lines(&text).map(str::to_string));
        if self.bearer_tokens.len() == before {
            return Err(format!("token file {}: holds no token", path.display()));
        }
        Ok(())
    }

    /// Reads `user:password` pairs from a file, one per line, blank lines and `#` comments
    /// skipped.
    ///
    /// # Errors
    /// The file cannot be read, a line has no `:`, or the file holds no pair.
    pub fn add_basic_file(&mut self, path: &std::path::Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("basic auth file {}: {e}", path.display()))?;
        let before = self.basic.len();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, password) = line.split_once(':').ok_or_else(|| {
                format!("basic auth file {} line {}: expected user:password", path.display(), n + 1)
            })?;
            self.basic.push((user.to_string(), password.to_string()));
        }
        if self.basic.len() == before {
            return Err(format!("basic auth file {}: holds no user:password", path.display()));
        }
        Ok(())
    }

    /// Whether nothing is accepted (a configuration error).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bearer_tokens.is_empty() && self.basic.is_empty()
    }
}

fn secret_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'))
}

impl ServerConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// A message naming the first field out of range.
    pub fn validate(&self) -> Result<(), String> {
        let l = &self.limits;
        let positive = [
            ("max_connections", l.max_connections),
            ("max_header_bytes", l.max_header_bytes),
            ("max_body_bytes", l.max_body_bytes),
            ("max_decoded_body_bytes", l.max_decoded_body_bytes),
            ("parse_memory_bytes", l.parse_memory_bytes),
            ("query_max_series", l.query_max_series),
            ("query_max_matchers", l.query_max_matchers),
            ("blocking_threads", l.blocking_threads),
            ("read_threads", l.read_threads),
            ("statsd_batch_updates", self.statsd_batch_updates),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(format!("{field} must be at least 1"));
            }
        }
        if l.max_header_bytes < 8192 {
            return Err(format!(
                "max_header_bytes {} is below the minimum 8192",
                l.max_header_bytes
            ));
        }
        let durations = [
            ("header_timeout", l.header_timeout),
            ("body_timeout", l.body_timeout),
            ("write_timeout", l.write_timeout),
            ("idle_timeout", l.idle_timeout),
        ];
        for (field, value) in durations {
            if value.is_zero() {
                return Err(format!("{field} must be longer than zero"));
            }
        }
        for (who, creds) in [("write", &self.auth.write), ("read", &self.auth.read)] {
            if creds.as_ref().is_some_and(Credentials::is_empty) {
                return Err(format!("{who} auth is on but accepts no credentials"));
            }
        }
        Ok(())
    }
}

//! `ingestor serve`: HTTP (line-protocol writes, `/metrics`, a Prometheus-shaped query API,
//! health and readiness) and optional StatsD over UDP, until SIGINT or SIGTERM.

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ingestor::{Config, Ingestor, Selector};
use serde_json::json;
use tiny_http::{Header, Method, Request, Response};

use crate::line::{Precision, parse_body};
use crate::query_api;

/// What the request handlers share.
struct State {
    db: OnceLock<Arc<Ingestor>>,
    /// Set by SIGINT/SIGTERM (the handler holds only this flag, so that the state can be
    /// taken back for a clean close).
    stopping: Arc<AtomicBool>,
    body_limit: usize,
    bad_requests: AtomicU64,
    statsd_bad_lines: AtomicU64,
    statsd_packets: AtomicU64,
}

fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and values are valid")
}

/// Percent-decodes a query-string component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The values of `name` in a query string.
fn params<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

/// Runs the server until SIGINT or SIGTERM, then closes the ingestor cleanly.
pub(crate) fn serve(
    data_dir: &Path,
    http: &str,
    statsd: Option<&str>,
    config: Config,
    body_limit: usize,
) -> Result<(), String> {
    let server =
        Arc::new(tiny_http::Server::http(http).map_err(|e| format!("listen on {http}: {e}"))?);
    let state = Arc::new(State {
        db: OnceLock::new(),
        stopping: Arc::new(AtomicBool::new(false)),
        body_limit,
        bad_requests: AtomicU64::new(0),
        statsd_bad_lines: AtomicU64::new(0),
        statsd_packets: AtomicU64::new(0),
    });
    {
        // The handler holds only the flag, so that the state can be taken back to close.
        let stopping = Arc::clone(&state.stopping);
        ctrlc::set_handler(move || stopping.store(true, Relaxed))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    tracing::info!("listening on http://{http}, data in {}", data_dir.display());
    // Recovery runs while the server answers: /-/healthy at once, /-/ready once it is done.
    let opener = {
        let state = Arc::clone(&state);
        let dir: PathBuf = data_dir.to_path_buf();
        std::thread::spawn(move || match crate::progress::open(&dir, config) {
            Ok((db, _)) => {
                tracing::info!("ready");
                let _ = state.db.set(Arc::new(db));
                Ok(())
            }
            Err(e) => {
                state.stopping.store(true, Relaxed);
                Err(e)
            }
        })
    };
    let statsd_thread = match statsd {
        Some(addr) => Some(spawn_statsd(addr, Arc::clone(&state))?),
        None => None,
    };
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let server = Arc::clone(&server);
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                while !state.stopping.load(Relaxed) {
                    match server.recv_timeout(Duration::from_millis(200)) {
                        Ok(Some(request)) => handle(&state, request),
                        Ok(None) => {}
                        Err(_) => break,
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    if let Some(t) = statsd_thread {
        let _ = t.join();
    }
    let opened = opener.join().map_err(|_| "the recovery thread panicked".to_string())?;
    opened?;
    tracing::info!("stopping: syncing and writing a final snapshot");
    let state = Arc::try_unwrap(state).map_err(|_| "the server is still in use".to_string())?;
    if let Some(db) = state.db.into_inner() {
        let db = Arc::try_unwrap(db).map_err(|_| "the ingestor is still in use".to_string())?;
        db.close().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn respond(request: Request, response: Response<std::io::Cursor<Vec<u8>>>) {
    // A client that went away is not the server's problem.
    let _ = request.respond(response);
}

fn error(state: &State, request: Request, status: u16, message: &str) {
    state.bad_requests.fetch_add(1, Relaxed);
    tracing::debug!(status, url = request.url(), "{message}");
    let body = json!({ "status": "error", "error": message }).to_string();
    respond(
        request,
        Response::from_string(body)
            .with_status_code(status)
            .with_header(header("Content-Type", "application/json")),
    );
}

fn handle(state: &State, request: Request) {
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let method = request.method().clone();
    match (method, path) {
        (Method::Get, "/-/healthy") => respond(request, Response::from_string("Healthy\n")),
        (Method::Get, "/-/ready") => {
            if state.db.get().is_some() {
                respond(request, Response::from_string("Ready\n"));
            } else {
                respond(
                    request,
                    Response::from_string("Service Unavailable: recovering\n")
                        .with_status_code(503),
                );
            }
        }
        (method, path) => {
            let Some(db) = state.db.get() else {
                return error(
                    state,
                    request,
                    503,
                    "recovering: try again when /-/ready answers 200",
                );
            };
            match (method, path) {
                (Method::Post, "/api/v2/write" | "/write") => write(state, db, request, query),
                (Method::Get, "/metrics") => metrics(state, db, request),
                (Method::Get, "/api/v1/query") => {
                    let selector = params(query, "query").next().unwrap_or_default();
                    vector(state, db, request, &selector);
                }
                (Method::Get, "/api/v1/series") => series(state, db, request, query),
                _ => error(state, request, 404, &format!("no route for {path}")),
            }
        }
    }
}

fn write(state: &State, db: &Ingestor, mut request: Request, query: &str) {
    let precision = params(query, "precision").next().unwrap_or_else(|| "ns".into());
    let Some(precision) = Precision::parse(&precision) else {
        return error(
            state,
            request,
            400,
            &format!("precision {precision:?}: expected ns, us, ms or s"),
        );
    };
    if request.body_length().is_some_and(|n| n > state.body_limit) {
        return error(
            state,
            request,
            413,
            &format!("the body is larger than {} bytes", state.body_limit),
        );
    }
    let gzip = request.headers().iter().any(|h| {
        h.field.equiv("Content-Encoding") && h.value.as_str().eq_ignore_ascii_case("gzip")
    });
    let limit = state.body_limit as u64 + 1;
    let mut body = Vec::new();
    let read = if gzip {
        flate2::read::GzDecoder::new(request.as_reader()).take(limit).read_to_end(&mut body)
    } else {
        request.as_reader().take(limit).read_to_end(&mut body)
    };
    if let Err(e) = read {
        return error(state, request, 400, &format!("reading the body: {e}"));
    }
    if body.len() as u64 >= limit {
        return error(
            state,
            request,
            413,
            &format!("the body is larger than {} bytes", state.body_limit),
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(state, request, 400, "the body is not UTF-8");
    };
    let updates = match parse_body(text, precision, ingestor::system_clock_ms()) {
        Ok(u) => u,
        Err(e) => return error(state, request, 400, &e.to_string()),
    };
    // 204 only once the batch reached the configured level: the ingest returns after that.
    match db.ingest(&updates) {
        Ok(_) => respond(request, Response::from_string("").with_status_code(204)),
        Err(e @ (ingestor::Error::InvalidUpdate { .. } | ingestor::Error::Memstore(_))) => {
            error(state, request, 400, &format!("refused, nothing applied: {e}"));
        }
        Err(e) => error(state, request, 500, &e.to_string()),
    }
}

fn metrics(state: &State, db: &Ingestor, request: Request) {
    let mut out = String::new();
    db.expose(&mut out, None);
    let s = db.stats();
    let mut own = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    own("ingestor_series", "gauge", "Series with state.", s.series as f64);
    own("ingestor_batches_total", "counter", "Batches acknowledged.", s.batches as f64);
    own("ingestor_points_total", "counter", "Points acknowledged.", s.points as f64);
    own(
        "ingestor_rejected_batches_total",
        "counter",
        "Batches refused.",
        s.rejected_batches as f64,
    );
    own("ingestor_wal_appends_total", "counter", "Log appends.", s.wal.appends as f64);
    own(
        "ingestor_wal_bytes_written_total",
        "counter",
        "Bytes appended to the log.",
        s.wal.bytes_written as f64,
    );
    own("ingestor_wal_syncs_total", "counter", "Log syncs.", s.wal.syncs as f64);
    own(
        "ingestor_wal_sync_seconds_total",
        "counter",
        "Time spent in log syncs.",
        s.wal.sync_time_total.as_secs_f64(),
    );
    own("ingestor_wal_segments", "gauge", "Log segment files.", s.wal.segments as f64);
    own(
        "ingestor_snapshots_written_total",
        "counter",
        "Snapshots written since start.",
        s.snapshots_written as f64,
    );
    own(
        "ingestor_open_seconds",
        "gauge",
        "Time the last open (snapshot load and replay) took.",
        s.open_duration.as_secs_f64(),
    );
    own(
        "ingestor_http_bad_requests_total",
        "counter",
        "HTTP requests refused.",
        state.bad_requests.load(Relaxed) as f64,
    );
    own(
        "ingestor_statsd_packets_total",
        "counter",
        "StatsD packets received.",
        state.statsd_packets.load(Relaxed) as f64,
    );
    own(
        "ingestor_statsd_bad_lines_total",
        "counter",
        "StatsD lines refused.",
        state.statsd_bad_lines.load(Relaxed) as f64,
    );
    respond(
        request,
        Response::from_string(out)
            .with_header(header("Content-Type", ingestor::EXPOSITION_CONTENT_TYPE)),
    );
}

/// The samples of one series as the Prometheus HTTP API shows them: counters and gauges one
/// sample; histograms their `_count` and `_sum`.
fn vector(state: &State, db: &Ingestor, request: Request, selector: &str) {
    let selector = match Selector::parse(selector) {
        Ok(s) => s,
        Err(e) => return error(state, request, 400, &e.to_string()),
    };
    let data = query_api::vector_json(&query_api::select(db, &selector));
    let body = json!({ "status": "success", "data": data }).to_string();
    respond(
        request,
        Response::from_string(body).with_header(header("Content-Type", "application/json")),
    );
}

fn series(state: &State, db: &Ingestor, request: Request, query: &str) {
    let mut samples = Vec::new();
    for text in params(query, "match[]") {
        let selector = match Selector::parse(&text) {
            Ok(s) => s,
            Err(e) => return error(state, request, 400, &e.to_string()),
        };
        samples.extend(query_api::select(db, &selector));
    }
    let body = json!({ "status": "success", "data": query_api::series_json(&samples) }).to_string();
    respond(
        request,
        Response::from_string(body).with_header(header("Content-Type", "application/json")),
    );
}

fn spawn_statsd(addr: &str, state: Arc<State>) -> Result<std::thread::JoinHandle<()>, String> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|e| format!("statsd: bind {addr}: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| format!("statsd: {e}"))?;
    tracing::info!("statsd on udp://{addr}");
    Ok(std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        while !state.stopping.load(Relaxed) {
            let Ok((n, _)) = socket.recv_from(&mut buf) else { continue };
            let Some(db) = state.db.get() else { continue };
            state.statsd_packets.fetch_add(1, Relaxed);
            let packet = String::from_utf8_lossy(&buf[..n]);
            let (updates, errors) =
                crate::statsd::parse_packet(&packet, ingestor::system_clock_ms());
            for e in &errors {
                tracing::warn!("statsd: bad line {}: {}", e.line, e.reason);
            }
            state.statsd_bad_lines.fetch_add(errors.len() as u64, Relaxed);
            if !updates.is_empty()
                && let Err(e) = db.ingest(&updates)
            {
                tracing::warn!("statsd: packet refused: {e}");
                state.statsd_bad_lines.fetch_add(updates.len() as u64, Relaxed);
            }
        }
    }))
}

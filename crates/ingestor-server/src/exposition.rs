//! `GET /metrics`: every series in the Prometheus text format, rendered from a frozen
//! (copy-on-write) view of the memstore and streamed, then the server's own metrics.
//!
//! Freezing holds the memstore's read lock for a pointer copy per 1,024 series; sorting and
//! rendering run afterwards on a blocking thread, so a scrape of a million series does not
//! hold writers up. A reader that stops reading stops the rendering (the channel fills, then
//! the connection's write time-out closes it).

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use ingestor::Ingestor;
use tokio::sync::mpsc;

use crate::routes::{Access, RESERVED_PREFIX, authorize, error, usable};
use crate::state::AppState;

/// Bytes per piece of the streamed answer.
const PIECE_BYTES: usize = 64 << 10;

/// A response body fed by a channel.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|piece| piece.map(|b| Ok(http_body::Frame::data(b))))
    }
}

pub(crate) async fn metrics(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.counters.requests.fetch_add(1, Relaxed);
    if let Some(r) = authorize(&state, Access::Read, request.headers()) {
        return r;
    }
    // A poisoned log still has a readable state: show it (with ingestor_wal_poisoned 1).
    let db = match (usable(&state), state.db.get()) {
        (Ok(db), _) => db,
        (Err(_), Some(db)) => Arc::clone(db),
        (Err(r), None) => return r,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let worker = Arc::clone(&state);
    let rendering = state.read_pool.run(move || {
        let frozen = db.memstore().freeze();
        // User series never take the server's namespace (writes to it are refused; this
        // keeps older data or embedded writers from breaking the exposition).
        let mut open = true;
        frozen.expose(
            |name| !name.starts_with(RESERVED_PREFIX),
            PIECE_BYTES,
            |piece| {
                open = tx.blocking_send(Bytes::from(piece)).is_ok();
                open
            },
        );
        if open {
            let _ = tx.blocking_send(Bytes::from(own_metrics(&worker, &db)));
        }
    });
    // The rendering runs on its own; the body streams what it sends.
    tokio::spawn(rendering);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, ingestor::EXPOSITION_CONTENT_TYPE)
        .body(Body::new(ChannelBody(rx)))
        .unwrap_or_else(|e| {
            error(&state, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        })
}

/// The server's and the engine's own metrics, every name under `ingestor_`.
pub(crate) fn own_metrics(state: &AppState, db: &Ingestor) -> String {
    let mut out = String::new();
    let mut own = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    let s = db.stats();
    let c = &state.counters;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed) as f64;
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
        "ingestor_wal_poisoned",
        "gauge",
        "1 when a failed sync or write poisoned the log: writes are refused until restart.",
        if db.is_poisoned() { 1.0 } else { 0.0 },
    );
    if let Some((available, total, floor)) = db.free_space() {
        own(
            "ingestor_disk_available_bytes",
            "gauge",
            "Free space of the data directory's file system.",
            available as f64,
        );
        own("ingestor_disk_total_bytes", "gauge", "Size of that file system.", total as f64);
        own(
            "ingestor_disk_floor_bytes",
            "gauge",
            "The free-space floor: below it, writes are answered 503.",
            floor as f64,
        );
    }
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
        "ingestor_http_requests_total",
        "counter",
        "HTTP requests to the API routes.",
        n(&c.requests),
    );
    own(
        "ingestor_http_bad_requests_total",
        "counter",
        "HTTP requests answered 4xx (refused for what the client sent).",
        n(&c.client_errors),
    );
    own(
        "ingestor_http_server_errors_total",
        "counter",
        "HTTP requests answered 5xx.",
        n(&c.server_errors),
    );
    own("ingestor_http_connections", "gauge", "HTTP connections open.", n(&c.connections_open));
    own(
        "ingestor_http_connections_refused_total",
        "counter",
        "Connections closed at once for being over the connection limit.",
        n(&c.connections_refused),
    );
    own(
        "ingestor_http_accept_errors_total",
        "counter",
        "Failed accepts (for example at the file-descriptor limit).",
        n(&c.accept_errors),
    );
    own(
        "ingestor_http_tls_handshake_errors_total",
        "counter",
        "TLS handshakes that failed.",
        n(&c.tls_handshake_errors),
    );
    for (which, counter, help) in [
        ("header", &c.timeouts_header, "Connections closed for sending headers too slowly."),
        ("body", &c.timeouts_body, "Requests answered 408 for sending the body too slowly."),
        ("idle", &c.timeouts_idle, "Kept-alive connections closed for being idle."),
        ("write", &c.timeouts_write, "Connections closed for not reading their response."),
    ] {
        own(&format!("ingestor_http_{which}_timeouts_total"), "counter", help, n(counter));
    }
    own(
        "ingestor_http_over_budget_total",
        "counter",
        "Requests answered 503 for being over the parse-memory budget.",
        n(&c.over_budget),
    );
    own(
        "ingestor_http_parse_memory_bytes",
        "gauge",
        "Budget taken by request bodies being read and parsed.",
        state.budget.used() as f64,
    );
    own(
        "ingestor_statsd_packets_total",
        "counter",
        "StatsD packets received.",
        n(&c.statsd_packets),
    );
    own(
        "ingestor_statsd_bad_lines_total",
        "counter",
        "StatsD lines refused.",
        n(&c.statsd_bad_lines),
    );
    own(
        "ingestor_statsd_dropped_packets_total",
        "counter",
        "StatsD packets dropped: during recovery, over the queue, or refused by the engine.",
        n(&c.statsd_dropped_packets),
    );
    own(
        "ingestor_statsd_batches_total",
        "counter",
        "Ingests of coalesced StatsD packets.",
        n(&c.statsd_batches),
    );
    own(
        "ingestor_remote_write_samples_total",
        "counter",
        "Remote-write samples written.",
        n(&c.rw_samples),
    );
    own(
        "ingestor_remote_write_refused_samples_total",
        "counter",
        "Remote-write samples refused (NaN or infinite values, native histograms, invalid series).",
        n(&c.rw_refused),
    );
    own(
        "ingestor_remote_write_stale_markers_total",
        "counter",
        "Remote-write stale markers received (counted; the series keeps its last value).",
        n(&c.rw_stale_markers),
    );
    own(
        "ingestor_remote_write_exemplars_dropped_total",
        "counter",
        "Remote-write exemplars received and dropped (exemplars are not kept).",
        n(&c.rw_exemplars_dropped),
    );
    own(
        "ingestor_otlp_data_points_total",
        "counter",
        "OTLP data points written.",
        n(&c.otlp_data_points),
    );
    own(
        "ingestor_otlp_rejected_data_points_total",
        "counter",
        "OTLP data points refused (exponential histograms, reserved names, invalid series or \
         values, kind conflicts), as reported in partial_success.",
        n(&c.otlp_rejected),
    );
    // DogStatsD events and service checks: one family by kind (written here, past the last
    // `own`, which holds `out` while it lives).
    let _ = writeln!(
        out,
        "# HELP ingestor_statsd_events_total DogStatsD events and service checks received \
         well formed (counted, not stored).\n# TYPE ingestor_statsd_events_total counter"
    );
    for (kind, counter) in
        [("event", &c.statsd_events), ("service_check", &c.statsd_service_checks)]
    {
        let _ = writeln!(out, "ingestor_statsd_events_total{{kind=\"{kind}\"}} {}", n(counter));
    }
    if let Some(f) = state.forwarder.get() {
        f.write_metrics(&mut out);
    }
    out
}

//! `POST /v1/metrics` and `/opentelemetry/v1/metrics`: OTLP metrics over HTTP, protobuf
//! (`application/x-protobuf`) or JSON (`application/json`), gzip or not.
//!
//! The body is decoded and mapped by `ingestor_protocols::otlp` (Prometheus' translation:
//! see that module for the table). Answers, as the OTLP/HTTP specification says: 200 with an
//! `ExportMetricsServiceResponse` in the request's encoding — with `partial_success` naming
//! how many data points were refused and why, when some were (exponential histograms, names
//! in the `ingestor_` namespace, series or values the data model refuses, a series that
//! exists with another kind); 400 for a body that does not decode (nothing applied); 413
//! over a size limit; 415 for another `Content-Type` or `Content-Encoding`; 503 with
//! `Retry-After` when the server cannot take it now (recovering, over the parse-memory
//! budget, the log failing) — a sender retries those. Error bodies are `google.rpc.Status`
//! messages in the request's encoding (protobuf for a request whose encoding is unknown).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use ingestor::{Ingestor, MetricKind, SeriesKey};
use ingestor_protocols::otlp::{self, Encoding, NO_DATA_POINT, Rejected, Translation};

use crate::body::{self, Encoding as BodyEncoding};
use crate::routes::{Access, RESERVED_PREFIX, authorize, error, ingest_error, writable};
use crate::state::AppState;

/// What a request turned into.
struct Outcome {
    /// Data points written.
    written: usize,
    /// Updates written (a histogram point is several).
    updates: usize,
    rejected: Rejected,
}

/// The route.
pub(crate) async fn write(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let encoding = Encoding::from_content_type(content_type.as_deref());
    let answer = handle(&state, request, encoding.clone()).await;
    // Errors as `google.rpc.Status` in the request's encoding.
    as_status(answer, encoding.unwrap_or(Encoding::Protobuf)).await
}

async fn handle(
    state: &Arc<AppState>,
    request: Request,
    encoding: Result<Encoding, String>,
) -> Response {
    state.counters.requests.fetch_add(1, Relaxed);
    let (parts, body) = request.into_parts();
    if let Some(r) = authorize(state, Access::Write, &parts.headers) {
        return r;
    }
    let encoding = match encoding {
        Ok(e) => e,
        Err(m) => return error(state, StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
    };
    let db = match writable(state) {
        Ok(db) => db,
        Err(r) => return r,
    };
    let (bytes, lease) =
        match body::read_request_body(state, &parts.headers, body, BodyEncoding::Http).await {
            Ok(read) => read,
            Err(r) => return r,
        };
    let worker = Arc::clone(state);
    let outcome = state
        .pool
        .run(move || {
            let _lease = lease;
            let request = otlp::decode(&bytes, encoding)
                .map_err(|e| error(&worker, StatusCode::BAD_REQUEST, e.to_string()))?;
            drop(bytes);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            let translation = otlp::translate(&request, now);
            drop(request);
            ingest(&worker, &db, translation)
        })
        .await;
    let outcome = match outcome {
        Some(Ok(o)) => o,
        Some(Err(r)) => return r,
        None => {
            return error(state, StatusCode::INTERNAL_SERVER_ERROR, "the write failed: a panic");
        }
    };
    let c = &state.counters;
    c.points_written.fetch_add(outcome.updates as u64, Relaxed);
    c.otlp_data_points.fetch_add(outcome.written as u64, Relaxed);
    let refused = outcome.rejected.total();
    c.otlp_rejected.fetch_add(refused as u64, Relaxed);
    let message = if refused == 0 {
        String::new()
    } else {
        let m = outcome.rejected.message();
        state.write_log.log(|held| tracing::warn!("OTLP: {m} ({held} more held back)"));
        m
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        otlp::encode_response(encoding, refused, &message),
    )
        .into_response()
}

/// Rewrites an error answer's body (the server's JSON error) as a `google.rpc.Status` in
/// `encoding`, keeping its status and headers (`Retry-After`, `WWW-Authenticate`).
async fn as_status(response: Response, encoding: Encoding) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
    parts
        .headers
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static(encoding.content_type()));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        Body::from(otlp::encode_status(encoding, status.as_u16(), &message)),
    )
}

/// Refuses the data points the server cannot keep, then ingests the others' updates in one
/// batch (all or nothing: an engine error refuses the whole request).
fn ingest(state: &AppState, db: &Ingestor, t: Translation) -> Result<Outcome, Response> {
    let Translation { updates, origins, mut rejected, .. } = t;
    // Data points refused here, by index; a refused point takes all of its updates with it.
    let mut refused: HashSet<u32> = HashSet::new();
    for (u, &o) in updates.iter().zip(&origins) {
        if o != NO_DATA_POINT && u.key.name().starts_with(RESERVED_PREFIX) && refused.insert(o) {
            rejected.add(format!("names starting with {RESERVED_PREFIX} are reserved"), 1);
        }
    }
    for attempt in 0..2 {
        let mut local = Rejected::default();
        let mut bad = refused.clone();
        // The kind each series has, or gets from the first update that creates it here.
        let mut kinds: HashMap<&SeriesKey, Option<MetricKind>> = HashMap::new();
        for (u, &o) in updates.iter().zip(&origins) {
            if bad.contains(&o) {
                continue;
            }
            let wanted = u.op.kind();
            let have = *kinds.entry(&u.key).or_insert_with(|| db.kind(&u.key).or(wanted));
            if have != wanted {
                if o == NO_DATA_POINT {
                    continue;
                }
                bad.insert(o);
                local.add(
                    format!(
                        "data points for {} (a {} series) as a {}",
                        u.key.name(),
                        kind_name(have),
                        kind_name(wanted)
                    ),
                    1,
                );
            }
        }
        let keep: Vec<ingestor::Update> = updates
            .iter()
            .zip(&origins)
            .filter(|(u, o)| {
                !bad.contains(o)
                    && (**o != NO_DATA_POINT || kinds.get(&u.key).copied().flatten() == u.op.kind())
            })
            .map(|(u, _)| u.clone())
            .collect();
        let result = if keep.is_empty() { Ok(()) } else { db.ingest(&keep).map(|_| ()) };
        match result {
            Ok(()) => {
                let mut last = None;
                let mut points = 0usize;
                for (_, &o) in updates.iter().zip(&origins) {
                    if o != NO_DATA_POINT && !bad.contains(&o) && last != Some(o) {
                        points += 1;
                        last = Some(o);
                    }
                }
                for (r, n) in local.by_reason {
                    rejected.add(r, n);
                }
                return Ok(Outcome { written: points, updates: keep.len(), rejected });
            }
            // Another request created one of these series with another kind meanwhile:
            // decide the kinds again, once.
            Err(ingestor::Error::Memstore(ingestor::MemstoreError::KindConflict { .. }))
                if attempt == 0 => {}
            Err(e) => return Err(ingest_error(state, &e)),
        }
    }
    Err(error(state, StatusCode::INTERNAL_SERVER_ERROR, "unreachable: the retry loop ended"))
}

fn kind_name(k: Option<MetricKind>) -> &'static str {
    match k {
        Some(MetricKind::Counter) => "counter",
        Some(MetricKind::Gauge) => "gauge",
        Some(MetricKind::Histogram) => "histogram",
        _ => "other",
    }
}

//! The HTTP routes, and the status codes they answer with.
//!
//! - 204: the batch reached the configured durability level.
//! - 400: bad input, nothing of it applied (the line or series named); 401/403: credentials
//!   missing or wrong; 404/405: no such route or method; 408: the body came too slowly;
//!   413: over a size limit (the engine's batch limit included); 415: an encoding we do not
//!   take; 422: a query result over its limit; 431: headers too large (hyper).
//! - 503 with `Retry-After`: recovering, over the parse-memory budget, the log poisoned or
//!   the disk failing (a sender should retry); 500 only for a fault of ours.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ingestor::Ingestor;
use ingestor_protocols::line::Precision;
use serde_json::json;

use crate::auth::{self, Verdict};
use crate::body::{self, BodyError, Encoding};
use crate::state::AppState;

/// Metric names in this namespace belong to the server's own metrics.
pub(crate) const RESERVED_PREFIX: &str = "ingestor_";

/// Seconds a sender is told to wait before retrying a 503.
const RETRY_AFTER_SECONDS: &str = "1";

/// The application: every route, with the shared state.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/api/v2/write", post(write))
        .route("/write", post(write))
        .route("/api/v1/write", post(crate::remote_write::write))
        .route("/v1/metrics", post(crate::otlp::write))
        .route("/opentelemetry/v1/metrics", post(crate::otlp::write))
        .route("/metrics", get(crate::exposition::metrics))
        .route("/api/v1/query", get(crate::query::query).post(crate::query::query))
        .route("/api/v1/series", get(crate::query::series).post(crate::query::series))
        .fallback(not_found)
        .with_state(state)
}

/// An error answer: JSON in the Prometheus API's shape, counted.
pub(crate) fn error(state: &AppState, status: StatusCode, message: impl Into<String>) -> Response {
    let message = message.into();
    if status.is_server_error() {
        state.counters.server_errors.fetch_add(1, Relaxed);
    } else {
        state.counters.client_errors.fetch_add(1, Relaxed);
    }
    tracing::debug!(status = status.as_u16(), "{message}");
    let kind = match status.as_u16() {
        400 | 413 | 415 | 422 => "bad_data",
        401 | 403 => "unauthorized",
        408 => "timeout",
        503 => "unavailable",
        _ => "internal",
    };
    let body = json!({ "status": "error", "errorType": kind, "error": message }).to_string();
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    }
    response
}

/// Which credentials a route needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access {
    Read,
    Write,
}

/// `None` if the request may go on; otherwise the 401 or 403 to answer.
pub(crate) fn authorize(state: &AppState, access: Access, headers: &HeaderMap) -> Option<Response> {
    let required = match access {
        Access::Read => state.config.auth.read.as_ref(),
        Access::Write => state.config.auth.write.as_ref(),
    };
    let given = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes);
    match auth::check(required, given) {
        Verdict::Allowed => None,
        Verdict::Missing => {
            let mut r = error(state, StatusCode::UNAUTHORIZED, "credentials required");
            if let Some(c) = required
                && let Ok(v) = HeaderValue::from_str(auth::challenge(c))
            {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            Some(r)
        }
        Verdict::Wrong => Some(error(state, StatusCode::FORBIDDEN, "credentials refused")),
    }
}

/// The ingestor once it is open and its log is not poisoned; otherwise the 503 to answer.
pub(crate) fn usable(state: &AppState) -> Result<Arc<Ingestor>, Response> {
    let Some(db) = state.db.get() else {
        return Err(error(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "recovering: try again when /-/ready answers 200",
        ));
    };
    if db.is_poisoned() {
        return Err(error(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            "the write-ahead log is poisoned (a sync or write failed); nothing more can be \
             written until the server restarts",
        ));
    }
    Ok(Arc::clone(db))
}

/// The start of every write route: counted, credentials checked, the ingestor usable; the
/// ingestor, or the answer to give.
pub(crate) fn admit_write(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Arc<Ingestor>, Response> {
    state.counters.requests.fetch_add(1, Relaxed);
    if let Some(r) = authorize(state, Access::Write, headers) {
        return Err(r);
    }
    writable(state)
}

/// The ingestor, usable and not held back by forwarding (a destination under the `block`
/// budget policy at its budget): what every write path checks.
pub(crate) fn writable(state: &AppState) -> Result<Arc<Ingestor>, Response> {
    let db = usable(state)?;
    if let Some(reason) = state.forwarder.get().and_then(|f| f.blocked()) {
        return Err(error(state, StatusCode::SERVICE_UNAVAILABLE, reason));
    }
    Ok(db)
}

async fn healthy() -> &'static str {
    "Healthy\n"
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match state.db.get() {
        None => {
            (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable: recovering\n").into_response()
        }
        Some(db) if db.is_poisoned() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Service Unavailable: the write-ahead log is poisoned; restart to recover\n",
        )
            .into_response(),
        Some(_) => "Ready\n".into_response(),
    }
}

async fn not_found(State(state): State<Arc<AppState>>, request: Request) -> Response {
    error(&state, StatusCode::NOT_FOUND, format!("no route for {}", request.uri().path()))
}

/// The value of `name` in a query string or form body, percent-decoded (`+` is a space).
pub(crate) fn params<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = String> + 'a {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Maps a body-reading failure to its answer.
pub(crate) fn body_error(state: &AppState, e: BodyError) -> Response {
    match e {
        BodyError::TooLarge(m) => error(state, StatusCode::PAYLOAD_TOO_LARGE, m),
        BodyError::Timeout(t) => {
            state.counters.timeouts_body.fetch_add(1, Relaxed);
            let mut r = error(
                state,
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {t:?}"),
            );
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            r
        }
        BodyError::OverBudget => {
            state.counters.over_budget.fetch_add(1, Relaxed);
            error(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the server is parsing {} bytes of request bodies already (its budget is {}); \
                     retry",
                    state.budget.used(),
                    state.budget.limit()
                ),
            )
        }
        BodyError::Bad(code, m) => {
            error(state, StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST), m)
        }
    }
}

/// Maps an ingest failure: the client's fault is 4xx, the disk's 503, ours 500.
pub(crate) fn ingest_error(state: &AppState, e: &ingestor::Error) -> Response {
    use ingestor::Error as E;
    match e {
        // The store's own limit, not the request's: a restart lifts it.
        E::Memstore(ingestor::MemstoreError::HandlesExhausted { .. }) => {
            state
                .write_log
                .log(|held| tracing::error!("a write refused ({held} more held back): {e}"));
            error(state, StatusCode::SERVICE_UNAVAILABLE, format!("not stored: {e}"))
        }
        E::InvalidUpdate { .. } | E::Memstore(_) => {
            error(state, StatusCode::BAD_REQUEST, format!("refused, nothing applied: {e}"))
        }
        E::BatchTooLarge { .. } => {
            error(state, StatusCode::PAYLOAD_TOO_LARGE, format!("refused, nothing applied: {e}"))
        }
        E::DiskFull { .. } => {
            state
                .write_log
                .log(|held| tracing::warn!("a write refused ({held} more held back): {e}"));
            error(state, StatusCode::SERVICE_UNAVAILABLE, format!("not stored: {e}"))
        }
        E::Wal(_) | E::Io { .. } | E::Closed => {
            state
                .write_log
                .log(|held| tracing::error!("a write failed ({held} more held back): {e}"));
            error(state, StatusCode::SERVICE_UNAVAILABLE, format!("not stored: {e}"))
        }
        _ => error(state, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The first update in the reserved namespace, as an error message.
pub(crate) fn reserved(updates: &[ingestor::Update]) -> Option<String> {
    updates.iter().find(|u| u.key.name().starts_with(RESERVED_PREFIX)).map(|u| {
        format!(
            "series {}: metric names starting with {RESERVED_PREFIX} are reserved for the \
             server's own metrics; nothing applied",
            u.key
        )
    })
}

/// `POST /api/v2/write` and `/write`: a line-protocol body, all or nothing, 204 once it
/// reached the configured durability.
async fn write(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let db = match admit_write(&state, &parts.headers) {
        Ok(db) => db,
        Err(r) => return r,
    };
    let query = parts.uri.query().unwrap_or("");
    let precision = params(query, "precision").next().unwrap_or_else(|| "ns".into());
    let Some(precision) = Precision::parse(&precision) else {
        return error(
            &state,
            StatusCode::BAD_REQUEST,
            format!("precision {precision:?}: expected ns, us, ms or s"),
        );
    };
    let (bytes, lease) =
        match body::read_request_body(&state, &parts.headers, body, Encoding::Http).await {
            Ok(read) => read,
            Err(r) => return r,
        };
    let worker = Arc::clone(&state);
    let outcome = state
        .pool
        .run(move || {
            let _lease = lease;
            let Ok(text) = std::str::from_utf8(&bytes) else {
                return Err(error(&worker, StatusCode::BAD_REQUEST, "the body is not UTF-8"));
            };
            crate::write::ingest_lines(&worker, &db, text, precision)
        })
        .await;
    match outcome {
        Some(Ok(points)) => {
            state.counters.points_written.fetch_add(points as u64, Relaxed);
            StatusCode::NO_CONTENT.into_response()
        }
        Some(Err(r)) => r,
        None => error(&state, StatusCode::INTERNAL_SERVER_ERROR, "the write failed: a panic"),
    }
}

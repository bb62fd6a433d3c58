//! `/api/v1/query` and `/api/v1/series`, by GET or by POST form (as Grafana sends them), with
//! limits on the selectors taken and the series returned.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ingestor::Selector;
use serde_json::json;

use crate::body::{self, Encoding};
use crate::query_api::{self, Sample};
use crate::routes::{Access, authorize, error, params, usable};
use crate::state::AppState;

/// The parameters of a request: the query string, and for a POST the form body after it.
async fn parameters(state: &Arc<AppState>, request: Request) -> Result<String, Response> {
    let (parts, body) = request.into_parts();
    let mut all = parts.uri.query().unwrap_or("").to_string();
    if parts.method == Method::POST {
        let form = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return Err(error(
                state,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "a POST query must be a form (Content-Type: application/x-www-form-urlencoded)",
            ));
        }
        let (bytes, _lease) =
            body::read_request_body(state, &parts.headers, body, Encoding::Http).await?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| error(state, StatusCode::BAD_REQUEST, "the form is not UTF-8"))?;
        if !all.is_empty() && !text.is_empty() {
            all.push('&');
        }
        all.push_str(text);
    }
    Ok(all)
}

/// Runs `f` on the engine off the async workers and answers its JSON as a success.
async fn answer(
    state: Arc<AppState>,
    f: impl FnOnce(&AppState, &ingestor::Ingestor) -> Result<serde_json::Value, Response>
    + Send
    + 'static,
) -> Response {
    let db = match usable(&state).or_else(|r| state.db.get().cloned().ok_or(r)) {
        Ok(db) => db,
        Err(r) => return r,
    };
    let worker = Arc::clone(&state);
    match state.read_pool.run(move || f(&worker, &db)).await {
        Some(Ok(data)) => (
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "status": "success", "data": data }).to_string(),
        )
            .into_response(),
        Some(Err(r)) => r,
        None => error(&state, StatusCode::INTERNAL_SERVER_ERROR, "the query failed: a panic"),
    }
}

fn too_many(state: &AppState, found: usize) -> Response {
    error(
        state,
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "the query matches {found} series or more, over the limit of {}: narrow the selector",
            state.config.limits.query_max_series
        ),
    )
}

/// `query=<selector>`: an instant vector of the exposed samples it matches.
pub(crate) async fn query(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.counters.requests.fetch_add(1, Relaxed);
    if let Some(r) = authorize(&state, Access::Read, request.headers()) {
        return r;
    }
    let all = match parameters(&state, request).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(text) = params(&all, "query").next() else {
        return error(&state, StatusCode::BAD_REQUEST, "missing the query parameter");
    };
    let selector = match Selector::parse(&text) {
        Ok(s) => s,
        Err(e) => return error(&state, StatusCode::BAD_REQUEST, format!("query {text:?}: {e}")),
    };
    answer(state, move |state, db| {
        let samples = query_api::select(db, &selector);
        if samples.len() > state.config.limits.query_max_series {
            return Err(too_many(state, samples.len()));
        }
        Ok(query_api::vector_json(&samples))
    })
    .await
}

/// `match[]=<selector>` (one or more): the label sets of the samples they match.
pub(crate) async fn series(State(state): State<Arc<AppState>>, request: Request) -> Response {
    state.counters.requests.fetch_add(1, Relaxed);
    if let Some(r) = authorize(&state, Access::Read, request.headers()) {
        return r;
    }
    let all = match parameters(&state, request).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let max = state.config.limits.query_max_matchers;
    let mut selectors = Vec::new();
    for text in params(&all, "match[]") {
        if selectors.len() == max {
            return error(
                &state,
                StatusCode::BAD_REQUEST,
                format!("more than {max} match[] selectors in one request"),
            );
        }
        match Selector::parse(&text) {
            Ok(s) => selectors.push(s),
            Err(e) => {
                return error(&state, StatusCode::BAD_REQUEST, format!("match[] {text:?}: {e}"));
            }
        }
    }
    if selectors.is_empty() {
        return error(&state, StatusCode::BAD_REQUEST, "no match[] parameter given");
    }
    answer(state, move |state, db| {
        let limit = state.config.limits.query_max_series;
        let mut samples: Vec<Sample> = Vec::new();
        for s in &selectors {
            samples.extend(query_api::select(db, s));
            if samples.len() > limit {
                return Err(too_many(state, samples.len()));
            }
        }
        Ok(query_api::series_json(&samples))
    })
    .await
}

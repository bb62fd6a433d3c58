//! `POST /api/v1/write`: Prometheus remote write 1.0 and 2.0, chosen by `Content-Type`.
//!
//! Each series is a series of ingestor (its labels as sent, `__name__` required, empty
//! values dropped as Prometheus reads them); each sample sets it at its timestamp. A series
//! new to ingestor becomes a counter (its samples absolute totals, `CounterSet`) when its
//! metadata says counter — the series' own (2.0) or its family's, remembered from any 1.0
//! request that carried metadata — and a gauge otherwise; a series that exists keeps its
//! kind. Stale markers are counted and skip nothing else: the series keeps its last value
//! (`--series-ttl` expires series that stop). Exemplars are counted and dropped (they are
//! not state). Samples ingestor cannot keep — NaN or infinite values other than stale
//! markers, native histograms, series without `__name__` or with invalid labels, a counter
//! going negative, names in the `ingestor_` namespace, a sample for a histogram series —
//! are refused: the others are written, and the answer is 400 naming how many were refused
//! and why (a partial write, as the 2.0 specification says), never a 2xx for data not kept.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ingestor::{Ingestor, MetricKind, Op, SeriesKey, Timestamp, Update};
use ingestor_protocols::remote_write::{self, DecodeError, MetricType, Version};
use ingestor_protocols::remote_write_view::{self, Labels};

use crate::body::{self, Encoding, PARSE_FACTOR};
use crate::routes::{RESERVED_PREFIX, admit_write, body_error, error, ingest_error};
use crate::rw_cache::{self, Known};
use crate::state::AppState;

/// Families whose 1.0 metadata is remembered, at most (the map is emptied when full).
const METADATA_FAMILIES: usize = 100_000;

/// Why samples were refused, counted.
#[derive(Debug, Default)]
struct Refused {
    by_reason: Vec<(String, usize)>,
}

impl Refused {
    fn add(&mut self, reason: String, n: usize) {
        if n == 0 {
            return;
        }
        match self.by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.by_reason.push((reason, n)),
        }
    }

    fn total(&self) -> usize {
        self.by_reason.iter().map(|(_, n)| n).sum()
    }

    fn message(&self, written: usize) -> String {
        let reasons: Vec<String> =
            self.by_reason.iter().take(8).map(|(r, n)| format!("{n} x {r}")).collect();
        format!("{} samples refused, {written} written: {}", self.total(), reasons.join("; "))
    }
}

/// What a request turned into.
struct Outcome {
    written: usize,
    refused: Refused,
    stale: usize,
    exemplars: usize,
}

/// The route.
pub(crate) async fn write(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let db = match admit_write(&state, &parts.headers) {
        Ok(db) => db,
        Err(r) => return r,
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let version = match Version::from_content_type(content_type) {
        Ok(v) => v,
        Err(m) => return error(&state, StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
    };
    if let Some(e) = parts.headers.get(header::CONTENT_ENCODING)
        && !e.as_bytes().eq_ignore_ascii_case(b"snappy")
    {
        return error(
            &state,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Encoding {:?}: remote write takes snappy",
                String::from_utf8_lossy(e.as_bytes())
            ),
        );
    }
    let (bytes, mut lease) =
        match body::read_request_body(&state, &parts.headers, body, Encoding::Raw).await {
            Ok(read) => read,
            Err(r) => return with_written(version, r, 0),
        };
    let worker = Arc::clone(&state);
    let outcome = state
        .pool
        .run(move || {
            let limit = worker.config.limits.max_decoded_body_bytes;
            let size = remote_write::decompressed_len(&bytes)
                .map_err(|e| error(&worker, StatusCode::BAD_REQUEST, e.to_string()))?;
            if size <= limit && !lease.grow(size.saturating_mul(1 + PARSE_FACTOR)) {
                return Err(body_error(&worker, body::BodyError::OverBudget));
            }
            let raw = remote_write::decompress(&bytes, limit).map_err(|e| match e {
                DecodeError::TooLarge { .. } => {
                    error(&worker, StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
                }
                _ => error(&worker, StatusCode::BAD_REQUEST, e.to_string()),
            })?;
            drop(bytes);
            ingest(&worker, &db, &raw, version)
        })
        .await;
    let outcome = match outcome {
        Some(Ok(o)) => o,
        Some(Err(r)) => return with_written(version, r, 0),
        None => {
            let r = error(&state, StatusCode::INTERNAL_SERVER_ERROR, "the write failed: a panic");
            return with_written(version, r, 0);
        }
    };
    let c = &state.counters;
    c.points_written.fetch_add(outcome.written as u64, Relaxed);
    c.rw_samples.fetch_add(outcome.written as u64, Relaxed);
    c.rw_refused.fetch_add(outcome.refused.total() as u64, Relaxed);
    c.rw_stale_markers.fetch_add(outcome.stale as u64, Relaxed);
    c.rw_exemplars_dropped.fetch_add(outcome.exemplars as u64, Relaxed);
    let response = if outcome.refused.total() == 0 {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let message = outcome.refused.message(outcome.written);
        state
            .write_log
            .log(|held| tracing::warn!("remote write: {message} ({held} more held back)"));
        (StatusCode::BAD_REQUEST, message).into_response()
    };
    with_written(version, response, outcome.written)
}

/// Remote write 2.0 asks for the written counts on every answer once the content type was
/// negotiated, success or failure (0 when the request was refused before anything was
/// written); 1.0 answers carry none.
fn with_written(version: Version, mut response: Response, samples: usize) -> Response {
    if version == Version::V2 {
        let h = response.headers_mut();
        let n = |v: usize| {
            HeaderValue::from_str(&v.to_string()).unwrap_or(HeaderValue::from_static("0"))
        };
        h.insert("X-Prometheus-Remote-Write-Samples-Written", n(samples));
        h.insert("X-Prometheus-Remote-Write-Histograms-Written", n(0));
        h.insert("X-Prometheus-Remote-Write-Exemplars-Written", n(0));
    }
    response
}

/// The type a new series gets from its metadata: its own, or its family's from 1.0
/// metadata (a counter's family is its name with or without `_total`).
fn remembered(
    families: &HashMap<String, MetricType>,
    name: &str,
    own: Option<MetricType>,
) -> Option<MetricType> {
    own.or_else(|| families.get(name).copied())
        .or_else(|| name.strip_suffix("_total").and_then(|f| families.get(f).copied()))
}

/// A series of a request, its key made (or found in the cache).
struct Item {
    key: SeriesKey,
    /// The type its own metadata gives.
    own: Option<MetricType>,
    samples: Vec<(i64, f64)>,
    /// Its cache fingerprint, when the cache did not know it.
    text: Option<rw_cache::Fingerprint>,
}

/// Counts a series' stale markers into `stale`; whether it has a sample that is not one.
fn live_samples(samples: &[(i64, f64)], stale: &mut usize) -> bool {
    let markers = samples.iter().filter(|&&(_, v)| remote_write::is_stale_marker(v)).count();
    *stale += markers;
    markers < samples.len()
}

fn ingest(
    state: &AppState,
    db: &Ingestor,
    raw: &[u8],
    version: Version,
) -> Result<Outcome, axum::response::Response> {
    let bad = |e: DecodeError| error(state, StatusCode::BAD_REQUEST, e.to_string());
    // First pass: every series looked up in the cache, the batch by handle built as it goes.
    // No key is built, no label checked, nothing allocated per series; a request of known
    // series ends here.
    let (which, mut cache) = rw_cache::any(state, raw.len());
    cache.bound();
    let generation = cache.generation();
    let mut text = Vec::new();
    let mut batch = Vec::new();
    let mut local = Refused::default();
    let mut all_known = true;
    let (mut stale, mut exemplars, mut histograms) = (0usize, 0usize, 0usize);
    let metadata = remote_write_view::visit(raw, version, Labels::Raw, |s| {
        exemplars += s.exemplars;
        histograms += s.histograms;
        let live = live_samples(s.samples, &mut stale);
        if !all_known {
            return Ok(());
        }
        // Every series is looked up, even one with stale markers only: labels this pass did
        // not read are trusted only when they equal a cached key.
        let Some(key) = rw_cache::key_of(s, &mut text) else {
            all_known = false;
            return Ok(());
        };
        let Some(k) = cache.get(rw_cache::fingerprint(key)) else {
            all_known = false;
            return Ok(());
        };
        if !live {
            return Ok(());
        }
        for &(t, v) in s.samples.iter().filter(|(_, v)| !remote_write::is_stale_marker(*v)) {
            let op = if k.counter { Op::CounterSet(v) } else { Op::GaugeSet(v) };
            match op.validate() {
                Ok(()) => batch.push((k.handle, Timestamp(t), op)),
                Err(e) => local.add(format!("invalid values ({e})"), 1),
            }
        }
        Ok(())
    })
    .map_err(bad)?;
    drop(cache);
    let mut refused = Refused::default();
    refused.add("native histogram samples (not supported)".into(), histograms);
    if !metadata.is_empty() {
        let mut families =
            state.rw_metadata.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if families.len() + metadata.len() > METADATA_FAMILIES {
            families.clear();
        }
        families.extend(metadata.iter().map(|(f, t)| (f.to_string(), *t)));
    }
    if all_known {
        let result =
            if batch.is_empty() { Ok(()) } else { db.ingest_by_handle(&batch).map(|_| ()) };
        match result {
            Ok(()) => {
                merge(&mut refused, local);
                return Ok(Outcome { written: batch.len(), refused, stale, exemplars });
            }
            // A series was deleted since (time-to-live): start over by key.
            Err(ingestor::Error::Memstore(ingestor::MemstoreError::UnknownSeries { .. })) => {
                for i in 0..state.rw_caches.len() {
                    rw_cache::nth(state, i).clear();
                }
            }
            Err(e) => return Err(ingest_error(state, &e)),
        }
    }
    // Second pass, by key: every series checked and keyed.
    let mut items: Vec<Item> = Vec::new();
    // Stale markers were counted in the first pass.
    let mut stale_again = 0;
    remote_write_view::visit(raw, version, Labels::Parsed, |s| {
        if !live_samples(s.samples, &mut stale_again) {
            return Ok(());
        }
        let samples: Vec<(i64, f64)> =
            s.samples.iter().copied().filter(|&(_, v)| !remote_write::is_stale_marker(v)).collect();
        let labels = remote_write_view::checked(s.labels)?;
        let name = labels.iter().find(|(k, _)| *k == "__name__").map(|(_, v)| *v);
        let Some(name) = name.filter(|n| !n.is_empty()) else {
            refused.add("a series without __name__".into(), samples.len());
            return Ok(());
        };
        if name.starts_with(RESERVED_PREFIX) {
            refused
                .add(format!("names starting with {RESERVED_PREFIX} are reserved"), samples.len());
            return Ok(());
        }
        let rest = labels.iter().filter(|(k, v)| *k != "__name__" && !v.is_empty()).copied();
        match SeriesKey::new(name, rest) {
            Ok(key) => {
                let text = rw_cache::key_of(s, &mut text).map(rw_cache::fingerprint);
                items.push(Item { key, own: s.metric_type, samples, text });
            }
            Err(e) => refused.add(format!("invalid series ({e})"), samples.len()),
        }
        Ok(())
    })
    .map_err(bad)?;
    let written = ingest_by_key(state, db, &items, &mut refused)?;
    // Remember the series, now that they exist.
    let learned: Vec<(rw_cache::Fingerprint, Known)> = items
        .into_iter()
        .filter_map(|item| {
            let text = item.text?;
            let counter = match db.kind(&item.key)? {
                MetricKind::Counter => true,
                MetricKind::Gauge => false,
                MetricKind::Histogram => return None,
            };
            let handle = db.resolve(&item.key).ok()?;
            Some((text, Known { handle, counter }))
        })
        .collect();
    let mut cache = rw_cache::nth(state, which);
    if cache.generation() == generation {
        for (text, known) in learned {
            cache.insert(text, known);
        }
    }
    Ok(Outcome { written, refused, stale, exemplars })
}

/// The general path: each series' kind decided (its own if it exists, else from metadata),
/// then one ingest by key; the samples written.
fn ingest_by_key(
    state: &AppState,
    db: &Ingestor,
    items: &[Item],
    refused: &mut Refused,
) -> Result<usize, axum::response::Response> {
    for attempt in 0..2 {
        // What 1.0 metadata says of each series' family, read under the lock once (the map
        // can hold 100,000 families: it is not copied).
        let from_metadata: Vec<bool> = {
            let families =
                state.rw_metadata.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            items
                .iter()
                .map(|i| remembered(&families, i.key.name(), i.own) == Some(MetricType::Counter))
                .collect()
        };
        let mut updates = Vec::new();
        let mut local = Refused::default();
        for (item, &from_metadata) in items.iter().zip(&from_metadata) {
            let counter = match db.kind(&item.key) {
                Some(MetricKind::Counter) => true,
                Some(MetricKind::Gauge) => false,
                Some(MetricKind::Histogram) => {
                    local.add(
                        format!("samples for {}, a histogram series", item.key),
                        item.samples.len(),
                    );
                    continue;
                }
                None => from_metadata,
            };
            for &(t, v) in &item.samples {
                let op = if counter { Op::CounterSet(v) } else { Op::GaugeSet(v) };
                match Update::new(item.key.clone(), Timestamp(t), op) {
                    Ok(u) => updates.push(u),
                    Err(e) => local.add(format!("invalid values ({e})"), 1),
                }
            }
        }
        if updates.is_empty() {
            merge(refused, local);
            return Ok(0);
        }
        match db.ingest(&updates) {
            Ok(_) => {
                merge(refused, local);
                return Ok(updates.len());
            }
            // Another request created one of these series with the other kind meanwhile:
            // decide the kinds again, once.
            Err(ingestor::Error::Memstore(ingestor::MemstoreError::KindConflict { .. }))
                if attempt == 0 => {}
            Err(e) => return Err(ingest_error(state, &e)),
        }
    }
    Ok(0)
}

fn merge(into: &mut Refused, from: Refused) {
    for (r, n) in from.by_reason {
        into.add(r, n);
    }
}

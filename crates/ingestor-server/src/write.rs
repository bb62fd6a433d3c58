//! A line-protocol body into the engine: parsed through the series cache, and ingested by
//! handle when every series it names is known (no key built, hashed or looked up), by key
//! otherwise. Either way all or nothing, and 2xx only once the batch reached its level.

use std::sync::{MutexGuard, PoisonError};

use axum::http::StatusCode;
use axum::response::Response;
use ingestor::{Ingestor, Op, SeriesHandle, Timestamp, Update};
use ingestor_protocols::line::{Precision, parse_body};
use ingestor_protocols::line_cache::{CachedPoint, SeriesCache, parse_body_cached};

use crate::routes::{RESERVED_PREFIX, error, ingest_error, reserved};
use crate::state::AppState;

/// A free cache (or, when all are busy, one chosen by `hint`), and its index: a request keeps
/// to that one cache, whose slots it holds.
fn any_cache(state: &AppState, hint: usize) -> (usize, MutexGuard<'_, SeriesCache<SeriesHandle>>) {
    let caches = &state.line_caches;
    for (i, c) in caches.iter().enumerate() {
        if let Ok(guard) = c.try_lock() {
            return (i, guard);
        }
    }
    let i = hint % caches.len();
    (i, cache(state, i))
}

fn cache(state: &AppState, i: usize) -> MutexGuard<'_, SeriesCache<SeriesHandle>> {
    state.line_caches[i].lock().unwrap_or_else(PoisonError::into_inner)
}

/// Parses and ingests `text`; the number of points taken, or the answer to give.
pub(crate) fn ingest_lines(
    state: &AppState,
    db: &Ingestor,
    text: &str,
    precision: Precision,
) -> Result<usize, Response> {
    let now = ingestor::system_clock_ms();
    let mut points: Vec<CachedPoint> = Vec::new();
    let (which, mut guard) = any_cache(state, text.len());
    parse_body_cached(text, precision, now, &mut guard, &mut points)
        .map_err(|e| error(state, StatusCode::BAD_REQUEST, e.to_string()))?;
    if points.is_empty() {
        return Ok(0);
    }
    if let Some(p) = points.iter().find(|p| guard.key(p.slot).name().starts_with(RESERVED_PREFIX)) {
        let key = guard.key(p.slot).clone();
        drop(guard);
        let update = Update { key, timestamp: p.timestamp, op: p.op() };
        return Err(error(
            state,
            StatusCode::BAD_REQUEST,
            reserved(std::slice::from_ref(&update)).unwrap_or_default(),
        ));
    }
    let handles: Option<Vec<(SeriesHandle, Timestamp, Op)>> =
        points.iter().map(|p| guard.value(p.slot).map(|h| (h, p.timestamp, p.op()))).collect();
    if let Some(batch) = handles {
        drop(guard);
        return match db.ingest_by_handle(&batch) {
            Ok(_) => Ok(batch.len()),
            // A series was deleted since (time-to-live): its handle is stale. Start over by
            // key, which brings the series back.
            Err(ingestor::Error::Memstore(ingestor::MemstoreError::UnknownSeries { .. })) => {
                for i in 0..state.line_caches.len() {
                    cache(state, i).forget_values();
                }
                ingest_by_key(state, db, text, precision, now)
            }
            Err(e) => Err(ingest_error(state, &e)),
        };
    }
    // Some series are new to the cache: by key, then remember their handles.
    let updates: Vec<Update> = points
        .iter()
        .map(|p| Update { key: guard.key(p.slot).clone(), timestamp: p.timestamp, op: p.op() })
        .collect();
    // (slot, index of a point of it) for each series without a handle yet.
    let mut unknown: Vec<(u32, usize)> = points
        .iter()
        .enumerate()
        .filter(|(_, p)| guard.value(p.slot).is_none())
        .map(|(i, p)| (p.slot, i))
        .collect();
    unknown.sort_unstable_by_key(|&(slot, _)| slot);
    unknown.dedup_by_key(|&mut (slot, _)| slot);
    let generation = guard.generation();
    drop(guard);
    db.ingest(&updates).map_err(|e| ingest_error(state, &e))?;
    // The series exist now (the batch was applied): resolving finds them, creating nothing.
    let resolved: Vec<(u32, SeriesHandle)> = unknown
        .into_iter()
        .filter_map(|(slot, at)| db.resolve(&updates[at].key).ok().map(|h| (slot, h)))
        .collect();
    let mut guard = cache(state, which);
    if guard.generation() == generation {
        for (slot, h) in resolved {
            guard.set_value(slot, h);
        }
    }
    Ok(updates.len())
}

/// The plain path: parse to keys, ingest by key.
fn ingest_by_key(
    state: &AppState,
    db: &Ingestor,
    text: &str,
    precision: Precision,
    now: i64,
) -> Result<usize, Response> {
    let updates = parse_body(text, precision, now)
        .map_err(|e| error(state, StatusCode::BAD_REQUEST, e.to_string()))?;
    db.ingest(&updates).map_err(|e| ingest_error(state, &e))?;
    Ok(updates.len())
}

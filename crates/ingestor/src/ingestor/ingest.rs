//! Ingest: validate a batch, log it (with the series definitions its segment lacks), apply
//! it, acknowledge it.

use std::sync::atomic::Ordering::Relaxed;

use ingestor_codec::{
    Lsn, MAX_BATCH_POINTS, Op, RecordType, SeriesId, SeriesKey, Timestamp, Update,
    begin_series_defs, encode_batch_iter, put_series_def,
};
use ingestor_memstore::{SeriesRef, SlotPoint};
use ingestor_wal::{AckLevel, SegmentId, SyncPolicy};

use super::{Ack, Defined, Ingestor, SeriesHandle, Shared, lock};
use crate::error::{Error, Result};

impl Ingestor {
    /// Ingests a batch of updates addressed by key: validates everything, logs one record,
    /// applies it, and acknowledges with its LSN and the level reached. All or nothing: a
    /// refused batch leaves nothing of itself in the log or the memstore.
    ///
    /// # Errors
    /// [`Error::InvalidUpdate`], [`Error::Memstore`] (kind conflict, series limit),
    /// [`Error::Wal`] (I/O; a poisoned log); nothing of the batch was applied.
    pub fn ingest(&self, updates: &[Update]) -> Result<Ack> {
        let shared = &self.shared;
        let result = (|| {
            check_batch(updates.iter().map(|u| &u.op))?;
            shared.check_space()?;
            let keys: Vec<&SeriesKey> = updates.iter().map(|u| &u.key).collect();
            let mut defined = lock(&shared.writer);
            let (ids, created) = shared.memstore.intern_all(&keys)?;
            let points: Vec<SlotPoint> = updates
                .iter()
                .zip(&ids)
                .map(|(u, &series)| SlotPoint { series, timestamp: u.timestamp, op: u.op.clone() })
                .collect();
            let result = shared.commit(&mut defined, &points);
            if result.is_err() {
                shared.memstore.discard_unwritten(&created);
            }
            drop(defined);
            shared.acknowledge(result?, points.len())
        })();
        shared.count(&result);
        result
    }

    /// Resolves a key to a handle (creating the series, without state, if needed), for
    /// [`Ingestor::ingest_by_handle`].
    ///
    /// # Errors
    /// [`Error::Memstore`] when the series limit is reached.
    pub fn resolve(&self, key: &SeriesKey) -> Result<SeriesHandle> {
        let _writer = lock(&self.shared.writer);
        Ok(SeriesHandle(self.shared.memstore.intern(key)?))
    }

    /// Ingests a batch addressed by handles: the fast path for hot series.
    ///
    /// # Errors
    /// As [`Ingestor::ingest`]; a handle whose series was deleted is refused.
    pub fn ingest_by_handle(&self, points: &[(SeriesHandle, Timestamp, Op)]) -> Result<Ack> {
        let shared = &self.shared;
        let result = (|| {
            check_batch(points.iter().map(|p| &p.2))?;
            shared.check_space()?;
            let points: Vec<SlotPoint> = points
                .iter()
                .map(|(h, timestamp, op)| SlotPoint {
                    series: h.0,
                    timestamp: *timestamp,
                    op: op.clone(),
                })
                .collect();
            let mut defined = lock(&shared.writer);
            let result = shared.commit(&mut defined, &points);
            drop(defined);
            shared.acknowledge(result?, points.len())
        })();
        shared.count(&result);
        result
    }
}

fn check_batch<'a>(ops: impl ExactSizeIterator<Item = &'a Op>) -> Result<()> {
    if ops.len() > MAX_BATCH_POINTS {
        return Err(Error::BatchTooLarge { points: ops.len(), max: MAX_BATCH_POINTS });
    }
    for (index, op) in ops.enumerate() {
        op.validate().map_err(|source| Error::InvalidUpdate { index, source })?;
    }
    Ok(())
}

/// The log's segment-local series id for a memstore handle: the handle's slot index.
///
/// The one place where the two meet on the write path. The equality is an implementation
/// detail of this process's segments, chosen because it needs no table. Within a segment
/// one id names one series: the memstore gives a deleted series' slot to a new series only
/// once [`Shared::commit`] frees the deleted slots, which it does only as a new segment
/// begins, and each process life writes segments of its own (open starts a new one).
/// Replay does not rely on it: it maps ids through the segment's series-definition records
/// (`open.rs`).
fn log_id(series: SeriesRef) -> SeriesId {
    SeriesId(series.get())
}

/// What [`Shared::commit`] logged: the batch's last LSN and the level the append reached.
pub(super) struct Logged {
    last: Lsn,
    level: AckLevel,
}

impl Shared {
    /// Validates, logs and applies a batch; the caller holds the writer lock.
    pub(super) fn commit(&self, defined: &mut Defined, points: &[SlotPoint]) -> Result<Logged> {
        // Deliberate defect: a refused batch's first update is applied (unlogged) anyway.
        #[cfg(ingestor_deliberate_bugs)]
        if crate::bugs::on("apply-refused-prefix")
            && self.memstore.validate(points).is_err()
            && self.memstore.validate(&points[..1]).is_ok()
        {
            self.memstore.apply(self.wal.accepted_lsn(), &points[..1]);
        }
        self.memstore.validate(points)?;
        if points.is_empty() {
            let lsn = self.wal.accepted_lsn();
            let level =
                if self.wal.written_lsn() >= lsn { AckLevel::Written } else { AckLevel::Accepted };
            return Ok(Logged { last: lsn, level });
        }
        let mut landed: Option<(SegmentId, Vec<SeriesRef>)> = None;
        let ack = self.wal.append_with(|batch| {
            let segment = batch.segment();
            let fresh = defined.segment != Some(segment);
            let mut new_series: Vec<SeriesRef> = Vec::new();
            for p in points {
                let id = log_id(p.series).0;
                if (fresh || !defined.ids.contains(id)) && defined.batch.insert(id) {
                    new_series.push(p.series);
                }
            }
            for &s in &new_series {
                defined.batch.remove(log_id(s).0);
            }
            if !new_series.is_empty() {
                batch.push_with(RecordType::SeriesDefs as u8, |buf| {
                    begin_series_defs(new_series.len(), buf)
                        .expect("no more definitions than points");
                    let written =
                        self.memstore.with_key_parts(&new_series, |series, name, labels| {
                            put_series_def(log_id(series), name, labels.iter().copied(), buf);
                        });
                    // Validation just proved every handle live, under the writer lock that
                    // every delete also takes.
                    assert_eq!(written, new_series.len(), "validated: every series is live");
                })?;
            }
            batch.push_with(RecordType::Batch as u8, |buf| {
                let logged = points.iter().map(|p| (log_id(p.series), p.timestamp, &p.op));
                encode_batch_iter(logged, buf).expect("validated before logging");
            })?;
            landed = Some((segment, new_series));
            Ok(())
        });
        // Deliberate defect: a batch whose append failed is applied all the same.
        #[cfg(ingestor_deliberate_bugs)]
        if ack.is_err() && crate::bugs::on("apply-failed-batch") {
            self.memstore.apply(self.wal.accepted_lsn(), points);
        }
        let ack = ack?;
        let (segment, new_series) = landed.expect("set by a successful append");
        if defined.segment != Some(segment) {
            defined.segment = Some(segment);
            defined.ids.clear();
            // Before this batch is applied: the slots it deletes stay taken in this segment.
            self.free_deleted_slots();
        }
        for s in new_series {
            defined.ids.insert(log_id(s).0);
        }
        self.memstore.apply(ack.last, points);
        Ok(Logged { last: ack.last, level: ack.level })
    }

    /// Lets new series take the slots of series deleted in earlier segments (their log ids
    /// are free again from this segment on), once they are an eighth of the slots in use:
    /// freeing passes over the label index lists that hold deleted series, so it waits
    /// until there are enough of them to pay for it.
    fn free_deleted_slots(&self) {
        let waiting = self.memstore.deleted_slots();
        if waiting > 0 && waiting >= self.memstore.slots() / 8 {
            self.memstore.free_deleted_slots();
        }
    }

    /// Waits for durability where the policy asks for it; outside the writer lock so that
    /// concurrent ingesters share syncs.
    pub(super) fn acknowledge(&self, ack: Logged, points: usize) -> Result<Ack> {
        let level = match self.config.sync_policy {
            SyncPolicy::Always if points > 0 => {
                // Deliberate defect: `Always` acknowledges before its sync, at the log's level.
                #[cfg(ingestor_deliberate_bugs)]
                if crate::bugs::on("always-ack-before-sync") {
                    return Ok(Ack { lsn: ack.last, level: ack.level, points });
                }
                self.wal.wait_durable(ack.last)?;
                AckLevel::Durable
            }
            _ => ack.level,
        };
        Ok(Ack { lsn: ack.last, level, points })
    }

    pub(super) fn count(&self, result: &Result<Ack>) {
        match result {
            Ok(ack) => {
                self.counters.batches.fetch_add(1, Relaxed);
                self.counters.points.fetch_add(ack.points as u64, Relaxed);
            }
            Err(_) => {
                self.counters.rejected.fetch_add(1, Relaxed);
            }
        }
    }
}

//! Maintenance: the background thread, snapshots (with compaction) and time-to-live expiry.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use ingestor_codec::{Lsn, Op, Timestamp};
use ingestor_memstore::SlotPoint;
use ingestor_snapshot::{SnapshotInfo, compaction_watermark};

use super::{Ingestor, Shared, SnapshotMark, lock};
use crate::error::{Error, Result};

pub(super) enum Msg {
    Snapshot(Sender<Result<Option<SnapshotInfo>>>),
    Shutdown,
}

impl Ingestor {
    /// Writes a snapshot now (and deletes the log segments it covers); `None` if nothing was
    /// logged since the last one. Ingestion goes on meanwhile, after a short pause.
    ///
    /// # Errors
    /// I/O errors of the log or the snapshot.
    pub fn snapshot(&self) -> Result<Option<SnapshotInfo>> {
        self.shared.take_snapshot()
    }

    /// Writes a snapshot of everything logged so far (unless the newest one already covers
    /// it), ends the active log segment and deletes every segment that snapshot covers: the
    /// log then holds nothing older than the snapshot, damaged bytes included. For a
    /// deliberate repair; it gives up the fall-back to older snapshots until the log grows
    /// again. Returns the snapshot the state is in and the segments deleted.
    ///
    /// # Errors
    /// I/O errors of the log or the snapshot.
    pub(crate) fn compact_all(&self) -> Result<(Option<Lsn>, Vec<ingestor_wal::SegmentId>)> {
        let s = &self.shared;
        let before = s.wal.segments();
        s.take_snapshot()?;
        let Some(lsn) = lock(&s.snapshot).lsn else {
            return Ok((None, Vec::new()));
        };
        s.wal.rotate()?;
        s.wal.delete_below(lsn.next())?;
        let after = s.wal.segments();
        Ok((Some(lsn), before.into_iter().filter(|id| !after.contains(id)).collect()))
    }

    /// Asks the background thread for a snapshot and waits for it (used by tests and tools
    /// that want the background path).
    ///
    /// # Errors
    /// As [`Ingestor::snapshot`]; [`Error::Closed`] if the thread is gone.
    pub fn snapshot_in_background(&self) -> Result<Option<SnapshotInfo>> {
        let (tx, _) = self.worker.as_ref().ok_or(Error::Closed)?;
        let (reply, answer) = crossbeam_channel::bounded(1);
        tx.send(Msg::Snapshot(reply)).map_err(|_| Error::Closed)?;
        answer.recv().map_err(|_| Error::Closed)?
    }
}

impl Shared {
    /// Freezes the state at the last LSN (a short pause of the writer), syncs the log through
    /// that LSN (a snapshot must never be durable ahead of the log), writes the snapshot,
    /// then deletes the log segments the oldest kept snapshot covers.
    pub(super) fn take_snapshot(&self) -> Result<Option<SnapshotInfo>> {
        let mut mark = lock(&self.snapshot);
        let started = Instant::now();
        // Allocated before the writer lock, so that writers never wait for the allocator.
        let room = self.memstore.freeze_room();
        let (lsn, frozen, wal_bytes) = {
            let _writer = lock(&self.writer);
            // The memstore holds every batch accepted (under `Buffered`, some may still be
            // in the log's buffer: the durability wait below writes them first).
            (self.wal.accepted_lsn(), self.memstore.freeze_in(room), self.wal.stats().bytes_written)
        };
        if mark.lsn == Some(lsn) || (mark.lsn.is_none() && lsn == Lsn::ZERO) {
            return Ok(None);
        }
        self.wal.wait_durable(lsn)?;
        let info = self.snapshots.write(lsn, (self.config.clock_ms)(), &frozen)?;
        let oldest_kept = self.snapshots.oldest_kept_lsn()?;
        // Deliberate defect: compaction deletes what the newest snapshot covers, not the
        // oldest kept, so no older snapshot can be fallen back to.
        #[cfg(ingestor_deliberate_bugs)]
        let oldest_kept = if crate::bugs::on("compact-newest") { Some(lsn) } else { oldest_kept };
        if let Some(watermark) = compaction_watermark(oldest_kept) {
            self.wal.delete_below(watermark)?;
        }
        *mark = SnapshotMark { lsn: Some(lsn), wal_bytes, at: Instant::now() };
        self.counters.snapshots.fetch_add(1, Relaxed);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.counters.last_snapshot_nanos.store(nanos, Relaxed);
        Ok(Some(info))
    }

    /// Whether the log grew past the threshold, or the interval passed with new records.
    fn snapshot_due(&self) -> bool {
        let mark = lock(&self.snapshot);
        let wal = self.wal.stats();
        let grown = wal.bytes_written.saturating_sub(mark.wal_bytes) >= self.config.snapshot_bytes;
        let new_records = mark.lsn.map_or(wal.accepted_lsn > Lsn::ZERO, |l| wal.accepted_lsn > l);
        let interval =
            self.config.snapshot_interval.is_some_and(|every| mark.at.elapsed() >= every);
        new_records && (grown || interval)
    }

    /// Deletes series idle longer than the time-to-live, logging each delete.
    fn expire(&self) -> Result<()> {
        let Some(ttl) = self.config.series_ttl else { return Ok(()) };
        let cutoff = Timestamp(
            (self.config.clock_ms)()
                .saturating_sub(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)),
        );
        let idle = self.memstore.idle_handles(cutoff);
        for chunk in idle.chunks(10_000) {
            let points: Vec<SlotPoint> = chunk
                .iter()
                .map(|&series| SlotPoint { series, timestamp: cutoff, op: Op::Delete })
                .collect();
            let mut defined = lock(&self.writer);
            // A series updated since the scan is not idle any more: skip it.
            let still_idle: Vec<SlotPoint> = points
                .into_iter()
                .filter(|p| self.memstore.last_update(p.series).is_some_and(|t| t < cutoff))
                .collect();
            let ack = self.commit(&mut defined, &still_idle)?;
            // Counted as the deletes are applied, before the writer lock goes, not after the
            // acknowledgement's wait: the churn bench once read the count 10,000 short
            // right after the last series had gone.
            self.counters.expired.fetch_add(still_idle.len() as u64, Relaxed);
            drop(defined);
            self.acknowledge(ack, still_idle.len())?;
        }
        Ok(())
    }
}

/// The background thread: snapshots on request, on log growth and on the interval; expiry.
pub(super) fn maintenance(shared: &Shared, rx: &Receiver<Msg>) {
    let note = |r: Result<()>| {
        if let Err(e) = r {
            *lock(&shared.background_error) = Some(e.to_string());
        }
    };
    loop {
        match rx.recv_timeout(shared.config.maintenance_interval) {
            Ok(Msg::Snapshot(reply)) => {
                let _ = reply.send(shared.take_snapshot());
            }
            Ok(Msg::Shutdown) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if shared.snapshot_due() {
                    note(shared.take_snapshot().map(|_| ()));
                }
                note(shared.expire());
            }
        }
    }
}

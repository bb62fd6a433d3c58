//! The outbox: a segment log (an `ingestor-wal` log of its own, under `outbox/` in the data
//! directory) of remote-write requests, each encoded once, and flush markers recording the
//! ingest-log LSN each flush covered. Byte layout in `docs/format.md` ("Outbox").

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use ingestor::{Fs, Lsn, SyncPolicy};
use ingestor_wal::{Wal, WalOptions, WalReader};

use crate::ForwardError;

/// Record type of a remote-write request: `u32` samples, `i64` oldest sample time (ms),
/// then the request body exactly as it is POSTed (snappy-compressed protobuf).
pub(crate) const REQUEST: u8 = 16;
/// Record type of a flush marker: `u64` ingest-log LSN covered, `i64` flush time (ms).
pub(crate) const FLUSH: u8 = 17;
const REQUEST_HEADER: usize = 12;

/// A request read back from the outbox.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub(crate) samples: u32,
    pub(crate) oldest_ms: i64,
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REQUEST_HEADER + self.body.len());
        out.extend_from_slice(&self.samples.to_le_bytes());
        out.extend_from_slice(&self.oldest_ms.to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    pub(crate) fn decode(payload: &[u8]) -> Option<Request> {
        let samples = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?);
        let oldest_ms = i64::from_le_bytes(payload.get(4..12)?.try_into().ok()?);
        Some(Request { samples, oldest_ms, body: payload[REQUEST_HEADER..].to_vec() })
    }
}

fn encode_flush(covered: Lsn, at_ms: i64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&covered.0.to_le_bytes());
    out[8..].copy_from_slice(&at_ms.to_le_bytes());
    out
}

fn decode_flush(payload: &[u8]) -> Option<Lsn> {
    Some(Lsn(u64::from_le_bytes(payload.get(..8)?.try_into().ok()?)))
}

/// One request's place in the outbox, for backlog figures.
#[derive(Debug, Clone, Copy)]
struct Entry {
    lsn: Lsn,
    /// Request bytes of every entry before this one (since the outbox was opened).
    before: u64,
    samples: u64,
    oldest_ms: i64,
}

#[derive(Debug, Default)]
struct Index {
    entries: std::collections::VecDeque<Entry>,
    total_bytes: u64,
    total_samples: u64,
    /// The ingest-log LSN the last flush covered.
    covered: Lsn,
    /// The outbox LSN of the last flush marker (kept when segments are deleted).
    marker: Lsn,
}

/// What waits for a destination whose next record is at `cursor`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Backlog {
    pub(crate) bytes: u64,
    pub(crate) requests: u64,
    pub(crate) samples: u64,
    /// The oldest sample's time (ms) among them.
    pub(crate) oldest_ms: Option<i64>,
}

/// The outbox log and an index of its requests.
pub(crate) struct Outbox {
    wal: Wal,
    index: Mutex<Index>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("dir", &self.wal.dir()).finish_non_exhaustive()
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, recovering it as the ingest log is recovered
    /// (a torn tail cut; damage to synced records refused), and indexes its requests.
    pub(crate) fn open(
        fs: Arc<dyn Fs>,
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<Outbox, ForwardError> {
        ingestor::create_dir_durably(&*fs, dir)
            .map_err(|e| ForwardError::io(e.op, &e.path, &e.source))?;
        let options =
            WalOptions::default().sync_policy(SyncPolicy::Os).segment_bytes_max(segment_bytes);
        let mut index = Index::default();
        let (wal, _report) =
            Wal::open_and_replay(fs, dir, options, Lsn::ZERO, |lsn, record_type, payload| {
                match record_type {
                    REQUEST => {
                        if let Some(r) = Request::decode(payload) {
                            index.push(lsn, payload.len() as u64, r.samples, r.oldest_ms);
                        }
                    }
                    FLUSH => {
                        if let Some(covered) = decode_flush(payload) {
                            index.covered = index.covered.max(covered);
                            index.marker = lsn;
                        }
                    }
                    _ => {}
                }
                Ok(())
            })
            .map_err(ForwardError::Outbox)?;
        Ok(Outbox { wal, index: Mutex::new(index) })
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The ingest-log LSN the last durable flush covered.
    pub(crate) fn covered(&self) -> Lsn {
        self.index().covered
    }

    /// The last LSN synced: what a power cut cannot take away.
    pub(crate) fn durable_lsn(&self) -> Lsn {
        self.wal.durable_lsn()
    }

    /// The LSN the next record will get.
    pub(crate) fn next_lsn(&self) -> Lsn {
        self.wal.written_lsn().next()
    }

    /// The first LSN still in the outbox.
    pub(crate) fn first_lsn(&self) -> Lsn {
        self.wal.segments().first().map_or(Lsn::FIRST, |s| s.0)
    }

    /// Appends a flush: its requests, then a marker saying it covered the ingest log up to
    /// `covered`, and syncs them. Once this returns, the flush is durable.
    pub(crate) fn append_flush(
        &self,
        requests: &[Request],
        covered: Lsn,
        now_ms: i64,
    ) -> Result<(), ForwardError> {
        let encoded: Vec<Vec<u8>> = requests.iter().map(Request::encode).collect();
        let marker = encode_flush(covered, now_ms);
        let mut records: Vec<(u8, &[u8])> = encoded.iter().map(|e| (REQUEST, &e[..])).collect();
        records.push((FLUSH, &marker));
        let ack = self.wal.append_batch(&records).map_err(ForwardError::Outbox)?;
        self.wal.sync().map_err(ForwardError::Outbox)?;
        let mut index = self.index();
        for (i, (e, r)) in encoded.iter().zip(requests).enumerate() {
            index.push(Lsn(ack.first.0 + i as u64), e.len() as u64, r.samples, r.oldest_ms);
        }
        index.covered = index.covered.max(covered);
        index.marker = ack.last;
        Ok(())
    }

    /// A reader of the records from `from` on (from the first one kept, if `from` was
    /// deleted).
    pub(crate) fn reader(&self, from: Lsn) -> Result<WalReader, ForwardError> {
        let from = from.max(self.first_lsn()).min(self.next_lsn());
        self.wal.reader(from).map_err(ForwardError::Outbox)
    }

    /// Request bytes waiting from `cursor` on (O(log n): what writes check).
    pub(crate) fn pending_bytes(&self, cursor: Lsn) -> u64 {
        let index = self.index();
        let at = index.entries.partition_point(|e| e.lsn < cursor);
        index.entries.get(at).map_or(0, |first| index.total_bytes - first.before)
    }

    /// What waits from `cursor` on.
    pub(crate) fn backlog(&self, cursor: Lsn) -> Backlog {
        let index = self.index();
        let at = index.entries.partition_point(|e| e.lsn < cursor);
        let Some(first) = index.entries.get(at) else {
            return Backlog::default();
        };
        let samples = index.entries.iter().skip(at).map(|e| e.samples).sum();
        Backlog {
            bytes: index.total_bytes - first.before,
            requests: (index.entries.len() - at) as u64,
            samples,
            oldest_ms: index.entries.iter().skip(at).map(|e| e.oldest_ms).min(),
        }
    }

    /// Deletes the segments wholly below `watermark` (every destination's cursor), keeping
    /// the one with the last flush marker. Returns how many were deleted.
    pub(crate) fn delete_below(&self, watermark: Lsn) -> Result<usize, ForwardError> {
        let keep = watermark.min(self.index().marker);
        let deleted = self.wal.delete_below(keep).map_err(ForwardError::Outbox)?;
        if !deleted.is_empty() {
            let first = self.first_lsn();
            let mut index = self.index();
            while index.entries.front().is_some_and(|e| e.lsn < first) {
                index.entries.pop_front();
            }
        }
        Ok(deleted.len())
    }

    /// Samples appended since the outbox was opened (those it held then included).
    pub(crate) fn total_samples(&self) -> u64 {
        self.index().total_samples
    }
}

impl Index {
    fn push(&mut self, lsn: Lsn, bytes: u64, samples: u32, oldest_ms: i64) {
        self.entries.push_back(Entry {
            lsn,
            before: self.total_bytes,
            samples: u64::from(samples),
            oldest_ms,
        });
        self.total_bytes += bytes;
        self.total_samples += u64::from(samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingestor::StdFs;

    fn req(samples: u32, oldest_ms: i64, body: &[u8]) -> Request {
        Request { samples, oldest_ms, body: body.to_vec() }
    }

    #[test]
    fn flushes_survive_reopen_with_their_backlog_and_coverage() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn Fs> = Arc::new(StdFs::new());
        let outbox = Outbox::open(Arc::clone(&fs), dir.path(), 64 << 10).unwrap();
        assert_eq!(outbox.covered(), Lsn::ZERO);
        outbox.append_flush(&[req(2, 100, b"ab"), req(3, 50, b"cde")], Lsn(7), 1).unwrap();
        outbox.append_flush(&[req(1, 300, b"f")], Lsn(9), 2).unwrap();
        let all = outbox.backlog(Lsn::FIRST);
        assert_eq!((all.requests, all.samples, all.oldest_ms), (3, 6, Some(50)));
        assert_eq!(all.bytes, 3 * 12 + 6);
        // LSNs: 1, 2 requests, 3 marker, 4 request, 5 marker.
        assert_eq!(outbox.backlog(Lsn(3)).requests, 1);
        assert_eq!(outbox.backlog(Lsn(6)), Backlog::default());
        drop(outbox);
        let outbox = Outbox::open(fs, dir.path(), 64 << 10).unwrap();
        assert_eq!(outbox.covered(), Lsn(9));
        assert_eq!(outbox.backlog(Lsn::FIRST), all);
        let read: Vec<_> = outbox.reader(Lsn(2)).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(
            read.iter().map(|r| (r.lsn.0, r.record_type)).collect::<Vec<_>>(),
            [(2, REQUEST), (3, FLUSH), (4, REQUEST), (5, FLUSH)]
        );
        assert_eq!(Request::decode(&read[0].payload).unwrap(), req(3, 50, b"cde"));
    }
}

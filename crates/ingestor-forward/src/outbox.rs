//! The outbox: a segment log (an `ingestor-wal` log of its own, under `outbox/` in the data
//! directory) of remote-write requests, each encoded once, and flush markers recording the
//! ingest-log LSN each flush covered. Byte layout in `docs/format.md` ("Outbox").

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use ingestor::{Fs, Lsn, SyncPolicy};
use ingestor_wal::{Wal, WalOptions, WalReader};

use crate::ForwardError;

/// Record type of a remote-write request without a shard (written before shards; read as
/// shard 0): `u32` samples, `i64` oldest sample time (ms), then the request body exactly as
/// it is POSTed (snappy-compressed protobuf).
pub(crate) const REQUEST: u8 = 16;
/// Record type of a flush marker: `u64` ingest-log LSN covered, `i64` flush time (ms).
pub(crate) const FLUSH: u8 = 17;
/// Record type of a remote-write request of one shard: `u16` shard, `u16` shard count when
/// written, then as [`REQUEST`].
pub(crate) const SHARD_REQUEST: u8 = 18;
const REQUEST_HEADER: usize = 12;

/// A request read back from the outbox.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    /// The shard of its series (their key's hash modulo `shards`).
    pub(crate) shard: u16,
    /// The shard count when it was written (1 for a request without a shard).
    pub(crate) shards: u16,
    pub(crate) samples: u32,
    pub(crate) oldest_ms: i64,
    pub(crate) body: Vec<u8>,
}

impl Request {
    /// The payload of a [`SHARD_REQUEST`] record.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + REQUEST_HEADER + self.body.len());
        out.extend_from_slice(&self.shard.to_le_bytes());
        out.extend_from_slice(&self.shards.to_le_bytes());
        out.extend_from_slice(&self.samples.to_le_bytes());
        out.extend_from_slice(&self.oldest_ms.to_le_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// A request from a record's type and payload: `None` for another record type or a
    /// payload too short for its header.
    pub(crate) fn decode(record_type: u8, payload: &[u8]) -> Option<Request> {
        let (shard, shards, samples, oldest_ms) = Request::peek(record_type, payload)?;
        let header = if record_type == SHARD_REQUEST { 4 } else { 0 } + REQUEST_HEADER;
        Some(Request { shard, shards, samples, oldest_ms, body: payload[header..].to_vec() })
    }

    /// The shard and header of a request record without copying its body.
    /// The shard, shard count, samples and oldest time of a request record.
    fn peek(record_type: u8, payload: &[u8]) -> Option<(u16, u16, u32, i64)> {
        let u16_at = |at: usize| payload.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let (shard, shards, rest) = match record_type {
            REQUEST => (0, 1, payload),
            SHARD_REQUEST => (u16_at(0)?, u16_at(2)?, payload.get(4..)?),
            _ => return None,
        };
        // A shard outside its count is damage (a checksummed record cannot hold it).
        if shard >= shards {
            return None;
        }
        let samples = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
        let oldest_ms = i64::from_le_bytes(rest.get(4..12)?.try_into().ok()?);
        Some((shard, shards, samples, oldest_ms))
    }
}

/// Which stored shards a sender takes: shard `s` belongs to lane `s % lanes` (so that an
/// outbox written with another shard count is still sent whole).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lane {
    pub(crate) index: u16,
    pub(crate) of: u16,
}

impl Lane {
    /// Every shard: the whole outbox.
    #[cfg(test)]
    pub(crate) const ALL: Lane = Lane { index: 0, of: 1 };

    pub(crate) fn takes(self, shard: u16) -> bool {
        shard % self.of == self.index
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
    /// The shard count it was written with.
    shards: u16,
}

/// The requests of one stored shard, in LSN order.
#[derive(Debug, Default)]
struct ShardIndex {
    entries: std::collections::VecDeque<Entry>,
    total_bytes: u64,
}

#[derive(Debug, Default)]
struct Index {
    shards: std::collections::BTreeMap<u16, ShardIndex>,
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

impl Backlog {
    /// Both backlogs together.
    pub(crate) fn plus(self, o: Backlog) -> Backlog {
        Backlog {
            bytes: self.bytes + o.bytes,
            requests: self.requests + o.requests,
            samples: self.samples + o.samples,
            oldest_ms: match (self.oldest_ms, o.oldest_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }
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
        // `Os` with a sync after every flush: zero-filled segments, as under the policies
        // that sync often (the default fill would choose fallocate for `Os`).
        let options = WalOptions::default()
            .sync_policy(SyncPolicy::Os)
            .segment_fill(ingestor_wal::SegmentFill::Zeros)
            // Synced at every flush and read soon after by the senders: no write-back hints
            // (they would drop the synced pages the senders are about to read).
            .writeback_ahead(false)
            .segment_bytes_max(segment_bytes);
        let mut index = Index::default();
        let (wal, _report) =
            Wal::open_and_replay(fs, dir, options, Lsn::ZERO, |lsn, record_type, payload| {
                match record_type {
                    REQUEST | SHARD_REQUEST => {
                        if let Some((shard, shards, samples, oldest_ms)) =
                            Request::peek(record_type, payload)
                        {
                            let bytes = payload.len() as u64;
                            index.push((shard, shards), lsn, bytes, samples, oldest_ms);
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
        let mut records: Vec<(u8, &[u8])> =
            encoded.iter().map(|e| (SHARD_REQUEST, &e[..])).collect();
        records.push((FLUSH, &marker));
        let ack = self.wal.append_batch(&records).map_err(ForwardError::Outbox)?;
        self.wal.sync().map_err(ForwardError::Outbox)?;
        let mut index = self.index();
        for (i, (e, r)) in encoded.iter().zip(requests).enumerate() {
            let lsn = Lsn(ack.first.0 + i as u64);
            index.push((r.shard, r.shards), lsn, e.len() as u64, r.samples, r.oldest_ms);
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

    /// Request bytes of `lane` waiting from `cursor` on (O(log n) per stored shard: what
    /// writes check).
    pub(crate) fn pending_bytes(&self, lane: Lane, cursor: Lsn) -> u64 {
        let index = self.index();
        index
            .shards
            .iter()
            .filter(|(s, _)| lane.takes(**s))
            .map(|(_, shard)| {
                let at = shard.entries.partition_point(|e| e.lsn < cursor);
                shard.entries.get(at).map_or(0, |first| shard.total_bytes - first.before)
            })
            .sum()
    }

    /// What of `lane` waits from `cursor` on.
    pub(crate) fn backlog(&self, lane: Lane, cursor: Lsn) -> Backlog {
        let index = self.index();
        let mut b = Backlog::default();
        for (_, shard) in index.shards.iter().filter(|(s, _)| lane.takes(**s)) {
            let at = shard.entries.partition_point(|e| e.lsn < cursor);
            let Some(first) = shard.entries.get(at) else {
                continue;
            };
            b = b.plus(Backlog {
                bytes: shard.total_bytes - first.before,
                requests: (shard.entries.len() - at) as u64,
                samples: shard.entries.iter().skip(at).map(|e| e.samples).sum(),
                oldest_ms: shard.entries.iter().skip(at).map(|e| e.oldest_ms).min(),
            });
        }
        b
    }

    /// Deletes the segments wholly below `watermark` (every destination's cursor), keeping
    /// the one with the last flush marker. Returns how many were deleted.
    pub(crate) fn delete_below(&self, watermark: Lsn) -> Result<usize, ForwardError> {
        let keep = watermark.min(self.index().marker);
        let deleted = self.wal.delete_below(keep).map_err(ForwardError::Outbox)?;
        if !deleted.is_empty() {
            let first = self.first_lsn();
            let mut index = self.index();
            for shard in index.shards.values_mut() {
                while shard.entries.front().is_some_and(|e| e.lsn < first) {
                    shard.entries.pop_front();
                }
            }
        }
        Ok(deleted.len())
    }

    /// Where the shard layout changes among the requests from `from` on, the next request
    /// (this run's layout, `shards`) included: the LSN of each first request written with
    /// another shard count than the request before it. A destination's senders send
    /// nothing at or above such a boundary before every shard has stored a cursor past it, so that a
    /// series that a new count moved to another shard keeps its order.
    pub(crate) fn layout_boundaries(&self, shards: u16, from: Lsn) -> Vec<Lsn> {
        let mut layouts: Vec<(Lsn, u16)> = {
            let index = self.index();
            index
                .shards
                .values()
                .flat_map(|s| s.entries.iter().filter(|e| e.lsn >= from))
                .map(|e| (e.lsn, e.shards))
                .collect()
        };
        layouts.sort_unstable();
        layouts.push((self.next_lsn(), shards));
        layouts.windows(2).filter(|w| w[0].1 != w[1].1).map(|w| w[1].0).collect()
    }

    /// Samples appended since the outbox was opened (those it held then included).
    pub(crate) fn total_samples(&self) -> u64 {
        self.index().total_samples
    }
}

impl Index {
    fn push(
        &mut self,
        (shard, shards): (u16, u16),
        lsn: Lsn,
        bytes: u64,
        samples: u32,
        oldest_ms: i64,
    ) {
        let s = self.shards.entry(shard).or_default();
        s.entries.push_back(Entry {
            lsn,
            before: s.total_bytes,
            samples: u64::from(samples),
            oldest_ms,
            shards,
        });
        s.total_bytes += bytes;
        self.total_samples += u64::from(samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingestor::StdFs;

    fn req(samples: u32, oldest_ms: i64, body: &[u8]) -> Request {
        Request { shard: 0, shards: 1, samples, oldest_ms, body: body.to_vec() }
    }

    #[test]
    fn flushes_survive_reopen_with_their_backlog_and_coverage() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn Fs> = Arc::new(StdFs::new());
        let outbox = Outbox::open(Arc::clone(&fs), dir.path(), 64 << 10).unwrap();
        assert_eq!(outbox.covered(), Lsn::ZERO);
        outbox.append_flush(&[req(2, 100, b"ab"), req(3, 50, b"cde")], Lsn(7), 1).unwrap();
        outbox.append_flush(&[req(1, 300, b"f")], Lsn(9), 2).unwrap();
        let all = outbox.backlog(Lane::ALL, Lsn::FIRST);
        assert_eq!((all.requests, all.samples, all.oldest_ms), (3, 6, Some(50)));
        assert_eq!(all.bytes, 3 * 16 + 6);
        // LSNs: 1, 2 requests, 3 marker, 4 request, 5 marker.
        assert_eq!(outbox.backlog(Lane::ALL, Lsn(3)).requests, 1);
        assert_eq!(outbox.backlog(Lane::ALL, Lsn(6)), Backlog::default());
        drop(outbox);
        let outbox = Outbox::open(fs, dir.path(), 64 << 10).unwrap();
        assert_eq!(outbox.covered(), Lsn(9));
        assert_eq!(outbox.backlog(Lane::ALL, Lsn::FIRST), all);
        let read: Vec<_> = outbox.reader(Lsn(2)).unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(
            read.iter().map(|r| (r.lsn.0, r.record_type)).collect::<Vec<_>>(),
            [(2, SHARD_REQUEST), (3, FLUSH), (4, SHARD_REQUEST), (5, FLUSH)]
        );
        assert_eq!(
            Request::decode(read[0].record_type, &read[0].payload).unwrap(),
            req(3, 50, b"cde")
        );
    }

    #[test]
    fn lanes_count_only_their_shards_and_old_requests_are_shard_0() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn Fs> = Arc::new(StdFs::new());
        let outbox = Outbox::open(Arc::clone(&fs), dir.path(), 64 << 10).unwrap();
        let shard =
            |shard: u16, samples: u32| Request { shard, shards: 4, ..req(samples, 10, b"xy") };
        // LSNs 1..=4 requests of shards 0, 1, 2, 3; 5 the marker.
        outbox
            .append_flush(&[shard(0, 1), shard(1, 2), shard(2, 4), shard(3, 8)], Lsn(4), 1)
            .unwrap();
        let lane = |index, of| Lane { index, of };
        assert_eq!(outbox.backlog(lane(1, 4), Lsn::FIRST).samples, 2);
        // Read with two lanes (the shard count went from 4 to 2): shards 1 and 3 in lane 1.
        assert_eq!(outbox.backlog(lane(1, 2), Lsn::FIRST).samples, 10);
        assert_eq!(outbox.backlog(lane(1, 2), Lsn(3)).samples, 8);
        assert_eq!(outbox.backlog(lane(0, 2), Lsn::FIRST).samples, 5);
        assert_eq!(outbox.pending_bytes(lane(0, 2), Lsn(2)), 16 + 2);
        assert_eq!(outbox.pending_bytes(Lane::ALL, Lsn::FIRST), 4 * (16 + 2));
        // Written with 4 shards: a boundary before the next request for any other count.
        assert_eq!(outbox.layout_boundaries(4, Lsn::FIRST), []);
        assert_eq!(outbox.layout_boundaries(2, Lsn::FIRST), [Lsn(6)]);
        assert_eq!(outbox.layout_boundaries(2, Lsn(6)), []);
        // Then two requests with 2 shards (LSNs 6, 7; marker 8), and this run has 3.
        let two = Request { shards: 2, ..shard(1, 1) };
        outbox.append_flush(&[two.clone(), two], Lsn(5), 2).unwrap();
        assert_eq!(outbox.layout_boundaries(3, Lsn(2)), [Lsn(6), Lsn(9)]);
        assert_eq!(outbox.layout_boundaries(2, Lsn(2)), [Lsn(6)]);
        // A request record of the first layout (no shard) decodes as shard 0.
        let mut old = 5u32.to_le_bytes().to_vec();
        old.extend_from_slice(&7i64.to_le_bytes());
        old.extend_from_slice(b"body");
        assert_eq!(
            Request::decode(REQUEST, &old).unwrap(),
            Request { shard: 0, shards: 1, samples: 5, oldest_ms: 7, body: b"body".to_vec() }
        );
        assert!(Request::decode(SHARD_REQUEST, &[1, 0, 5]).is_none());
        let mut beyond = vec![4, 0, 4, 0];
        beyond.extend_from_slice(&old);
        assert!(Request::decode(SHARD_REQUEST, &beyond).is_none(), "shard 4 of 4");
        assert!(Request::decode(FLUSH, &old).is_none());
    }
}

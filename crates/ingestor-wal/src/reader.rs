//! Readers: every record from an LSN on, across segments, while appends continue.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use ingestor_codec::{Lsn, SEGMENT_HEADER_LEN};

use crate::error::{Result, WalError};
use crate::segment::{Cursor, Found, SegmentId};
use crate::writer::{Shared, lock};

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalRecord {
    /// Its LSN.
    pub lsn: Lsn,
    /// Its record type.
    pub record_type: u8,
    /// Its payload (decompressed).
    pub payload: Vec<u8>,
}

/// An iterator over the records of a log from an LSN on. It yields every record written
/// before each call to `next`, then `None`; call `next` again later to see newer records.
/// Damage yields one error, then `None`.
pub struct WalReader {
    shared: Arc<Shared>,
    segment: SegmentId,
    cursor: Option<Cursor>,
    offset: u64,
    next: Lsn,
    failed: bool,
    /// The writer's undo generation when this reader last read the file.
    generation: u64,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("segment", &self.segment)
            .field("next", &self.next)
            .finish()
    }
}

impl WalReader {
    pub(crate) fn new(shared: Arc<Shared>, from: Lsn) -> Result<WalReader> {
        let segments = lock(&shared.segments).clone();
        let written = Lsn(shared.written.load(Ordering::Acquire));
        let first = segments.first().map_or(Lsn::FIRST, |s| s.0);
        let from = from.max(Lsn::FIRST);
        if from < first || from > written.next() {
            return Err(WalError::LsnOutOfRange { requested: from, first, last: written });
        }
        let segment = *segments.iter().rev().find(|s| s.0 <= from).expect("from >= first segment");
        let mut reader = WalReader {
            shared: Arc::clone(&shared),
            segment,
            cursor: None,
            offset: SEGMENT_HEADER_LEN as u64,
            next: segment.0,
            failed: false,
            generation: shared.undo_generation.load(Ordering::Acquire),
        };
        // Skip the records of the segment that come before `from`.
        while reader.next < from {
            match reader.next() {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(reader)
    }

    /// The LSN of the next record this reader will yield.
    #[must_use]
    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    fn read_next(&mut self) -> Result<Option<WalRecord>> {
        let mut refreshed = false;
        loop {
            // Bytes buffered before a failed write was undone may be a frame that was cut.
            let generation = self.shared.undo_generation.load(Ordering::Acquire);
            if generation != self.generation {
                self.generation = generation;
                self.cursor = None;
            }
            let written = Lsn(self.shared.written.load(Ordering::Acquire));
            if self.next > written {
                return Ok(None);
            }
            let cursor = match &mut self.cursor {
                Some(c) => c,
                None => self
                    .cursor
                    .insert(Cursor::open(&*self.shared.fs, self.shared.path(self.segment))?),
            };
            let found = match cursor.frame(self.offset) {
                Ok(found) => found,
                // An undo shrinks the file for a moment: read again once.
                Err(WalError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::UnexpectedEof && !refreshed =>
                {
                    self.cursor = None;
                    refreshed = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let problem = match found {
                Found::Frame { header, payload } if header.lsn == self.next => {
                    self.offset += header.frame_len() as u64;
                    self.next = self.next.next();
                    return Ok(Some(WalRecord {
                        lsn: header.lsn,
                        record_type: header.record_type,
                        payload: payload.into_owned(),
                    }));
                }
                Found::Frame { header, .. } => format!("found LSN {}", header.lsn),
                Found::End => "the segment's data ends there".to_string(),
                Found::Bad(cause) => cause.to_string(),
            };
            // The log may have moved on to the next segment.
            let following =
                lock(&self.shared.segments).iter().find(|s| s.0 > self.segment.0).copied();
            if let Some(following) = following.filter(|f| f.0 == self.next) {
                self.segment = following;
                self.cursor = None;
                self.offset = SEGMENT_HEADER_LEN as u64;
                refreshed = false;
                continue;
            }
            // The record was written after this cursor buffered the file: read again once.
            if !refreshed {
                self.cursor = None;
                refreshed = true;
                continue;
            }
            return Err(WalError::UnexpectedFile {
                path: self.shared.path(self.segment),
                reason: format!(
                    "no valid record with LSN {} at byte {} ({problem})",
                    self.next, self.offset
                ),
            });
        }
    }
}

impl Iterator for WalReader {
    type Item = Result<WalRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.read_next() {
            Ok(Some(r)) => Some(Ok(r)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

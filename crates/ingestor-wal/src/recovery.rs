//! Recovery: scan every segment, check every frame and the LSN chain, tell a torn tail from
//! corruption in the middle, apply the recovery mode, and hand valid records to a callback.
//!
//! The rules are those of `docs/format.md` ("Segment files", "Recovery").

use std::path::{Path, PathBuf};
use std::time::Instant;

use ingestor_codec::{DecodeError, DecodeErrorKind, FrameHeader, Lsn, SEGMENT_HEADER_LEN, Section};
use ingestor_fs::{Fs, OpenMode};

use crate::error::{Result, WalError};
use crate::inspect::FrameInfo;
use crate::options::{RecoveryMode, WalOptions};
use crate::report::{Corruption, CorruptionAction, RecoveryReport, Truncation};
use crate::segment::{Cursor, Found, QUARANTINE_DIR, SegmentId, list_segments};

/// The callback that receives each valid record with an LSN at or above the replay start.
pub(crate) type OnRecord<'a> =
    &'a mut dyn FnMut(&FrameInfo, &[u8]) -> std::result::Result<(), crate::ReplayError>;

/// Called before recovery's first repair, and again before a later one once more records
/// were handed over; its error stops recovery there (see
/// [`crate::Wal::open_and_replay_frames_until_repair`]).
pub(crate) type BeforeRepair<'a> =
    &'a mut dyn FnMut() -> std::result::Result<(), crate::ReplayError>;

/// What recovery leaves for the writer.
pub(crate) struct Recovered {
    pub(crate) report: RecoveryReport,
    /// The segments that remain, oldest first.
    pub(crate) segments: Vec<SegmentId>,
    /// The LSN the next record gets.
    pub(crate) next_lsn: Lsn,
    /// Where appends continue in the last segment, if its tail was checked and cut durably,
    /// or is to be cut before the first append (`None`: start a new segment).
    pub(crate) tail_offset: Option<u64>,
    /// Whether the bytes of the last segment past `tail_offset`, zeros as far as recovery
    /// read and never read beyond, are still to be zeroed durably before anything is
    /// appended there ([`crate::writer::Shared::cut_recovered_tail`]).
    pub(crate) tail_cut_pending: bool,
    /// Whether the last segment kept still says `follows_unsynced` in its header: a close a
    /// process kill cut short, which the open finishes.
    pub(crate) last_unsealed: bool,
}

/// How far past a damaged frame recovery looks for LSNs of later valid frames.
const RESYNC_LSN_WINDOW: u64 = 1 << 32;
/// How far past the end of the data in the last segment recovery reads, looking for torn
/// bytes. Beyond it, bytes are never read: they are zeroed durably before the first append
/// after the end (a log that is only read is left as it is).
pub(crate) const TAIL_WINDOW: u64 = 4 << 20;

/// Damage found at `offset` of a segment while expecting LSN `lsn`.
struct Damage {
    offset: u64,
    lsn: Lsn,
    cause: DecodeError,
}

impl Damage {
    /// Zeros at `offset` where the frame of LSN `lsn` should start.
    fn zeroed(offset: u64, lsn: u64) -> Damage {
        Damage {
            offset,
            lsn: Lsn(lsn),
            cause: DecodeError {
                section: Section::Frame,
                offset: 0,
                kind: DecodeErrorKind::Zeroed,
            },
        }
    }

    /// The error of [`RecoveryMode::Strict`], which refuses a torn tail too.
    fn torn(self, path: &Path) -> WalError {
        WalError::TornTail {
            path: path.to_path_buf(),
            offset: self.offset,
            lsn: self.lsn,
            cause: self.cause,
        }
    }

    /// The error of a mode that refuses this damage.
    fn refused(self, path: &Path) -> WalError {
        WalError::Corrupt {
            path: path.to_path_buf(),
            offset: self.offset,
            lsn: self.lsn,
            cause: self.cause,
        }
    }
}

enum Next {
    /// Go on with the next segment.
    Continue,
    /// The log ends here (later segments, if any, were dropped).
    Stop,
}

pub(crate) fn recover<'g>(
    fs: &dyn Fs,
    dir: &Path,
    options: &WalOptions,
    replay_from: Lsn,
    dry_run: bool,
    on_record: OnRecord<'_>,
    before_repair: Option<BeforeRepair<'g>>,
) -> Result<Recovered> {
    let started = Instant::now();
    let ids = list_segments(fs, dir)?;
    let mut r = Recovery {
        fs,
        dir,
        options,
        replay_from,
        dry_run,
        on_record,
        before_repair,
        handed: Lsn::ZERO,
        approved: None,
        report: RecoveryReport::new(options.recovery_mode),
        ids,
        kept: Vec::new(),
        expected: None,
        skipping_from: None,
        tail_offset: None,
        tail_cut_pending: false,
        next_hint: None,
        flagged: None,
    };
    let mut i = 0;
    while i < r.ids.len() {
        match r.segment(i)? {
            Next::Continue => i += 1,
            Next::Stop => break,
        }
    }
    // Never reissue an LSN a removed segment may have held.
    let next_lsn = match (r.expected, r.next_hint) {
        (Some(a), Some(b)) => Lsn(a.max(b)),
        (a, b) => a.or(b).map_or(Lsn::FIRST, Lsn),
    };
    // An unchecked last segment that holds no record would share the new segment's name:
    // reuse it, cut back to its header.
    if r.tail_offset.is_none()
        && let Some(&last) = r.kept.last()
        && last.0 == next_lsn
    {
        r.zero_beyond(last, SEGMENT_HEADER_LEN as u64)?;
        r.tail_offset = Some(SEGMENT_HEADER_LEN as u64);
    }
    r.report.duration = started.elapsed();
    let last_unsealed = r.flagged.is_some() && r.kept.last().copied() == r.flagged;
    Ok(Recovered {
        report: r.report,
        segments: r.kept,
        next_lsn,
        // Only where appends continue, and never in a dry run (which appends nothing).
        tail_cut_pending: r.tail_cut_pending && r.tail_offset.is_some() && !dry_run,
        tail_offset: r.tail_offset,
        last_unsealed,
    })
}

struct Recovery<'a, 'g> {
    fs: &'a dyn Fs,
    dir: &'a Path,
    options: &'a WalOptions,
    replay_from: Lsn,
    /// Find and report, change nothing: no cut, removal or quarantine copy.
    dry_run: bool,
    on_record: OnRecord<'a>,
    /// Asked before repairs (see [`Recovery::before_repair`]).
    before_repair: Option<BeforeRepair<'g>>,
    /// The LSN of the last record handed to `on_record`.
    handed: Lsn,
    /// `handed` when `before_repair` last allowed a repair.
    approved: Option<Lsn>,
    report: RecoveryReport,
    ids: Vec<SegmentId>,
    kept: Vec<SegmentId>,
    /// The LSN the next valid frame must have (`None` before the first segment).
    expected: Option<u64>,
    /// In skip mode: LSNs from here were lost up to the next segment's first LSN.
    skipping_from: Option<Lsn>,
    tail_offset: Option<u64>,
    /// See [`Recovered::tail_cut_pending`].
    tail_cut_pending: bool,
    /// The next LSN, learnt from the name of a removed segment when none remains.
    next_hint: Option<u64>,
    /// The last segment read whose header says `follows_unsynced`.
    flagged: Option<SegmentId>,
}

impl Recovery<'_, '_> {
    fn path(&self, id: SegmentId) -> PathBuf {
        self.dir.join(id.file_name())
    }

    fn mode(&self) -> RecoveryMode {
        self.options.recovery_mode
    }

    /// Before each repair: the caller's word that every record handed over so far applied
    /// (see [`BeforeRepair`]), asked again only once more records were handed over since
    /// (skip mode goes on reading after a repair). Not in a dry run, which changes nothing.
    fn before_repair(&mut self) -> Result<()> {
        if self.dry_run || self.approved == Some(self.handed) {
            return Ok(());
        }
        let Some(gate) = self.before_repair.as_mut() else { return Ok(()) };
        gate().map_err(|source| WalError::Replay { lsn: self.handed, source })?;
        self.approved = Some(self.handed);
        Ok(())
    }

    fn segment(&mut self, i: usize) -> Result<Next> {
        let id = self.ids[i];
        let is_last = i + 1 == self.ids.len();
        let path = self.path(id);
        let mut cur = Cursor::open(self.fs, path.clone())?;
        self.report.segments_scanned += 1;

        let header = match cur.header()? {
            Ok(h) if h.first_lsn == id.0 => h,
            Ok(h) => {
                let cause = DecodeError {
                    section: Section::Frame,
                    offset: 12,
                    kind: DecodeErrorKind::LsnMismatch { expected: id.0.0, found: h.first_lsn.0 },
                };
                return self.bad_header(i, &mut cur, is_last, cause);
            }
            Err(cause) => return self.bad_header(i, &mut cur, is_last, cause),
        };
        let first = header.first_lsn.0;
        if header.follows_unsynced {
            self.flagged = Some(id);
        }
        if let Some(skipped) = self.skipping_from.take() {
            // Skip mode lost the rest of the previous segment: the gap is known now.
            if first > skipped.0 {
                self.note_lost(skipped, Lsn(first - 1));
            }
        } else if let Some(expected) = self.expected
            && first != expected
        {
            let damage = Damage {
                offset: 0,
                lsn: Lsn(expected),
                cause: DecodeError {
                    section: Section::Frame,
                    offset: 12,
                    kind: DecodeErrorKind::LsnMismatch { expected, found: first },
                },
            };
            if first > expected && self.mode() == RecoveryMode::SkipCorrupted {
                // The records between the two segments are gone; keep this segment.
                self.report.corruptions.push(Corruption {
                    segment: id,
                    offset: 0,
                    lost: Some((Lsn(expected), Lsn(first - 1))),
                    cause: format!(
                        "segment starts at LSN {first}, the log before it ends at LSN {}",
                        expected - 1
                    ),
                    action: CorruptionAction::Skipped,
                    quarantined: Vec::new(),
                });
            } else {
                if matches!(self.mode(), RecoveryMode::TolerateTornTail | RecoveryMode::Strict)
                    && first > expected
                {
                    return Err(WalError::Gap {
                        path,
                        found: Lsn(first),
                        before: Lsn(expected - 1),
                        first: Lsn(expected),
                        last: Lsn(first - 1),
                    });
                }
                return self.middle(i, &mut cur, damage);
            }
        }
        self.expected = Some(first);
        self.scan_frames(i, &mut cur, is_last)
    }

    /// A segment whose header is damaged or names another LSN than its file name.
    fn bad_header(
        &mut self,
        i: usize,
        cur: &mut Cursor,
        is_last: bool,
        cause: DecodeError,
    ) -> Result<Next> {
        let id = self.ids[i];
        let lsn = Lsn(self.expected.unwrap_or(id.0.0));
        // Nothing in the last segment counts as durable before its header and directory
        // entry are synced: at once when it is created, or, when a rotation left the sync
        // of the segment ahead for later, once that is done (its header then rewritten
        // without the flag `follows_unsynced`), and the log's durable LSN reaches the last
        // one before it only then. A header that never reached the disk reads as zeros (the
        // file's space was preallocated or zero-filled; a sector is written whole): with
        // valid frames after it (written back before the header, while it was flagged),
        // it is a torn creation unless one of them proves, by its durable lag, that the LSN
        // before the segment was durable when it was written. Any other damage to the
        // header with a valid frame after it, such a proof, or a name that does not
        // continue the LSN chain means the header was damaged after the fact: corruption.
        let end = cur.nonzero_end(0)?;
        let zeroed = cause.kind == DecodeErrorKind::Zeroed;
        let damaged_after_the_fact =
            match cur.resync(SEGMENT_HEADER_LEN as u64, end, lsn_window(id.0.0))? {
                Some(_) if !zeroed => true,
                Some(first) => proves_durable(cur, first, end, id.0.0 - 1)?,
                None => false,
            };
        let continues_chain = self.expected.is_none_or(|e| e == id.0.0);
        if !is_last || damaged_after_the_fact || !continues_chain {
            return self.middle(i, cur, Damage { offset: 0, lsn, cause });
        }
        if self.mode() == RecoveryMode::Strict {
            return Err(WalError::TornTail {
                path: cur.path().to_path_buf(),
                offset: 0,
                lsn,
                cause,
            });
        }
        let quarantined = self.quarantine(cur, 0, end)?;
        self.remove_segment(id)?;
        self.next_hint = Some(id.0.0);
        self.report.truncations.push(Truncation {
            segment: id,
            offset: 0,
            bytes: end,
            from_lsn: lsn,
            cause: cause.to_string(),
            quarantined,
            removed_file: true,
        });
        Ok(Next::Stop)
    }

    /// Replays a valid frame with the expected LSN (if at or after the LSN replay starts
    /// from) and counts it; returns the offset of the next frame.
    #[inline]
    fn take_frame(
        &mut self,
        segment: SegmentId,
        offset: u64,
        header: &FrameHeader,
        payload: &[u8],
    ) -> Result<u64> {
        let frame_len = header.frame_len() as u64;
        if header.lsn >= self.replay_from {
            let info = FrameInfo {
                segment,
                offset,
                lsn: header.lsn,
                record_type: header.record_type,
                codec: header.codec,
                stored_len: header.payload_len,
                payload_len: payload.len(),
                durable_lag: header.durable_lag,
            };
            (self.on_record)(&info, payload)
                .map_err(|source| WalError::Replay { lsn: header.lsn, source })?;
            self.handed = header.lsn;
            self.report.replayed += 1;
        }
        self.report.records += 1;
        self.report.bytes += frame_len;
        self.report.first_lsn.get_or_insert(header.lsn);
        self.report.last_lsn = header.lsn;
        self.expected = Some(header.lsn.0 + 1);
        Ok(offset + frame_len)
    }

    fn scan_frames(&mut self, i: usize, cur: &mut Cursor, is_last: bool) -> Result<Next> {
        let id = self.ids[i];
        let mut offset = SEGMENT_HEADER_LEN as u64;
        // Where the last valid frame starts (for the deliberate defect `cut-one-frame-early`).
        #[cfg(ingestor_deliberate_bugs)]
        let mut last_frame = None;
        loop {
            let expected = self.expected.expect("set by the header");
            // Deliberate defect: in the last segment, a valid frame followed by bytes that do
            // not decode is taken for part of the torn tail (cut, never replayed).
            #[cfg(ingestor_deliberate_bugs)]
            let taken_for_torn = is_last
                && crate::bugs::on("torn-tail-takes-one-more")
                && followed_by_damage(cur, offset)?;
            #[cfg(not(ingestor_deliberate_bugs))]
            let taken_for_torn = false;
            // Most frames: whole in the cursor's buffer, stored plain, valid.
            if !taken_for_torn
                && let Some((header, payload)) = cur.plain_frame(offset)
                && header.lsn.0 == expected
            {
                #[cfg(ingestor_deliberate_bugs)]
                {
                    last_frame = Some(offset);
                }
                offset = self.take_frame(id, offset, &header, cur.held(payload))?;
                continue;
            }
            let found = if taken_for_torn {
                Found::Bad(DecodeError {
                    section: Section::Frame,
                    offset: 0,
                    kind: DecodeErrorKind::Zeroed,
                })
            } else {
                cur.frame(offset)?
            };
            let damage = match found {
                Found::Frame { header, payload } if header.lsn.0 == expected => {
                    #[cfg(ingestor_deliberate_bugs)]
                    {
                        last_frame = Some(offset);
                    }
                    offset = self.take_frame(id, offset, &header, &payload)?;
                    continue;
                }
                Found::Frame { header, .. } => Damage {
                    offset,
                    lsn: Lsn(expected),
                    cause: DecodeError {
                        section: Section::Frame,
                        offset: 10,
                        kind: DecodeErrorKind::LsnMismatch { expected, found: header.lsn.0 },
                    },
                },
                Found::End if !is_last && !self.ends_early_before_unsealed(i, expected)? => {
                    // A closed segment; its tail is not checked, so never appended to again.
                    self.kept.push(id);
                    self.tail_offset = None;
                    return Ok(Next::Continue);
                }
                // Zeros before the next segment's first LSN, and that segment still says
                // this one may be unsynced: damage, perhaps a torn tail (below).
                Found::End if !is_last => Damage::zeroed(offset, expected),
                Found::End => {
                    // Zeros mark the end; anything non-zero after them was never synced,
                    // unless a later valid frame proves otherwise.
                    if cur.nonzero_end_within(offset, TAIL_WINDOW)? == offset {
                        // Nothing torn near the end. Whatever lies further on (never read) is
                        // zeroed durably before the first append, so that no stale frame can
                        // ever follow new ones; an open that appends nothing leaves it.
                        self.tail_cut_pending = true;
                        break;
                    }
                    Damage::zeroed(offset, expected)
                }
                Found::Bad(cause) => Damage { offset, lsn: Lsn(expected), cause },
            };
            // Valid data after the damage? In a later segment it is there by construction;
            // in this one, a later frame whose durable lag shows the damaged LSN was synced.
            let end = cur.nonzero_end(damage.offset)?;
            let later = cur.resync(damage.offset + 1, end, lsn_window(expected + 1))?;
            let proven_durable = match later {
                Some(first) => proves_durable(cur, first, end, expected)?,
                None => false,
            };
            // Deliberate defect: damage in the last segment is always taken for a torn tail,
            // even when a later frame proves it was synced.
            #[cfg(ingestor_deliberate_bugs)]
            let proven_durable = proven_durable && !crate::bugs::on("tail-as-torn");
            // In the segment before the last, a torn tail too when the last segment was
            // opened before this one was synced and has not been sealed since (see
            // `Recovery::torn_close`).
            let torn_close = !is_last && !proven_durable && self.torn_close(i, expected)?;
            if (!is_last && !torn_close) || proven_durable {
                match self.middle_in_segment(i, cur, damage, later)? {
                    Some(resume) => {
                        offset = resume;
                        continue;
                    }
                    None if self.mode() == RecoveryMode::PointInTime => return Ok(Next::Stop),
                    None => {
                        self.tail_offset = None;
                        return Ok(Next::Continue);
                    }
                }
            }
            let dropped = if torn_close {
                if self.mode() == RecoveryMode::Strict {
                    return Err(damage.torn(cur.path()));
                }
                Some(self.drop_unsealed_last(i)?)
            } else {
                None
            };
            self.torn_tail(id, cur, damage)?;
            // Reported after the cut, where the log now ends: the removed segment's LSNs
            // come after it.
            self.report.truncations.extend(dropped);
            // Deliberate defect: the torn tail is cut at the start of the last good frame
            // (off by one frame), after that frame was replayed.
            #[cfg(ingestor_deliberate_bugs)]
            if let Some(at) = last_frame
                && crate::bugs::on("cut-one-frame-early")
            {
                self.cut(id, at)?;
            }
            offset = self.tail_offset.expect("set by torn_tail");
            break;
        }
        self.kept.push(id);
        self.tail_offset = Some(offset);
        Ok(Next::Continue)
    }

    /// Whether the last segment is `i + 1` and its header does not say, sealed (valid,
    /// naming its file's LSN, without `follows_unsynced`), that segment `i` was synced
    /// before anything in it counted as durable. A rotation under the policies that sync
    /// only at rotation and on demand opens the next segment before the ended one is synced
    /// (its header flagged), and seals it once that sync is done, before any of its records
    /// counts as durable.
    fn last_is_unsealed_after(&self, i: usize) -> Result<bool> {
        if i + 2 != self.ids.len() {
            return Ok(false);
        }
        let next = self.ids[i + 1];
        let mut cur = Cursor::open(self.fs, self.path(next))?;
        Ok(!matches!(cur.header()?, Ok(h) if h.first_lsn == next.0 && !h.follows_unsynced))
    }

    /// [`Found::End`] in segment `i` (not the last) at LSN `expected`: whether the last
    /// segment starts past it and is unsealed, so that the zeros may be a page of the ended
    /// segment that never reached the disk.
    fn ends_early_before_unsealed(&self, i: usize, expected: u64) -> Result<bool> {
        Ok(self.ids.get(i + 1).is_some_and(|next| next.0.0 != expected)
            && self.last_is_unsealed_after(i)?)
    }

    /// Whether damage at LSN `lsn` in segment `i` (not the last) is a torn tail: the last
    /// segment is `i + 1`, unsealed ([`Recovery::last_is_unsealed_after`]), and none of its
    /// valid frames proves by its durable lag that `lsn` had been synced (the frames of
    /// segment `i` after the damage were looked at already). Nothing after the damage was
    /// then ever acknowledged as durable.
    fn torn_close(&mut self, i: usize, lsn: u64) -> Result<bool> {
        if !self.last_is_unsealed_after(i)? {
            return Ok(false);
        }
        let next = self.ids[i + 1];
        let mut cur = Cursor::open(self.fs, self.path(next))?;
        let end = cur.nonzero_end(SEGMENT_HEADER_LEN as u64)?;
        let proven = match cur.resync(SEGMENT_HEADER_LEN as u64, end, lsn_window(next.0.0))? {
            Some(first) => proves_durable(&mut cur, first, end, lsn)?,
            None => false,
        };
        Ok(!proven)
    }

    /// A torn tail in segment `i`, before an unsealed last segment: that segment holds
    /// nothing durable and follows the tear, so it goes first (quarantined, removed; the
    /// caller reports it after the cut): a crash before the cut of segment `i` leaves it the
    /// last one, whose tear the next open finds as usual.
    fn drop_unsealed_last(&mut self, i: usize) -> Result<Truncation> {
        let next = self.ids[i + 1];
        let mut cur = Cursor::open(self.fs, self.path(next))?;
        let end = cur.nonzero_end(0)?;
        let quarantined = self.quarantine(&mut cur, 0, end)?;
        self.remove_segment(next)?;
        self.ids.truncate(i + 1);
        Ok(Truncation {
            segment: next,
            offset: 0,
            bytes: end,
            from_lsn: next.0,
            cause: "the segment before it ends in a torn tail, and this one was opened before \
                    that one was synced"
                .into(),
            quarantined,
            removed_file: true,
        })
    }

    /// Corruption inside a segment's frames. Returns where to resume in this segment
    /// (skip mode found valid frames after the damage), or `None` when the segment is done.
    fn middle_in_segment(
        &mut self,
        i: usize,
        cur: &mut Cursor,
        damage: Damage,
        later: Option<(u64, ingestor_codec::FrameHeader)>,
    ) -> Result<Option<u64>> {
        match self.mode() {
            RecoveryMode::TolerateTornTail | RecoveryMode::Strict => {
                // Deliberate defect: the refusing open drops the damaged frame and everything
                // after it anyway (what a deliberate repair would have salvaged is gone).
                #[cfg(ingestor_deliberate_bugs)]
                if crate::bugs::on("refuse-after-drop") {
                    let refused = WalError::Corrupt {
                        path: cur.path().to_path_buf(),
                        offset: damage.offset,
                        lsn: damage.lsn,
                        cause: damage.cause.clone(),
                    };
                    self.drop_from(i, cur, damage)?;
                    return Err(refused);
                }
                Err(damage.refused(cur.path()))
            }
            RecoveryMode::PointInTime => {
                self.drop_from(i, cur, damage)?;
                Ok(None)
            }
            RecoveryMode::SkipCorrupted => {
                let id = self.ids[i];
                if let Some((resume, header)) = later {
                    let q = self.quarantine(cur, damage.offset, resume)?;
                    self.report.corruptions.push(Corruption {
                        segment: id,
                        offset: damage.offset,
                        lost: Some((damage.lsn, Lsn(header.lsn.0 - 1))),
                        cause: damage.cause.to_string(),
                        action: CorruptionAction::Skipped,
                        quarantined: q.into_iter().collect(),
                    });
                    self.expected = Some(header.lsn.0);
                    Ok(Some(resume))
                } else {
                    // Nothing valid after the damage in this segment: the LSNs up to the next
                    // segment's first are lost, which that segment's header will tell.
                    let end = cur.nonzero_end(damage.offset)?;
                    let q = self.quarantine(cur, damage.offset, end)?;
                    self.report.corruptions.push(Corruption {
                        segment: id,
                        offset: damage.offset,
                        lost: None,
                        cause: damage.cause.to_string(),
                        action: CorruptionAction::Skipped,
                        quarantined: q.into_iter().collect(),
                    });
                    self.skipping_from = Some(damage.lsn);
                    self.kept.push(id);
                    Ok(None)
                }
            }
        }
    }

    /// In skip mode, completes the lost range of the last corruption once it is known.
    fn note_lost(&mut self, first: Lsn, last: Lsn) {
        if let Some(c) = self.report.corruptions.last_mut()
            && c.lost.is_none()
        {
            c.lost = Some((first, last));
        }
    }

    /// Corruption at the start of segment `i` (its header, or a gap before it).
    fn middle(&mut self, i: usize, cur: &mut Cursor, damage: Damage) -> Result<Next> {
        match self.mode() {
            RecoveryMode::TolerateTornTail | RecoveryMode::Strict => {
                Err(damage.refused(cur.path()))
            }
            RecoveryMode::PointInTime => {
                self.drop_from(i, cur, damage)?;
                Ok(Next::Stop)
            }
            RecoveryMode::SkipCorrupted => {
                // A segment without a valid header cannot be read: skip all of it. It stays in
                // the log's list (it is on disk, so deletion below a watermark can remove it),
                // and no LSN it may hold is ever issued again: the next one comes after the
                // highest LSN of a valid frame in it, and after its name.
                let id = self.ids[i];
                let end = cur.nonzero_end(0)?;
                let q = self.quarantine(cur, 0, end)?;
                let floor = damage.lsn.0.saturating_sub(1);
                let last = last_valid_lsn(cur, SEGMENT_HEADER_LEN as u64, floor)?;
                let next = last.max(id.0.0).saturating_add(1);
                self.next_hint = Some(self.next_hint.map_or(next, |h| h.max(next)));
                self.report.corruptions.push(Corruption {
                    segment: id,
                    offset: 0,
                    // The last segment has no successor to bound the loss: its own frames do.
                    lost: (i + 1 == self.ids.len())
                        .then_some((damage.lsn, Lsn(last.max(damage.lsn.0)))),
                    cause: damage.cause.to_string(),
                    action: CorruptionAction::Skipped,
                    quarantined: q.into_iter().collect(),
                });
                self.kept.push(id);
                self.tail_offset = None;
                self.skipping_from = Some(damage.lsn);
                Ok(Next::Continue)
            }
        }
    }

    /// Point-in-time: keep segment `i` up to the damage, drop everything after it.
    fn drop_from(&mut self, i: usize, cur: &mut Cursor, damage: Damage) -> Result<()> {
        let id = self.ids[i];
        let mut quarantined = Vec::new();
        let mut last_lost = last_valid_lsn(cur, damage.offset + 1, damage.lsn.0)?;
        let end = cur.nonzero_end(damage.offset)?;
        quarantined.extend(self.quarantine(cur, damage.offset, end)?);
        let later_ids = self.ids[i + 1..].to_vec();
        for &later in &later_ids {
            let mut c = Cursor::open(self.fs, self.path(later))?;
            last_lost =
                last_lost.max(last_valid_lsn(&mut c, SEGMENT_HEADER_LEN as u64, later.0.0)?);
            let end = c.nonzero_end(0)?;
            quarantined.extend(self.quarantine(&mut c, 0, end)?);
        }
        let lost_last = if last_lost >= damage.lsn.0 { last_lost } else { damage.lsn.0 };
        for &later in &later_ids {
            if !self.dry_run {
                self.before_repair()?;
                self.fs
                    .remove_file(&self.path(later))
                    .map_err(|e| WalError::io("remove", self.path(later), e))?;
            }
            self.report.removed_segments.push(later);
        }
        if damage.offset == 0 {
            self.remove_segment(id)?;
            self.next_hint = Some(damage.lsn.0);
        } else {
            self.cut(id, damage.offset)?;
            self.kept.push(id);
            self.tail_offset = Some(damage.offset);
        }
        if !self.dry_run {
            self.fs.sync_dir(self.dir).map_err(|e| WalError::io("sync_dir", self.dir, e))?;
        }
        self.report.corruptions.push(Corruption {
            segment: id,
            offset: damage.offset,
            lost: Some((damage.lsn, Lsn(lost_last))),
            cause: damage.cause.to_string(),
            action: CorruptionAction::DroppedFromHere,
            quarantined,
        });
        Ok(())
    }

    /// A torn tail at `damage.offset` of the last segment: quarantine, cut, report.
    fn torn_tail(&mut self, id: SegmentId, cur: &mut Cursor, damage: Damage) -> Result<()> {
        if self.mode() == RecoveryMode::Strict {
            return Err(WalError::TornTail {
                path: cur.path().to_path_buf(),
                offset: damage.offset,
                lsn: damage.lsn,
                cause: damage.cause,
            });
        }
        let end = cur.nonzero_end(damage.offset)?;
        let quarantined = self.quarantine(cur, damage.offset, end)?;
        self.cut(id, damage.offset)?;
        self.report.truncations.push(Truncation {
            segment: id,
            offset: damage.offset,
            bytes: end.saturating_sub(damage.offset),
            from_lsn: damage.lsn,
            cause: damage.cause.to_string(),
            quarantined,
            removed_file: false,
        });
        self.tail_offset = Some(damage.offset);
        Ok(())
    }

    /// A repair: cuts a segment at `offset` durably (see [`Recovery::zero_beyond`]), once the
    /// caller allowed repairs.
    fn cut(&mut self, id: SegmentId, offset: u64) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        self.before_repair()?;
        self.zero_beyond(id, offset)
    }

    /// Cuts a segment at `offset` durably: the bytes after it become zeros, the file keeps
    /// its preallocated length. Not a repair where nothing but zeros and never-read bytes
    /// follow the offset (an unchecked last segment holding no record, reused): nobody is
    /// asked first.
    fn zero_beyond(&self, id: SegmentId, offset: u64) -> Result<()> {
        if self.dry_run {
            return Ok(());
        }
        let path = self.path(id);
        let file =
            self.fs.open(&path, OpenMode::ReadWrite).map_err(|e| WalError::io("open", &path, e))?;
        let len = file.len().map_err(|e| WalError::io("stat", &path, e))?;
        file.set_len(offset).map_err(|e| WalError::io("truncate", &path, e))?;
        let keep = len.min(self.options.segment_bytes_max).max(offset);
        file.allocate(keep).map_err(|e| WalError::io("allocate", &path, e))?;
        file.sync_all().map_err(|e| WalError::io("sync", &path, e))
    }

    fn remove_segment(&mut self, id: SegmentId) -> Result<()> {
        if !self.dry_run {
            self.before_repair()?;
            let path = self.path(id);
            self.fs.remove_file(&path).map_err(|e| WalError::io("remove", &path, e))?;
            self.fs.sync_dir(self.dir).map_err(|e| WalError::io("sync_dir", self.dir, e))?;
        }
        self.report.removed_segments.push(id);
        Ok(())
    }

    /// Copies `[from, to)` of a segment to `quarantine/<segment>.<from>.bad` and syncs it.
    /// Nothing is copied when the range is empty or the copy already exists, or in a dry run.
    fn quarantine(&mut self, cur: &mut Cursor, from: u64, to: u64) -> Result<Option<PathBuf>> {
        if to <= from || self.dry_run {
            return Ok(None);
        }
        // Deliberate defect: the bytes are cut with no copy kept.
        #[cfg(ingestor_deliberate_bugs)]
        if crate::bugs::on("quarantine-skip") {
            return Ok(None);
        }
        self.before_repair()?;
        let qdir = self.dir.join(QUARANTINE_DIR);
        let name =
            cur.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if !self.fs.exists(&qdir).map_err(|e| WalError::io("stat", &qdir, e))? {
            self.fs.create_dir_all(&qdir).map_err(|e| WalError::io("create_dir", &qdir, e))?;
            self.fs.sync_dir(self.dir).map_err(|e| WalError::io("sync_dir", self.dir, e))?;
        }
        let bytes = cur.bytes(from, (to - from) as usize)?.to_vec();
        // A copy of these bytes may be there already (damage an earlier open of a skip mode
        // left in place, or a copy an interrupted recovery had synced): it is the copy. A
        // file of the name that holds other bytes (a copy a power cut cut short, or an
        // earlier cut at the same offset) is kept as it is, and the copy takes the next
        // free name, `<segment>.<from>.<n>.bad`.
        let mut path = qdir.join(format!("{name}.{from}.bad"));
        let mut n = 0u32;
        while self.fs.exists(&path).map_err(|e| WalError::io("stat", &path, e))? {
            let held = self.fs.read_file(&path).map_err(|e| WalError::io("read", &path, e))?;
            // Deliberate defect: a file of the name is taken for the copy, whatever it holds.
            #[cfg(ingestor_deliberate_bugs)]
            if crate::bugs::on("quarantine-trusts-name") {
                return Ok(Some(path));
            }
            if held == bytes {
                return Ok(Some(path));
            }
            n += 1;
            path = qdir.join(format!("{name}.{from}.{n}.bad"));
        }
        let file = self.fs.create(&path).map_err(|e| WalError::io("create", &path, e))?;
        file.write_at(&bytes, 0).map_err(|e| WalError::io("write", &path, e))?;
        file.sync_data().map_err(|e| WalError::io("sync", &path, e))?;
        self.fs.sync_dir(&qdir).map_err(|e| WalError::io("sync_dir", &qdir, e))?;
        Ok(Some(path))
    }
}

/// LSNs from `from` to `from + RESYNC_LSN_WINDOW`, saturating.
fn lsn_window(from: u64) -> std::ops::Range<u64> {
    from..from.saturating_add(RESYNC_LSN_WINDOW)
}

/// Whether any valid frame from `first` on (up to `end`) proves, by its durable lag, that
/// LSN `damaged` had been synced before it was written. Every later frame is looked at: the
/// proof grows stronger with each (a frame's `lsn - lag` only rises along the log).
fn proves_durable(
    cur: &mut Cursor,
    first: (u64, ingestor_codec::FrameHeader),
    end: u64,
    damaged: u64,
) -> Result<bool> {
    let mut next = Some(first);
    while let Some((offset, header)) = next {
        let lag = u64::from(header.durable_lag);
        if lag > 0 && header.lsn.0.saturating_sub(lag) >= damaged {
            return Ok(true);
        }
        let from = offset + header.frame_len() as u64;
        next = cur.resync(from, end, lsn_window(header.lsn.0.saturating_add(1)))?;
    }
    Ok(false)
}

/// The highest LSN of a valid frame found by scanning a segment from `from` (resyncing past
/// damage), or `floor` if there is none.
fn last_valid_lsn(cur: &mut Cursor, from: u64, floor: u64) -> Result<u64> {
    let mut best = floor;
    let mut at = from;
    let end = cur.nonzero_end(from)?;
    while let Some((offset, header)) = cur.resync(at, end, lsn_window(best.saturating_add(1)))? {
        best = header.lsn.0;
        at = offset + header.frame_len() as u64;
    }
    Ok(best)
}

/// Whether the frame at `offset` is valid and the bytes after it do not decode (for the
/// deliberate defect `torn-tail-takes-one-more`).
#[cfg(ingestor_deliberate_bugs)]
fn followed_by_damage(cur: &mut Cursor, offset: u64) -> Result<bool> {
    let next = match cur.frame(offset)? {
        Found::Frame { header, .. } => offset + header.frame_len() as u64,
        _ => return Ok(false),
    };
    Ok(matches!(cur.frame(next)?, Found::Bad(_)))
}

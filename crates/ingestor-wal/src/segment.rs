//! Segment files: names, creation, and a buffered cursor that reads frames from one.

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ingestor_codec::{
    Codec, DecodeError, DecodeErrorKind, FRAME_HEADER_LEN, FrameHeader, Lsn, SEGMENT_HEADER_LEN,
    SegmentHeader,
};
use ingestor_fs::{EntryKind, Fs, FsFile, OpenMode};

use crate::error::{Result, WalError};
use crate::wal::crash_points;

/// The suffix of segment file names.
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
/// The directory, inside the log directory, that holds bytes recovery set aside.
pub const QUARANTINE_DIR: &str = "quarantine";
/// How much a cursor reads at once.
const READ_CHUNK: usize = 1 << 20;

/// A segment, named by the LSN of its first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct SegmentId(pub Lsn);

impl SegmentId {
    /// The segment's file name: its first LSN zero-padded to 20 digits, so names sort.
    #[must_use]
    pub fn file_name(self) -> String {
        format!("{:020}{SEGMENT_SUFFIX}", self.0.0)
    }

    /// The segment a file name names, if it names one.
    #[must_use]
    pub fn from_file_name(name: &str) -> Option<SegmentId> {
        let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
        if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok().map(|n| SegmentId(Lsn(n)))
    }

    /// Whether the log accepts a segment with this first LSN: from 1 to
    /// [`SegmentId::MAX_FIRST_LSN`] (an open refuses a directory holding any other, with
    /// [`crate::WalError::UnexpectedFile`]).
    #[must_use]
    pub fn is_accepted(self) -> bool {
        (1..=Self::MAX_FIRST_LSN).contains(&self.0.0)
    }

    /// The largest first LSN a segment may have: far below `u64::MAX`, so that LSN arithmetic
    /// on anything read from disk cannot overflow.
    pub const MAX_FIRST_LSN: u64 = u64::MAX >> 2;
}

impl std::fmt::Display for SegmentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// The segment files of a log directory, oldest first.
pub(crate) fn list_segments(fs: &dyn Fs, dir: &Path) -> Result<Vec<SegmentId>> {
    let entries = fs.read_dir(dir).map_err(|e| WalError::io("list", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        if entry.kind != EntryKind::File || !entry.name.ends_with(SEGMENT_SUFFIX) {
            continue;
        }
        match SegmentId::from_file_name(&entry.name) {
            Some(id) if !id.is_accepted() => {
                return Err(WalError::UnexpectedFile {
                    path: dir.join(&entry.name),
                    reason: format!(
                        "a segment's first LSN must be between 1 and {}",
                        SegmentId::MAX_FIRST_LSN
                    ),
                });
            }
            Some(id) => out.push(id),
            None => {
                return Err(WalError::UnexpectedFile {
                    path: dir.join(&entry.name),
                    reason: "named like a segment but not <20 digits>.seg".into(),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What a cursor found at an offset.
pub(crate) enum Found<'a> {
    /// A valid frame.
    Frame {
        /// Its header.
        header: FrameHeader,
        /// Its payload, decompressed.
        payload: Cow<'a, [u8]>,
    },
    /// The end of the data: an all-zero header, or the end of the file exactly.
    End,
    /// A frame that does not decode: truncated, checksum mismatch, bad header fields.
    Bad(DecodeError),
}

/// Reads frames from one segment file through a buffer, so that a scan costs few reads
/// whatever the frame size.
pub(crate) struct Cursor {
    file: Box<dyn FsFile>,
    path: PathBuf,
    len: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

impl Cursor {
    pub(crate) fn open(fs: &dyn Fs, path: PathBuf) -> Result<Cursor> {
        let file = fs.open(&path, OpenMode::Read).map_err(|e| WalError::io("open", &path, e))?;
        let len = file.len().map_err(|e| WalError::io("stat", &path, e))?;
        Ok(Cursor { file, path, len, buf: Vec::new(), buf_start: 0 })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes `[offset, offset + n)`, or fewer if the file ends first.
    #[inline]
    pub(crate) fn bytes(&mut self, offset: u64, n: usize) -> Result<&[u8]> {
        let end = offset.saturating_add(n as u64).min(self.len).max(offset);
        let buf_end = self.buf_start + self.buf.len() as u64;
        if offset < self.buf_start || end > buf_end {
            self.fill(offset, end)?;
        }
        let from = (offset - self.buf_start) as usize;
        Ok(&self.buf[from..from + (end - offset) as usize])
    }

    /// Reads at least `[offset, end)` into the buffer, a chunk at a time.
    #[cold]
    fn fill(&mut self, offset: u64, end: u64) -> Result<()> {
        let want = ((end - offset) as usize).max(READ_CHUNK);
        let take = want.min(self.len.saturating_sub(offset) as usize);
        self.buf.resize(take, 0);
        self.file
            .read_exact_at(&mut self.buf, offset)
            .map_err(|e| WalError::io("read", &self.path, e))?;
        self.buf_start = offset;
        Ok(())
    }

    /// The segment header, or why it is not valid.
    pub(crate) fn header(&mut self) -> Result<std::result::Result<SegmentHeader, DecodeError>> {
        let bytes = self.bytes(0, SEGMENT_HEADER_LEN)?;
        let Some(bytes) = bytes.first_chunk::<SEGMENT_HEADER_LEN>() else {
            return Ok(Err(DecodeError {
                section: ingestor_codec::Section::Frame,
                offset: 0,
                kind: DecodeErrorKind::Truncated {
                    needed: SEGMENT_HEADER_LEN as u64,
                    available: bytes.len() as u64,
                },
            }));
        };
        Ok(SegmentHeader::decode(bytes))
    }

    /// The frame at `offset`.
    #[inline]
    pub(crate) fn frame(&mut self, offset: u64) -> Result<Found<'_>> {
        if let Some((header, payload)) = self.plain_frame(offset) {
            return Ok(Found::Frame { header, payload: Cow::Borrowed(self.held(payload)) });
        }
        self.frame_read(offset)
    }

    /// The frame at `offset` when the buffer holds it whole, stored plain (not compressed)
    /// and valid: its header, and where its payload lies in the buffer ([`Cursor::held`]).
    /// Most frames are; [`Cursor::frame`] tells about the others. Returns positions, not a
    /// borrowed slice, so that a scan's loop keeps them in registers.
    // Always inlined: returned through memory, its result costs a stall on every frame.
    #[inline(always)]
    pub(crate) fn plain_frame(&self, offset: u64) -> Option<(FrameHeader, Range<usize>)> {
        let at = usize::try_from(offset.checked_sub(self.buf_start)?).ok()?;
        let held = self.buf.get(at..)?;
        let header = FrameHeader::parse(held.first_chunk::<FRAME_HEADER_LEN>()?).ok()?;
        let whole = held.get(..header.frame_len())?;
        if header.codec != Codec::None || header.verify_frame(whole).is_err() {
            return None;
        }
        Some((header, at + FRAME_HEADER_LEN..at + header.frame_len()))
    }

    /// Bytes of the buffer, where [`Cursor::plain_frame`] said a payload lies.
    #[inline]
    pub(crate) fn held(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// [`Cursor::frame`] for a frame not whole in the buffer, or not valid: reads what it
    /// needs, and tells what is wrong.
    fn frame_read(&mut self, offset: u64) -> Result<Found<'_>> {
        let head = self.bytes(offset, FRAME_HEADER_LEN)?;
        let Some(head) = head.first_chunk::<FRAME_HEADER_LEN>() else {
            if head.iter().all(|&b| b == 0) {
                return Ok(Found::End);
            }
            let available = head.len() as u64;
            return Ok(Found::Bad(frame_error(
                0,
                DecodeErrorKind::Truncated { needed: FRAME_HEADER_LEN as u64, available },
            )));
        };
        let header = match FrameHeader::parse(head) {
            Ok(h) => h,
            Err(e) if e.kind == DecodeErrorKind::Zeroed => return Ok(Found::End),
            Err(e) => return Ok(Found::Bad(e)),
        };
        let frame_len = header.frame_len();
        let available = self.len.saturating_sub(offset + FRAME_HEADER_LEN as u64);
        if header.payload_len as u64 > available {
            return Ok(Found::Bad(frame_error(
                FRAME_HEADER_LEN,
                DecodeErrorKind::Truncated { needed: u64::from(header.payload_len), available },
            )));
        }
        let whole = self.bytes(offset, frame_len)?;
        if let Err(e) = header.verify_frame(whole) {
            return Ok(Found::Bad(e));
        }
        match header.decode_payload(&whole[FRAME_HEADER_LEN..]) {
            Ok(payload) => Ok(Found::Frame { header, payload }),
            Err(e) => Ok(Found::Bad(e)),
        }
    }

    /// The offset just past the last non-zero byte at or after `from`, or `from` if every
    /// byte from there on is zero.
    pub(crate) fn nonzero_end(&mut self, from: u64) -> Result<u64> {
        self.nonzero_end_within(from, u64::MAX)
    }

    /// Like [`Cursor::nonzero_end`], looking only at `[from, from + window)`.
    pub(crate) fn nonzero_end_within(&mut self, from: u64, window: u64) -> Result<u64> {
        let stop = from.saturating_add(window).min(self.len);
        let mut end = from;
        let mut at = from;
        while at < stop {
            let chunk = self.bytes(at, READ_CHUNK.min((stop - at) as usize))?;
            let n = chunk.len() as u64;
            if n == 0 {
                break;
            }
            if let Some(last) = last_nonzero(chunk) {
                end = at + last as u64 + 1;
            }
            at += n;
        }
        Ok(end)
    }

    /// The first offset in `[from, to)` where a valid frame with an LSN in `lsns` starts,
    /// with its header: how recovery looks past a damaged frame for valid data.
    pub(crate) fn resync(
        &mut self,
        from: u64,
        to: u64,
        lsns: std::ops::Range<u64>,
    ) -> Result<Option<(u64, FrameHeader)>> {
        let mut at = from;
        while at < to && at + FRAME_HEADER_LEN as u64 <= self.len {
            // Cheap filters first: a plausible LSN and header before any checksum.
            let head = self.bytes(at, FRAME_HEADER_LEN)?;
            let lsn = u64::from_le_bytes(head[10..18].try_into().expect("8 bytes"));
            if lsns.contains(&lsn)
                && let Found::Frame { header, .. } = self.frame(at)?
            {
                return Ok(Some((at, header)));
            }
            at += 1;
        }
        Ok(None)
    }
}

/// The index of the last non-zero byte, eight bytes at a time.
fn last_nonzero(bytes: &[u8]) -> Option<usize> {
    let words = bytes.len() / 8;
    if let Some(i) = bytes[words * 8..].iter().rposition(|&b| b != 0) {
        return Some(words * 8 + i);
    }
    let w = bytes[..words * 8]
        .chunks_exact(8)
        .rposition(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")) != 0)?;
    let i = bytes[w * 8..w * 8 + 8].iter().rposition(|&b| b != 0).expect("a non-zero word");
    Some(w * 8 + i)
}

fn frame_error(offset: usize, kind: DecodeErrorKind) -> DecodeError {
    DecodeError { section: ingestor_codec::Section::Frame, offset: offset as u64, kind }
}

/// A segment creation that failed; `undone` says whether the file was removed again.
pub(crate) struct CreateFailure {
    pub(crate) error: WalError,
    pub(crate) undone: bool,
}

/// Creates a segment: header, preallocation, sync, directory sync (so that no
/// acknowledgement can depend on a segment whose name could vanish). With
/// `follows_unsynced` (a rotation that syncs the ended segment in the background), the
/// header carries that flag and neither sync is made here: [`seal_segment`] makes them
/// once the segment ahead is synced. On failure the file is removed again.
pub(crate) fn create_segment(
    fs: &dyn Fs,
    dir: &Path,
    segment_bytes_max: u64,
    id: SegmentId,
    follows_unsynced: bool,
) -> std::result::Result<Arc<dyn FsFile>, Box<CreateFailure>> {
    let path = dir.join(id.file_name());
    let file: Arc<dyn FsFile> = match fs.create(&path) {
        Ok(f) => Arc::from(f),
        Err(e) => {
            return Err(Box::new(CreateFailure {
                error: WalError::io("create", &path, e),
                undone: true,
            }));
        }
    };
    let header = ingestor_codec::SegmentHeader { first_lsn: id.0, follows_unsynced }.encode();
    let made = file
        .write_at(&header, 0)
        .map_err(|e| WalError::io("write header", &path, e))
        .and_then(|()| {
            file.allocate(segment_bytes_max).map_err(|e| WalError::io("allocate", &path, e))
        })
        .and_then(|()| {
            if follows_unsynced {
                return Ok(());
            }
            file.sync_all().map_err(|e| WalError::io("sync", &path, e))
        })
        .and_then(|()| {
            fs.crash_point(crash_points::SEGMENT_BEFORE_DIR_SYNC)
                .map_err(|e| WalError::io("crash point", crash_points::SEGMENT_BEFORE_DIR_SYNC, e))
        })
        .and_then(|()| {
            if follows_unsynced {
                return Ok(());
            }
            fs.sync_dir(dir).map_err(|e| WalError::io("sync_dir", dir, e))
        });
    match made {
        Ok(()) => Ok(file),
        Err(error) => {
            let undone = fs.remove_file(&path).and_then(|()| fs.sync_dir(dir)).is_ok();
            Err(Box::new(CreateFailure { error, undone }))
        }
    }
}

/// Whether a file of a log directory is a spare segment: zeros (or space from `fallocate`),
/// synced, waiting to become the next segment (`spare.tmp`, or `spare-<pid>-<n>.tmp` for
/// one a background thread prepares). A spare is never part of the log; one left by a
/// crash is removed at open.
pub(crate) fn is_spare(name: &str) -> bool {
    name == "spare.tmp" || (name.starts_with("spare-") && name.ends_with(".tmp"))
}

/// The name of a spare: `spare.tmp` for one written inline; a name of its own for a log
/// whose background thread writes them, so that the thread of a log abandoned in the same
/// process (a simulated crash) never touches the spare of the log opened after it.
pub(crate) fn spare_name(background: bool) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if background {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("spare-{}-{n}.tmp", std::process::id())
    } else {
        "spare.tmp".to_owned()
    }
}

/// Writes a spare segment: `len` bytes of zeros in `dir/name` (with `zeros`; else `len`
/// bytes reserved with `fallocate`), synced. The name needs no directory sync:
/// [`activate_spare`] renames it and syncs the directory then.
pub(crate) fn prepare_spare(
    fs: &dyn Fs,
    dir: &Path,
    name: &str,
    len: u64,
    zeros: bool,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Arc<dyn FsFile>> {
    let path = dir.join(name);
    if fs.exists(&path).map_err(|e| WalError::io("stat", &path, e))? {
        fs.remove_file(&path).map_err(|e| WalError::io("remove", &path, e))?;
    }
    let file: Arc<dyn FsFile> =
        Arc::from(fs.create(&path).map_err(|e| WalError::io("create", &path, e))?);
    let filled = if zeros {
        write_zeros(&*file, &path, len, stop)
    } else {
        file.allocate(len).map_err(|e| WalError::io("allocate", &path, e))
    };
    match filled.and_then(|()| file.sync_all().map_err(|e| WalError::io("sync", &path, e))) {
        Ok(()) => Ok(file),
        Err(e) => {
            // A spare that could not be written whole (no space) gives its space back.
            let _ = fs.remove_file(&path);
            Err(e)
        }
    }
}

/// Writes `len` bytes of zeros into `file` in 1 MiB pieces; `stop` ends it between pieces
/// (with [`WalError::Closed`]).
fn write_zeros(
    file: &dyn FsFile,
    path: &Path,
    len: u64,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        if stop.load(std::sync::atomic::Ordering::Acquire) {
            return Err(WalError::Closed);
        }
        let n = (len - at).min(zeros.len() as u64) as usize;
        file.write_at(&zeros[..n], at).map_err(|e| WalError::io("write zeros", path, e))?;
        at += n as u64;
    }
    Ok(())
}

/// Makes the spare the segment `id`: its header written and synced (`fdatasync`: the bytes
/// or the reserved space, and the length, were synced before; into a fallocate'd spare it
/// also commits the header block's extent conversion), then renamed to the segment's name
/// and the directory synced (with `follows_unsynced`, as for [`create_segment`]: the flag
/// in the header, neither sync here). On failure the file is removed again (`undone` says
/// whether that worked).
pub(crate) fn activate_spare(
    fs: &dyn Fs,
    dir: &Path,
    name: &str,
    spare: Arc<dyn FsFile>,
    id: SegmentId,
    follows_unsynced: bool,
) -> std::result::Result<Arc<dyn FsFile>, Box<CreateFailure>> {
    let from = dir.join(name);
    let to = dir.join(id.file_name());
    let header = ingestor_codec::SegmentHeader { first_lsn: id.0, follows_unsynced }.encode();
    let mut renamed = false;
    let mut sync_failed = false;
    let made = spare
        .write_at(&header, 0)
        .map_err(|e| WalError::io("write header", &from, e))
        .and_then(|()| {
            if follows_unsynced {
                return Ok(());
            }
            spare.sync_data().map_err(|e| {
                sync_failed = true;
                WalError::io("sync", &from, e)
            })
        })
        .and_then(|()| {
            // Never over an existing file (a rename would replace it silently).
            match fs.exists(&to) {
                Ok(false) => fs.rename(&from, &to).map_err(|e| WalError::io("rename", &from, e)),
                Ok(true) => Err(WalError::UnexpectedFile {
                    path: to.clone(),
                    reason: "a segment of that name exists already".into(),
                }),
                Err(e) => Err(WalError::io("stat", &to, e)),
            }
        })
        .and_then(|()| {
            renamed = true;
            fs.crash_point(crash_points::SEGMENT_BEFORE_DIR_SYNC)
                .map_err(|e| WalError::io("crash point", crash_points::SEGMENT_BEFORE_DIR_SYNC, e))
        })
        .and_then(|()| {
            if follows_unsynced {
                return Ok(());
            }
            fs.sync_dir(dir).map_err(|e| WalError::io("sync_dir", dir, e))
        });
    match made {
        Ok(()) => Ok(spare),
        Err(error) => {
            let path = if renamed { &to } else { &from };
            let removed = fs.remove_file(path).and_then(|()| fs.sync_dir(dir)).is_ok();
            // A failed data sync is final, as for any file of the log: the disk may have
            // dropped the pages (the log is poisoned).
            Err(Box::new(CreateFailure { error, undone: removed && !sync_failed }))
        }
    }
}

/// Ends the opening of a segment created with `follows_unsynced` ([`create_segment`],
/// [`activate_spare`]) once the segment ahead of it is synced: its header rewritten without
/// the flag, the file synced (data and length) and the directory synced. Until then nothing
/// in it counts as durable; after it, a damaged frame in the segment ahead is corruption,
/// never a torn tail (`docs/format.md`, "Segment files").
pub(crate) fn seal_segment(
    fs: &dyn Fs,
    dir: &Path,
    file: &dyn FsFile,
    id: SegmentId,
) -> Result<()> {
    let path = dir.join(id.file_name());
    let header = ingestor_codec::SegmentHeader { first_lsn: id.0, follows_unsynced: false };
    file.write_at(&header.encode(), 0).map_err(|e| WalError::io("write header", &path, e))?;
    file.sync_all().map_err(|e| WalError::io("sync", &path, e))?;
    fs.sync_dir(dir).map_err(|e| WalError::io("sync_dir", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_is_accepted_from_lsn_1_to_the_limit() {
        let id = |n: u64| SegmentId(Lsn(n));
        assert!(!id(0).is_accepted());
        assert!(id(1).is_accepted());
        assert!(id(SegmentId::MAX_FIRST_LSN).is_accepted());
        assert!(!id(SegmentId::MAX_FIRST_LSN + 1).is_accepted());
        assert!(!id(u64::MAX).is_accepted());
    }

    #[test]
    fn last_nonzero_finds_the_last_byte() {
        assert_eq!(last_nonzero(&[0; 40]), None);
        for len in [1usize, 7, 8, 9, 40] {
            for at in 0..len {
                let mut v = vec![0u8; len];
                v[at] = 3;
                assert_eq!(last_nonzero(&v), Some(at), "len {len} at {at}");
            }
        }
    }

    #[test]
    fn names_sort_and_parse() {
        let a = SegmentId(Lsn(9)).file_name();
        let b = SegmentId(Lsn(10)).file_name();
        assert_eq!(a, "00000000000000000009.seg");
        assert!(a < b);
        assert_eq!(SegmentId::from_file_name(&b), Some(SegmentId(Lsn(10))));
        for bad in ["9.seg", "0000000000000000000x.seg", "00000000000000000009.log"] {
            assert_eq!(SegmentId::from_file_name(bad), None, "{bad}");
        }
    }
}

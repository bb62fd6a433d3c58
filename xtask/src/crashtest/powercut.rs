//! An emulated power cut for the process-kill mode: what a `SIGKILL` leaves, less the log's
//! writes that no completed sync covered.
//!
//! A real process on a real disk cannot lose its power on demand, and a `SIGKILL` keeps the
//! page cache: what survives a kill says nothing of what the log made durable. So the child
//! keeps a journal (a plain file, written with one `write` per line, which a kill cannot
//! take back) of the file system calls that decide durability, through its [`HookFs`]:
//!
//! - `w PATH OFFSET LEN` after a write returned;
//! - `s PATH THREAD` before a file's sync (`sync_data` or `sync_all`);
//! - `S PATH THREAD MICROS` after it succeeded, with how long it took;
//! - `r FROM TO` after a rename, `x PATH` after a removal.
//!
//! A write is covered by a sync of its file when its `w` line comes before that sync's `s`
//! line: the `pwrite` had returned before the `fdatasync` began. The engine hands an LSN to
//! a sync only after the write that holds it returned (and the `w` line is written inside
//! that write), so whatever the engine claims durable is covered in the journal; a write it
//! never claimed may be synced in truth and still not covered here, which only happens to
//! the last writes before the kill, after everything the engine claimed.
//!
//! After the kill, the parent copies the data directory and writes zeros over every range of
//! a log segment (`*.seg`) that was written and not covered: the bytes a power cut may take
//! (log segments are written once, into space that reads as zeros). Everything else (the
//! writes of earlier lives, snapshots, directory changes, writes the kill cut before their
//! line) is kept, which a power cut may also do. The copy must then hold every batch the
//! engine acknowledged `durable`, everything before a `sync`, snapshot or close that
//! returned, and under `Batch` everything acknowledged the policy's bound before the cut.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The child's end: appends one line per event to the journal file.
#[derive(Debug)]
pub(crate) struct Journal {
    file: Mutex<File>,
}

impl Journal {
    /// Creates (or empties) the journal at `path`.
    pub(crate) fn create(path: &Path) -> std::io::Result<Journal> {
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(path)?;
        Ok(Journal { file: Mutex::new(file) })
    }

    fn line(&self, line: String) {
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // A line the journal could not take makes the parent see less than happened: a
        // write without its line is kept (as a power cut may), a sync without its line
        // covers nothing. Neither can make a missing batch look excused, so the error is
        // the child's to ignore.
        let _ = file.write_all(line.as_bytes());
    }

    fn thread() -> String {
        format!("{:?}", std::thread::current().id()).replace(' ', "")
    }

    pub(crate) fn wrote(&self, path: &Path, offset: u64, len: u64) {
        self.line(format!("w\t{}\t{offset}\t{len}\n", path.display()));
    }

    pub(crate) fn sync_starts(&self, path: &Path) {
        self.line(format!("s\t{}\t{}\n", path.display(), Self::thread()));
    }

    pub(crate) fn synced(&self, path: &Path, took: Duration) {
        self.line(format!("S\t{}\t{}\t{}\n", path.display(), Self::thread(), took.as_micros()));
    }

    pub(crate) fn renamed(&self, from: &Path, to: &Path) {
        self.line(format!("r\t{}\t{}\n", from.display(), to.display()));
    }

    pub(crate) fn removed(&self, path: &Path) {
        self.line(format!("x\t{}\n", path.display()));
    }
}

/// What a journal says a power cut may take.
#[derive(Debug, Default)]
pub(crate) struct Unsynced {
    /// Per file (by its name at the end), the ranges written and not covered by a sync.
    pub(crate) ranges: HashMap<PathBuf, Vec<(u64, u64)>>,
    /// The longest sync of a log segment the journal shows.
    pub(crate) longest_sync: Duration,
    /// Syncs of log segments that completed.
    pub(crate) syncs: u64,
}

impl Unsynced {
    /// Reads a journal. A last line cut by the kill (no newline) was never written whole: it
    /// is left out.
    pub(crate) fn read(journal: &Path) -> Result<Unsynced, String> {
        let text = std::fs::read_to_string(journal)
            .map_err(|e| format!("read the journal {}: {e}", journal.display()))?;
        let mut out = Unsynced::default();
        // Per file, its writes not covered yet: (sequence number, offset, length).
        let mut pending: HashMap<PathBuf, Vec<(u64, u64, u64)>> = HashMap::new();
        // Per (file, thread), the sequence number when its running sync began.
        let mut started: HashMap<(PathBuf, String), u64> = HashMap::new();
        let mut seq = 0u64;
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        for (n, line) in whole.lines().enumerate() {
            let bad = || format!("journal line {}: {line:?}", n + 1);
            let f: Vec<&str> = line.split('\t').collect();
            let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).ok_or_else(bad);
            let path = |i: usize| f.get(i).map(PathBuf::from).ok_or_else(bad);
            match f.first().copied() {
                Some("w") => {
                    seq += 1;
                    pending.entry(path(1)?).or_default().push((seq, num(2)?, num(3)?));
                }
                Some("s") => {
                    let thread = f.get(2).ok_or_else(bad)?.to_string();
                    started.insert((path(1)?, thread), seq);
                }
                Some("S") => {
                    let thread = f.get(2).ok_or_else(bad)?.to_string();
                    let file = path(1)?;
                    let Some(before) = started.remove(&(file.clone(), thread)) else {
                        return Err(format!("{}: a sync that never began", bad()));
                    };
                    if let Some(writes) = pending.get_mut(&file) {
                        writes.retain(|&(s, _, _)| s > before);
                    }
                    if is_segment(&file) {
                        out.longest_sync = out.longest_sync.max(Duration::from_micros(num(3)?));
                        out.syncs += 1;
                    }
                }
                Some("r") => {
                    let (from, to) = (path(1)?, path(2)?);
                    let moved = pending.remove(&from).unwrap_or_default();
                    pending.insert(to, moved);
                }
                Some("x") => {
                    pending.remove(&path(1)?);
                }
                _ => return Err(bad()),
            }
        }
        out.ranges = pending
            .into_iter()
            .filter(|(_, w)| !w.is_empty())
            .map(|(p, w)| (p, w.into_iter().map(|(_, o, l)| (o, l)).collect()))
            .collect();
        Ok(out)
    }

    /// Copies `data` to `image` and writes zeros over the uncovered ranges of its log
    /// segments (clamped to each file's length); returns how many bytes it zeroed.
    pub(crate) fn cut(&self, data: &Path, image: &Path) -> Result<u64, String> {
        let _ = std::fs::remove_dir_all(image);
        super::proc::copy_dir(data, image)
            .map_err(|e| format!("copy {} to {}: {e}", data.display(), image.display()))?;
        let mut zeroed = 0;
        for (path, ranges) in &self.ranges {
            let (Ok(rel), true) = (path.strip_prefix(data), is_segment(path)) else {
                continue;
            };
            let target = image.join(rel);
            let Ok(file) = OpenOptions::new().write(true).open(&target) else {
                continue; // removed since (its removal was not journaled: kept as a cut may)
            };
            let len = file.metadata().map_err(|e| format!("stat {}: {e}", target.display()))?.len();
            for &(offset, n) in ranges {
                let end = (offset + n).min(len);
                if end <= offset {
                    continue;
                }
                let zeros = vec![0u8; (end - offset) as usize];
                file.write_all_at(&zeros, offset)
                    .map_err(|e| format!("zero {} at {offset}: {e}", target.display()))?;
                zeroed += end - offset;
            }
        }
        Ok(zeroed)
    }
}

/// Whether `path` names a log segment.
fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "seg")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(lines: &[&str]) -> Unsynced {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, lines.join("")).unwrap();
        Unsynced::read(&path).unwrap()
    }

    #[test]
    fn a_sync_covers_the_writes_before_it_began_and_follows_renames() {
        let u = journal(&[
            "w\t/d/a.seg\t0\t10\n",
            "s\t/d/a.seg\tT1\n",
            // Returned while the sync ran: not covered by it.
            "w\t/d/a.seg\t10\t5\n",
            "S\t/d/a.seg\tT1\t300\n",
            // Not a segment: its sync is not the log's.
            "s\t/d/snap\tT2\n",
            "S\t/d/snap\tT2\t900\n",
            "w\t/d/spare\t0\t4\n",
            "r\t/d/spare\t/d/b.seg\n",
            "w\t/d/gone.seg\t0\t4\n",
            "x\t/d/gone.seg\n",
            // Cut by the kill: never written whole.
            "w\t/d/b.seg\t4\t4",
        ]);
        assert_eq!(u.ranges.get(Path::new("/d/a.seg")), Some(&vec![(10, 5)]));
        assert_eq!(u.ranges.get(Path::new("/d/b.seg")), Some(&vec![(0, 4)]));
        assert_eq!(u.ranges.len(), 2);
        assert_eq!(u.longest_sync, Duration::from_micros(300));
        assert_eq!(u.syncs, 1);
    }

    #[test]
    fn the_image_loses_only_uncovered_segment_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("wal")).unwrap();
        std::fs::write(data.join("wal/1.seg"), [7u8; 16]).unwrap();
        std::fs::write(data.join("snap"), [7u8; 16]).unwrap();
        let mut u = Unsynced::default();
        u.ranges.insert(data.join("wal/1.seg"), vec![(4, 4), (14, 10)]);
        u.ranges.insert(data.join("snap"), vec![(0, 16)]);
        let image = dir.path().join("image");
        assert_eq!(u.cut(&data, &image).unwrap(), 6);
        let seg = std::fs::read(image.join("wal/1.seg")).unwrap();
        assert_eq!(seg, [7, 7, 7, 7, 0, 0, 0, 0, 7, 7, 7, 7, 7, 7, 0, 0]);
        assert_eq!(std::fs::read(image.join("snap")).unwrap(), [7u8; 16]);
        assert_eq!(std::fs::read(data.join("wal/1.seg")).unwrap(), [7u8; 16], "the original");
    }
}

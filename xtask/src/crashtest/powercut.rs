//! An emulated power cut for the process-kill mode: what a `SIGKILL` leaves, less the log's
//! writes that no completed sync covered.
//!
//! A real process on a real disk cannot lose its power on demand, and a `SIGKILL` keeps the
//! page cache: what survives a kill says nothing of what the log made durable. So the child
//! keeps a journal (a plain file, written with one `write` per line, which a kill cannot
//! take back) of the file system calls that decide durability, through its [`HookFs`]
//! (each handle has a number):
//!
//! - `c H PATH` after a file was created (or emptied) at PATH through new handle H, `o H
//!   PATH` after one was opened;
//! - `w H OFFSET LEN` after a write through H returned;
//! - `s H THREAD` before a sync through H, `S H THREAD MICROS` after it succeeded;
//! - `r FROM TO` after a rename, `x PATH` after a removal.
//!
//! The reader follows files, not names: the log writes a spare segment through the handle
//! it created it with, under its temporary name, after renaming it into place, and creates
//! the next spare under that same name. A write is covered by a sync of its file when its
//! `w` line comes before that sync's `s` line: the `pwrite` had returned before the
//! `fdatasync` began. The engine hands an LSN to a sync only after the write that holds it
//! returned (and the `w` line is written inside that write), so whatever the engine claims
//! durable is covered in the journal; a write it never claimed may be synced in truth and
//! still not covered here, which only happens to the last writes before the kill, after
//! everything the engine claimed.
//!
//! After the kill, the parent copies the data directory and writes zeros over every range of
//! a log segment (`*.seg`) that was written and not covered: the bytes a power cut may take
//! (log segments are written once, into space that reads as zeros). Everything else (the
//! writes of earlier lives, snapshots, directory changes, writes the kill cut before their
//! line) is kept, which a power cut may also do. The copy must then hold every batch the
//! engine acknowledged `durable`, everything before a `sync`, snapshot or close that
//! returned, and under `Batch` everything acknowledged the policy's bound before the cut.
//!
//! [`HookFs`]: ingestor_testkit::fs::HookFs

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

    pub(crate) fn opened(&self, path: &Path, handle: u64, created: bool) {
        let kind = if created { 'c' } else { 'o' };
        self.line(format!("{kind}\t{handle}\t{}\n", path.display()));
    }

    pub(crate) fn wrote(&self, handle: u64, offset: u64, len: u64) {
        self.line(format!("w\t{handle}\t{offset}\t{len}\n"));
    }

    pub(crate) fn sync_starts(&self, handle: u64) {
        self.line(format!("s\t{handle}\t{}\n", Self::thread()));
    }

    pub(crate) fn synced(&self, handle: u64, took: Duration) {
        self.line(format!("S\t{handle}\t{}\t{}\n", Self::thread(), took.as_micros()));
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
    /// Syncs of log segments that began and had not returned when the child died.
    pub(crate) unfinished_syncs: u64,
}

/// The files a journal speaks of, as numbers: what each name and each handle stands for.
#[derive(Default)]
struct Files {
    next: u64,
    at: HashMap<PathBuf, u64>,
    name: HashMap<u64, PathBuf>,
    handle: HashMap<u64, u64>,
}

impl Files {
    /// A new file at `path` (created, or one from before the journal, first opened).
    fn new_at(&mut self, path: PathBuf) -> u64 {
        self.next += 1;
        if let Some(old) = self.at.insert(path.clone(), self.next) {
            self.name.remove(&old);
        }
        self.name.insert(self.next, path);
        self.next
    }

    fn is_segment(&self, file: u64) -> bool {
        self.name.get(&file).is_some_and(|p| is_segment(p))
    }
}

impl Unsynced {
    /// Reads a journal. A last line cut by the kill (no newline) was never written whole: it
    /// is left out. A journal the child never created (it died first) is empty.
    pub(crate) fn read(journal: &Path) -> Result<Unsynced, String> {
        let text = match std::fs::read_to_string(journal) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("read the journal {}: {e}", journal.display())),
        };
        let mut out = Unsynced::default();
        let mut files = Files::default();
        // Per file, its writes not covered yet: (sequence number, offset, length).
        let mut pending: HashMap<u64, Vec<(u64, u64, u64)>> = HashMap::new();
        // Per (file, thread), the sequence number when its running sync began.
        let mut started: HashMap<(u64, String), u64> = HashMap::new();
        let mut seq = 0u64;
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        for (n, line) in whole.lines().enumerate() {
            let bad = || format!("journal line {}: {line:?}", n + 1);
            let f: Vec<&str> = line.split('\t').collect();
            let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).ok_or_else(bad);
            let path = |i: usize| f.get(i).map(PathBuf::from).ok_or_else(bad);
            let thread = |i: usize| f.get(i).map(ToString::to_string).ok_or_else(bad);
            let file_of = |files: &Files, h: u64| {
                files.handle.get(&h).copied().ok_or_else(|| format!("{}: unknown handle", bad()))
            };
            match f.first().copied() {
                Some(kind @ ("c" | "o")) => {
                    let (h, p) = (num(1)?, path(2)?);
                    let file = match files.at.get(&p) {
                        Some(&file) if kind == "o" => file,
                        _ => files.new_at(p),
                    };
                    if kind == "c" {
                        pending.remove(&file);
                    }
                    files.handle.insert(h, file);
                }
                Some("w") => {
                    seq += 1;
                    let file = file_of(&files, num(1)?)?;
                    pending.entry(file).or_default().push((seq, num(2)?, num(3)?));
                }
                Some("s") => {
                    started.insert((file_of(&files, num(1)?)?, thread(2)?), seq);
                }
                Some("S") => {
                    let file = file_of(&files, num(1)?)?;
                    let Some(before) = started.remove(&(file, thread(2)?)) else {
                        return Err(format!("{}: a sync that never began", bad()));
                    };
                    if let Some(writes) = pending.get_mut(&file) {
                        writes.retain(|&(s, _, _)| s > before);
                    }
                    if files.is_segment(file) {
                        out.longest_sync = out.longest_sync.max(Duration::from_micros(num(3)?));
                        out.syncs += 1;
                    }
                }
                Some("r") => {
                    let (from, to) = (path(1)?, path(2)?);
                    if let Some(file) = files.at.remove(&from) {
                        if let Some(old) = files.at.insert(to.clone(), file) {
                            files.name.remove(&old);
                        }
                        files.name.insert(file, to);
                    }
                }
                Some("x") => {
                    if let Some(file) = files.at.remove(&path(1)?) {
                        files.name.remove(&file);
                    }
                }
                _ => return Err(bad()),
            }
        }
        out.unfinished_syncs = started.keys().filter(|(f, _)| files.is_segment(*f)).count() as u64;
        out.ranges = pending
            .into_iter()
            .filter(|(_, w)| !w.is_empty())
            .filter_map(|(file, w)| {
                let name = files.name.get(&file)?.clone();
                Some((name, w.into_iter().map(|(_, o, l)| (o, l)).collect()))
            })
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
    fn a_sync_covers_the_writes_before_it_began_and_files_are_followed_through_renames() {
        let u = journal(&[
            "c\t1\t/d/a.seg\n",
            "w\t1\t0\t10\n",
            "s\t1\tT1\n",
            // Returned while the sync ran: not covered by it.
            "w\t1\t10\t5\n",
            "S\t1\tT1\t300\n",
            // Not a segment: its sync is not the log's.
            "c\t2\t/d/snap\n",
            "s\t2\tT2\n",
            "S\t2\tT2\t900\n",
            // A spare: zero-filled and synced, renamed into place, then written and synced
            // through the handle that created it.
            "c\t3\t/d/spare\n",
            "w\t3\t0\t64\n",
            "s\t3\tT3\n",
            "S\t3\tT3\t5000\n",
            "r\t/d/spare\t/d/b.seg\n",
            "w\t3\t4\t4\n",
            "s\t3\tT1\n",
            "S\t3\tT1\t100\n",
            "w\t3\t8\t4\n",
            // The next spare, under the same name, while the segment is still written.
            "c\t4\t/d/spare\n",
            "w\t4\t0\t64\n",
            "w\t3\t12\t4\n",
            // A reader's handle on the segment: the same file.
            "o\t5\t/d/b.seg\n",
            "s\t5\tT4\n",
            "w\t1\t15\t1\n",
            "x\t/d/gone.seg\n",
            // Cut by the kill: never written whole.
            "w\t3\t16\t4",
        ]);
        assert_eq!(u.ranges.get(Path::new("/d/a.seg")), Some(&vec![(10, 5), (15, 1)]));
        assert_eq!(u.ranges.get(Path::new("/d/b.seg")), Some(&vec![(8, 4), (12, 4)]));
        assert_eq!(u.ranges.get(Path::new("/d/spare")), Some(&vec![(0, 64)]));
        assert_eq!(u.ranges.len(), 3);
        // The spare's zero-fill sync came before it was a segment.
        assert_eq!(u.longest_sync, Duration::from_micros(300));
        assert_eq!((u.syncs, u.unfinished_syncs), (2, 1));
    }

    #[test]
    fn a_journal_never_written_is_empty_and_a_handle_never_opened_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let u = Unsynced::read(&dir.path().join("none")).unwrap();
        assert!(u.ranges.is_empty());
        let path = dir.path().join("j");
        std::fs::write(&path, "w\t9\t0\t4\n").unwrap();
        assert!(Unsynced::read(&path).unwrap_err().contains("unknown handle"));
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

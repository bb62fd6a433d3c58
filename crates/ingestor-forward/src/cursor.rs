//! A destination's cursor: the outbox LSN of the next record it has not settled, kept in
//! `outbox/cursor-<name>`. The file has two slots, each a checksummed copy of the cursor
//! with a sequence number; a move writes the older slot in place and syncs the file once
//! (`fdatasync`), so that a torn write can only damage the slot being written and the other
//! still holds the cursor before it. A new file is made whole (both slots) under a temporary
//! name, synced, renamed and its directory synced. Byte layout in `docs/format.md`
//! ("Outbox cursors"); a version-1 file (one 24-byte copy) is read, and replaced by the
//! first move.

use std::path::{Path, PathBuf};

use ingestor::{Fs, FsFile, Lsn, OpenMode};

/// The first 8 bytes of a cursor slot (and of a version-1 cursor file).
pub const CURSOR_MAGIC: [u8; 8] = *b"INGSTCUR";
/// Bytes in a version-1 cursor file.
pub const CURSOR_V1_LEN: usize = 24;
/// Bytes in a cursor slot.
pub const SLOT_LEN: usize = 32;
/// Where slot 1 starts (slot 0 at 0): another 512-byte sector.
pub const SLOT_1_OFFSET: u64 = 512;
/// Bytes in a (version-2) cursor file.
pub const CURSOR_FILE_LEN: u64 = 1024;
const CRC_MASK_DELTA: u32 = 0xa282_ead8;

fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(CRC_MASK_DELTA)
}

pub(crate) fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("cursor-{name}"))
}

/// The cursor name of a destination's shard: the destination's name for shard 0 (the file
/// of an outbox without shards), `<name>.<shard>` for the others.
pub(crate) fn shard_name(name: &str, shard: u16) -> String {
    if shard == 0 { name.to_owned() } else { format!("{name}.{shard}") }
}

/// The destination and shard a cursor file's name stands for (`cursor-vm.3`: `("vm", 3)`),
/// `None` for another file (a temporary one included).
pub(crate) fn parse_file_name(file: &str) -> Option<(&str, u16)> {
    let rest = file.strip_prefix("cursor-")?;
    if rest.ends_with(".tmp") {
        return None;
    }
    match rest.split_once('.') {
        None => Some((rest, 0)),
        Some((name, shard)) => match shard.parse::<u16>() {
            Ok(s) if s > 0 && shard.bytes().all(|b| b.is_ascii_digit()) => Some((name, s)),
            _ => None,
        },
    }
}

/// Every shard cursor of destination `name` found in `dir`, by shard.
///
/// # Errors
/// An unreadable directory, a damaged or unreadable cursor file, with the path.
pub(crate) fn read_shards(
    fs: &dyn Fs,
    dir: &Path,
    name: &str,
) -> Result<std::collections::BTreeMap<u16, Cursor>, String> {
    let mut found = std::collections::BTreeMap::new();
    let entries = fs.read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in entries {
        if let Some((n, shard)) = parse_file_name(&e.name)
            && n == name
            && let Some(at) = read(fs, dir, &shard_name(name, shard))?
        {
            found.insert(shard, at);
        }
    }
    Ok(found)
}

/// The bytes of a slot holding cursor `next` at sequence `seq`, written by a run with
/// `shards` shards for the destination.
#[must_use]
pub fn encode_slot(seq: u64, next: Lsn, shards: u16) -> [u8; SLOT_LEN] {
    let mut out = [0u8; SLOT_LEN];
    out[..8].copy_from_slice(&CURSOR_MAGIC);
    out[8..10].copy_from_slice(&2u16.to_le_bytes());
    out[10..12].copy_from_slice(&shards.to_le_bytes());
    out[12..20].copy_from_slice(&seq.to_le_bytes());
    out[20..28].copy_from_slice(&next.0.to_le_bytes());
    let crc = mask(crc32c::crc32c(&out[..28]));
    out[28..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn check(bytes: &[u8], len: usize, version: u16) -> Result<(), String> {
    let stored = u32::from_le_bytes(bytes[len - 4..len].try_into().expect("4 bytes"));
    let computed = mask(crc32c::crc32c(&bytes[..len - 4]));
    if stored != computed {
        return Err(format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    if bytes[..8] != CURSOR_MAGIC {
        return Err("not a cursor (bad magic)".to_owned());
    }
    let found = u16::from_le_bytes([bytes[8], bytes[9]]);
    if found != version || (version == 1 && bytes[10..12] != [0, 0]) {
        return Err(format!("unsupported cursor version {found}"));
    }
    Ok(())
}

/// A cursor as a file holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The sequence number of the slot it came from (0 for a version-1 file).
    pub seq: u64,
    /// The outbox LSN of the next record to settle.
    pub next: Lsn,
    /// The destination's shard count in the run that wrote it (1 for a file written
    /// before shards).
    pub shards: u16,
}

/// The cursor a slot holds.
///
/// # Errors
/// What is wrong with the bytes.
pub fn decode_slot(bytes: &[u8]) -> Result<Cursor, String> {
    if bytes.len() < SLOT_LEN {
        return Err(format!("{} bytes, not {SLOT_LEN}", bytes.len()));
    }
    check(bytes, SLOT_LEN, 2)?;
    Ok(Cursor {
        seq: u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")),
        next: Lsn(u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"))),
        shards: u16::from_le_bytes([bytes[10], bytes[11]]).max(1),
    })
}

/// The cursor a whole cursor file holds: its newest valid slot.
///
/// # Errors
/// What is wrong with the bytes (both slots damaged, or a damaged version-1 file).
pub fn decode(bytes: &[u8]) -> Result<Cursor, String> {
    if bytes.len() == CURSOR_V1_LEN {
        check(bytes, CURSOR_V1_LEN, 1)?;
        let next = Lsn(u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes")));
        return Ok(Cursor { seq: 0, next, shards: 1 });
    }
    if bytes.len() as u64 != CURSOR_FILE_LEN {
        return Err(format!("{} bytes, not {CURSOR_FILE_LEN}", bytes.len()));
    }
    let a = decode_slot(&bytes[..SLOT_LEN]);
    let b = decode_slot(&bytes[SLOT_1_OFFSET as usize..SLOT_1_OFFSET as usize + SLOT_LEN]);
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(if b.seq > a.seq { b } else { a }),
        (Ok(x), Err(_)) | (Err(_), Ok(x)) => Ok(x),
        (Err(a), Err(b)) => Err(format!("both slots are damaged: {a}; {b}")),
    }
}

fn whole(fs: &dyn Fs, path: &Path) -> Result<Vec<u8>, String> {
    let file = fs.open(path, OpenMode::Read).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.len().map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; usize::try_from(len.min(CURSOR_FILE_LEN + 1)).unwrap_or(0)];
    file.read_exact_at(&mut buf, 0).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(buf)
}

/// Reads the cursor of `name`: `Ok(None)` when there is none yet.
///
/// # Errors
/// A damaged or unreadable cursor file, with the path.
pub(crate) fn read(fs: &dyn Fs, dir: &Path, name: &str) -> Result<Option<Cursor>, String> {
    let path = path(dir, name);
    if !fs.exists(&path).map_err(|e| format!("{}: {e}", path.display()))? {
        return Ok(None);
    }
    let bytes = whole(fs, &path)?;
    decode(&bytes).map(Some).map_err(|e| format!("{}: {e}", path.display()))
}

/// Makes a new cursor file for `name` at `next` (written by a run with `shards` shards),
/// whole and durable: both slots written under a temporary name, synced, renamed over any
/// old file, the directory synced.
///
/// # Errors
/// The failed file operation, with the path.
pub(crate) fn write(
    fs: &dyn Fs,
    dir: &Path,
    name: &str,
    next: Lsn,
    shards: u16,
) -> Result<(), String> {
    let path = path(dir, name);
    let tmp = dir.join(format!("cursor-{name}.tmp"));
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    // A power cut can leave the temporary file of an earlier write behind.
    if fs.exists(&tmp).map_err(|e| io("stat", &tmp, e))? {
        fs.remove_file(&tmp).map_err(|e| io("remove", &tmp, e))?;
    }
    let file = fs.create(&tmp).map_err(|e| io("create", &tmp, e))?;
    let mut bytes = vec![0u8; CURSOR_FILE_LEN as usize];
    bytes[..SLOT_LEN].copy_from_slice(&encode_slot(1, next, shards));
    bytes[SLOT_1_OFFSET as usize..SLOT_1_OFFSET as usize + SLOT_LEN]
        .copy_from_slice(&encode_slot(0, next, shards));
    file.write_at(&bytes, 0).map_err(|e| io("write", &tmp, e))?;
    file.sync_all().map_err(|e| io("sync", &tmp, e))?;
    drop(file);
    fs.rename(&tmp, &path).map_err(|e| io("rename", &tmp, e))?;
    fs.sync_dir(dir).map_err(|e| io("sync", dir, e))
}

/// An open cursor file, moved in place: one slot write and one `fdatasync` a move.
pub(crate) struct CursorFile {
    file: Box<dyn FsFile>,
    path: PathBuf,
    seq: u64,
    shards: u16,
}

impl CursorFile {
    /// Opens `name`'s cursor file for moves by a run with `shards` shards, making it whole
    /// first when it is of version 1 or has a damaged slot (so that every later move has a
    /// good slot to fall back on). The file must exist (the forwarder's start makes it).
    pub(crate) fn open(
        fs: &dyn Fs,
        dir: &Path,
        name: &str,
        shards: u16,
    ) -> Result<CursorFile, String> {
        let path = path(dir, name);
        let found = match fs.exists(&path).map_err(|e| format!("{}: {e}", path.display()))? {
            true => Some(whole(fs, &path)?),
            false => None,
        };
        let good = found.as_ref().is_some_and(|b| {
            b.len() as u64 == CURSOR_FILE_LEN
                && decode_slot(&b[..SLOT_LEN]).is_ok()
                && decode_slot(&b[SLOT_1_OFFSET as usize..]).is_ok()
        });
        let seq = match (&found, good) {
            (Some(b), true) => decode(b).map_err(|e| format!("{}: {e}", path.display()))?.seq,
            (Some(b), false) => {
                let at = decode(b).map_err(|e| format!("{}: {e}", path.display()))?.next;
                write(fs, dir, name, at, shards)?;
                1
            }
            (None, _) => return Err(format!("{}: no cursor file", path.display())),
        };
        let file = fs
            .open(&path, OpenMode::ReadWrite)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        Ok(CursorFile { file, path, seq, shards })
    }

    /// Moves the cursor to `next`: the older slot, then one `fdatasync`.
    pub(crate) fn store(&mut self, next: Lsn) -> Result<(), String> {
        let seq = self.seq + 1;
        let at = if seq % 2 == 1 { 0 } else { SLOT_1_OFFSET };
        self.file
            .write_at(&encode_slot(seq, next, self.shards), at)
            .map_err(|e| format!("write {}: {e}", self.path.display()))?;
        self.file.sync_data().map_err(|e| format!("sync {}: {e}", self.path.display()))?;
        self.seq = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_every_bit_flip_is_caught() {
        let bytes = encode_slot(7, Lsn(0x0102_0304_0506_0708), 3);
        assert_eq!(
            decode_slot(&bytes).unwrap(),
            Cursor { seq: 7, next: Lsn(0x0102_0304_0506_0708), shards: 3 }
        );
        for bit in 0..SLOT_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_slot(&b).is_err(), "bit {bit}");
        }
        assert!(decode_slot(&bytes[..20]).unwrap_err().contains("20 bytes"));
    }

    #[test]
    fn moves_alternate_slots_and_a_damaged_slot_falls_back_to_the_other() {
        let dir = tempfile::tempdir().unwrap();
        let fs = ingestor::StdFs::new();
        assert_eq!(read(&fs, dir.path(), "vm").unwrap(), None);
        let next = || read(&fs, dir.path(), "vm").unwrap().unwrap().next;
        write(&fs, dir.path(), "vm", Lsn(5), 2).unwrap();
        let mut c = CursorFile::open(&fs, dir.path(), "vm", 2).unwrap();
        c.store(Lsn(9)).unwrap();
        c.store(Lsn(12)).unwrap();
        assert_eq!(next(), Lsn(12));
        assert_eq!(read(&fs, dir.path(), "vm").unwrap().unwrap().shards, 2);
        drop(c);
        // A torn write of the newest slot: the other one holds the cursor before it.
        let path = dir.path().join("cursor-vm");
        let mut bytes = std::fs::read(&path).unwrap();
        let newest = if decode_slot(&bytes[..SLOT_LEN]).unwrap().next == Lsn(12) { 0 } else { 512 };
        bytes[newest + 21] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(next(), Lsn(9));
        // Reopening makes the file whole again before the next move.
        let mut c = CursorFile::open(&fs, dir.path(), "vm", 2).unwrap();
        c.store(Lsn(20)).unwrap();
        assert_eq!(next(), Lsn(20));
        assert!(!dir.path().join("cursor-vm.tmp").exists());
        // Both slots damaged: refused, naming the file.
        std::fs::write(&path, vec![0u8; 1024]).unwrap();
        assert!(read(&fs, dir.path(), "vm").unwrap_err().contains("cursor-vm"));
    }

    /// A new cursor file (made on a first start, or for a new shard count, at any position)
    /// and every move are durable when they return: a power cut right after keeps exactly
    /// what was last stored, never the file it replaced, nor no file.
    #[test]
    fn a_new_cursor_and_each_move_survive_a_power_cut_right_after() {
        let sim = ingestor::SimFs::new(3);
        let dir = Path::new("/data/outbox");
        ingestor::create_dir_durably(&sim, dir).unwrap();
        let next =
            |sim: &ingestor::SimFs| read(sim, dir, "vm").unwrap().map(|c| (c.next, c.shards));
        write(&sim, dir, "vm", Lsn(5), 2).unwrap();
        sim.crash(ingestor::CrashPolicy::DropUnsynced);
        assert_eq!(next(&sim), Some((Lsn(5), 2)), "the new file");
        // Made again over the old one (another shard count), then moved.
        write(&sim, dir, "vm", Lsn(7), 3).unwrap();
        sim.crash(ingestor::CrashPolicy::DropUnsynced);
        assert_eq!(next(&sim), Some((Lsn(7), 3)), "the file that replaced the old one");
        let mut c = CursorFile::open(&sim, dir, "vm", 3).unwrap();
        c.store(Lsn(11)).unwrap();
        sim.crash(ingestor::CrashPolicy::DropUnsynced);
        assert_eq!(next(&sim), Some((Lsn(11), 3)), "a move");
    }

    #[test]
    fn shard_cursor_names_round_trip() {
        assert_eq!(shard_name("vm", 0), "vm");
        assert_eq!(shard_name("vm", 3), "vm.3");
        assert_eq!(parse_file_name("cursor-vm"), Some(("vm", 0)));
        assert_eq!(parse_file_name("cursor-vm.3"), Some(("vm", 3)));
        assert_eq!(parse_file_name("cursor-my-vm_2.12"), Some(("my-vm_2", 12)));
        for not in
            ["cursor-vm.tmp", "cursor-vm.3.tmp", "cursor-vm.0", "cursor-vm.x", "vm", "cursor-vm.+1"]
        {
            assert_eq!(parse_file_name(not), None, "{not}");
        }
        let dir = tempfile::tempdir().unwrap();
        let fs = ingestor::StdFs::new();
        write(&fs, dir.path(), "vm", Lsn(4), 3).unwrap();
        write(&fs, dir.path(), "vm.2", Lsn(9), 3).unwrap();
        write(&fs, dir.path(), "vmx", Lsn(1), 1).unwrap();
        let found = read_shards(&fs, dir.path(), "vm").unwrap();
        let found: Vec<_> = found.into_iter().map(|(s, c)| (s, c.next, c.shards)).collect();
        assert_eq!(found, [(0, Lsn(4), 3), (2, Lsn(9), 3)]);
    }

    #[test]
    fn a_version_1_file_is_read_and_replaced_by_the_first_move() {
        let dir = tempfile::tempdir().unwrap();
        let fs = ingestor::StdFs::new();
        let mut v1 = [0u8; CURSOR_V1_LEN];
        v1[..8].copy_from_slice(&CURSOR_MAGIC);
        v1[8..10].copy_from_slice(&1u16.to_le_bytes());
        v1[12..20].copy_from_slice(&33u64.to_le_bytes());
        let crc = mask(crc32c::crc32c(&v1[..20]));
        v1[20..].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(dir.path().join("cursor-vm"), v1).unwrap();
        let read = || super::read(&fs, dir.path(), "vm").unwrap().unwrap();
        assert_eq!(read(), Cursor { seq: 0, next: Lsn(33), shards: 1 });
        // A temporary file a power cut left behind does not stop the rewrite.
        std::fs::write(dir.path().join("cursor-vm.tmp"), b"left over").unwrap();
        let mut c = CursorFile::open(&fs, dir.path(), "vm", 1).unwrap();
        assert_eq!(read().next, Lsn(33));
        c.store(Lsn(40)).unwrap();
        assert_eq!((read().next, read().shards), (Lsn(40), 1));
        assert_eq!(std::fs::metadata(dir.path().join("cursor-vm")).unwrap().len(), 1024);
    }
}

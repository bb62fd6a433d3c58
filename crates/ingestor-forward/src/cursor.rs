//! A destination's cursor: the outbox LSN of the next record it has not had a 2xx for,
//! kept in `outbox/cursor-<name>` and replaced atomically (written to a temporary file,
//! synced, renamed over the old one, directory synced). Byte layout in `docs/format.md`
//! ("Outbox cursors").

use std::path::{Path, PathBuf};

use ingestor::{Fs, Lsn};

/// The first 8 bytes of a cursor file.
pub const CURSOR_MAGIC: [u8; 8] = *b"INGSTCUR";
/// Bytes in a cursor file.
pub const CURSOR_LEN: usize = 24;
const CURSOR_VERSION: u16 = 1;
const CRC_MASK_DELTA: u32 = 0xa282_ead8;

fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(CRC_MASK_DELTA)
}

pub(crate) fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("cursor-{name}"))
}

/// The bytes of a cursor at `next`.
#[must_use]
pub fn encode(next: Lsn) -> [u8; CURSOR_LEN] {
    let mut out = [0u8; CURSOR_LEN];
    out[..8].copy_from_slice(&CURSOR_MAGIC);
    out[8..10].copy_from_slice(&CURSOR_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&next.0.to_le_bytes());
    let crc = mask(crc32c::crc32c(&out[..20]));
    out[20..].copy_from_slice(&crc.to_le_bytes());
    out
}

/// The LSN a cursor file holds.
///
/// # Errors
/// What is wrong with the bytes.
pub fn decode(bytes: &[u8]) -> Result<Lsn, String> {
    if bytes.len() != CURSOR_LEN {
        return Err(format!("{} bytes, not {CURSOR_LEN}", bytes.len()));
    }
    let stored = u32::from_le_bytes(bytes[20..24].try_into().expect("4 bytes"));
    let computed = mask(crc32c::crc32c(&bytes[..20]));
    if stored != computed {
        return Err(format!("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"));
    }
    if bytes[..8] != CURSOR_MAGIC {
        return Err("not a cursor file (bad magic)".to_owned());
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version != CURSOR_VERSION || bytes[10..12] != [0, 0] {
        return Err(format!("unsupported cursor version {version}"));
    }
    Ok(Lsn(u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"))))
}

/// Reads the cursor of `name`: `Ok(None)` when there is none yet.
///
/// # Errors
/// A damaged or unreadable cursor file, with the path.
pub(crate) fn read(fs: &dyn Fs, dir: &Path, name: &str) -> Result<Option<Lsn>, String> {
    let path = path(dir, name);
    if !fs.exists(&path).map_err(|e| format!("{}: {e}", path.display()))? {
        return Ok(None);
    }
    let file =
        fs.open(&path, ingestor::OpenMode::Read).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = file.len().map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX).min(CURSOR_LEN + 1)];
    file.read_exact_at(&mut buf, 0).map_err(|e| format!("{}: {e}", path.display()))?;
    decode(&buf).map(Some).map_err(|e| format!("{}: {e}", path.display()))
}

/// Makes `next` the cursor of `name`, durably and atomically.
///
/// # Errors
/// The failed file operation, with the path.
pub(crate) fn write(fs: &dyn Fs, dir: &Path, name: &str, next: Lsn) -> Result<(), String> {
    let path = path(dir, name);
    let tmp = dir.join(format!("cursor-{name}.tmp"));
    let io = |what: &str, p: &Path, e: std::io::Error| format!("{what} {}: {e}", p.display());
    // A power cut can leave the temporary file of an earlier write behind.
    if fs.exists(&tmp).map_err(|e| io("stat", &tmp, e))? {
        fs.remove_file(&tmp).map_err(|e| io("remove", &tmp, e))?;
    }
    let file = fs.create(&tmp).map_err(|e| io("create", &tmp, e))?;
    file.write_at(&encode(next), 0).map_err(|e| io("write", &tmp, e))?;
    file.sync_all().map_err(|e| io("sync", &tmp, e))?;
    drop(file);
    fs.rename(&tmp, &path).map_err(|e| io("rename", &tmp, e))?;
    fs.sync_dir(dir).map_err(|e| io("sync", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bit_flip_is_caught() {
        let bytes = encode(Lsn(0x0102_0304_0506_0708));
        assert_eq!(decode(&bytes).unwrap(), Lsn(0x0102_0304_0506_0708));
        for bit in 0..CURSOR_LEN * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&b).is_err(), "bit {bit}");
        }
        assert!(decode(&bytes[..20]).unwrap_err().contains("20 bytes"));
    }

    #[test]
    fn files_are_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let fs = ingestor::StdFs::new();
        assert_eq!(read(&fs, dir.path(), "vm").unwrap(), None);
        write(&fs, dir.path(), "vm", Lsn(5)).unwrap();
        write(&fs, dir.path(), "vm", Lsn(9)).unwrap();
        assert_eq!(read(&fs, dir.path(), "vm").unwrap(), Some(Lsn(9)));
        assert!(!dir.path().join("cursor-vm.tmp").exists());
        // A temporary file a power cut left behind does not stop the next write.
        std::fs::write(dir.path().join("cursor-vm.tmp"), b"left over").unwrap();
        write(&fs, dir.path(), "vm", Lsn(10)).unwrap();
        assert_eq!(read(&fs, dir.path(), "vm").unwrap(), Some(Lsn(10)));
        std::fs::write(dir.path().join("cursor-vm"), b"garbage").unwrap();
        assert!(read(&fs, dir.path(), "vm").unwrap_err().contains("cursor-vm"));
    }
}

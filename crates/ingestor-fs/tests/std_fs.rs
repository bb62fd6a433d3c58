//! The real file system behind the [`Fs`] trait, exercised in a temporary directory.

use std::io;

use ingestor_fs::{DirEntry, EntryKind, Fs, LOCK_FILE_NAME, OpenMode, StdFs};

#[test]
fn create_write_read_and_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let fs = StdFs::new();
    let path = dir.path().join("a");
    let file = fs.create(&path).unwrap();
    assert!(file.is_empty().unwrap());
    file.write_at(b"hello", 0).unwrap();
    file.write_at(b"world", 8).unwrap();
    assert_eq!(file.len().unwrap(), 13);
    let mut buf = [0xEE; 16];
    assert_eq!(file.read_at(&mut buf, 0).unwrap(), 13);
    assert_eq!(&buf[..13], b"hello\0\0\0world");
    assert_eq!(file.read_at(&mut buf, 13).unwrap(), 0, "at the end, reads return 0");
    let mut exact = [0; 5];
    file.read_exact_at(&mut exact, 8).unwrap();
    assert_eq!(&exact, b"world");
    let err = file.read_exact_at(&mut [0; 6], 8).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);

    file.set_len(3).unwrap();
    assert_eq!(fs.read_file(&path).unwrap(), b"hel");
    file.sync_data().unwrap();
    file.sync_all().unwrap();
}

#[test]
fn allocate_grows_with_zeros_and_never_shrinks() {
    let dir = tempfile::tempdir().unwrap();
    let fs = StdFs::new();
    let file = fs.create(&dir.path().join("a")).unwrap();
    file.write_at(b"abc", 0).unwrap();
    file.allocate(4096).unwrap();
    assert_eq!(file.len().unwrap(), 4096);
    let bytes = fs.read_file(&dir.path().join("a")).unwrap();
    assert_eq!(&bytes[..3], b"abc");
    assert!(bytes[3..].iter().all(|&b| b == 0));
    file.allocate(10).unwrap();
    assert_eq!(file.len().unwrap(), 4096, "allocate never shrinks");
}

#[test]
fn start_writeback_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let fs = StdFs::new();
    let path = dir.path().join("a");
    let file = fs.create(&path).unwrap();
    let data: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    file.write_at(&data, 0).unwrap();
    file.start_writeback(0, 32 * 1024).unwrap();
    file.start_writeback(0, 0).unwrap();
    // The range written back (and dropped from the cache) reads the same, as does the rest.
    assert_eq!(fs.read_file(&path).unwrap(), data);
    file.write_at(b"after", 70_000).unwrap();
    assert_eq!(file.len().unwrap(), 70_005);
}

#[test]
fn create_on_an_existing_name_fails() {
    let dir = tempfile::tempdir().unwrap();
    let fs = StdFs::new();
    let path = dir.path().join("a");
    fs.create(&path).unwrap().write_at(b"keep", 0).unwrap();
    assert_eq!(fs.create(&path).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs.read_file(&path).unwrap(), b"keep", "the failed create truncated nothing");
}

#[test]
fn rename_remove_exists_and_sorted_read_dir() {
    let dir = tempfile::tempdir().unwrap();
    let fs = StdFs::new();
    let root = dir.path();
    fs.create_dir_all(&root.join("sub/deeper")).unwrap();
    for name in ["c", "a", "b"] {
        fs.create(&root.join(name)).unwrap().write_at(name.as_bytes(), 0).unwrap();
    }
    fs.rename(&root.join("a"), &root.join("b")).unwrap();
    assert_eq!(fs.read_file(&root.join("b")).unwrap(), b"a", "rename replaces the target");
    assert!(!fs.exists(&root.join("a")).unwrap());
    fs.remove_file(&root.join("c")).unwrap();
    assert_eq!(fs.remove_file(&root.join("c")).unwrap_err().kind(), io::ErrorKind::NotFound);
    fs.sync_dir(root).unwrap();
    assert_eq!(
        fs.read_dir(root).unwrap(),
        [
            DirEntry { name: "b".into(), kind: EntryKind::File },
            DirEntry { name: "sub".into(), kind: EntryKind::Dir },
        ]
    );
    fs.crash_point("ignored by the real file system").unwrap();
}

#[test]
fn a_read_only_handle_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let fs = StdFs::new();
    let path = dir.path().join("a");
    fs.create(&path).unwrap().write_at(b"data", 0).unwrap();
    let ro = fs.open(&path, OpenMode::Read).unwrap();
    assert_eq!(ro.write_at(b"x", 0).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(ro.set_len(0).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(ro.allocate(100).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(fs.read_file(&path).unwrap(), b"data");
    let rw = fs.open(&path, OpenMode::ReadWrite).unwrap();
    rw.write_at(b"D", 0).unwrap();
    assert_eq!(fs.read_file(&path).unwrap(), b"Data");
    assert_eq!(
        fs.open(&dir.path().join("missing"), OpenMode::Read).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
}

#[test]
fn a_second_lock_fails_until_the_first_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let fs = StdFs::new();
    let guard = fs.lock_dir(dir.path()).unwrap();
    assert_eq!(guard.path(), dir.path());
    assert!(dir.path().join(LOCK_FILE_NAME).is_file());
    let err = fs.lock_dir(dir.path()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    drop(guard);
    let _again = fs.lock_dir(dir.path()).unwrap();
}

#[test]
fn space_is_what_statvfs_says_and_create_dir_durably_makes_every_ancestor() {
    let dir = tempfile::tempdir().unwrap();
    let fs = StdFs::new();
    let (available, total) = fs.space(dir.path()).unwrap().expect("a real file system says");
    assert!(total > 0 && available <= total, "{available} of {total}");
    let deep = dir.path().join("a/b/c");
    ingestor_fs::create_dir_durably(&fs, &deep).unwrap();
    assert!(deep.is_dir());
    // Existing directories are left alone; a file in the way is an error naming it.
    ingestor_fs::create_dir_durably(&fs, &deep).unwrap();
    std::fs::write(dir.path().join("file"), b"x").unwrap();
    let err = ingestor_fs::create_dir_durably(&fs, &dir.path().join("file/sub")).unwrap_err();
    assert!(err.to_string().contains("file"), "{err}");
}

//! The behaviour of each operation, fault and trigger of the simulated disk.

use std::io;
use std::path::{Path, PathBuf};

use ingestor_fs::{
    CrashPolicy, DirEntry, EIO, ENOSPC, EntryKind, Fault, FaultKind, Fs, FsFile, OpKind, OpenMode,
    SimFs,
};

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// A disk with `/d` durable and a durable file `/d/a` holding `bytes`.
fn disk_with_durable_file(seed: u64, bytes: &[u8]) -> (SimFs, Box<dyn FsFile>) {
    let fs = SimFs::new(seed);
    fs.create_dir_all(p("/d")).unwrap();
    fs.sync_dir(p("/")).unwrap();
    let file = fs.create(p("/d/a")).unwrap();
    file.write_at(bytes, 0).unwrap();
    file.sync_data().unwrap();
    fs.sync_dir(p("/d")).unwrap();
    (fs, file)
}

fn names(fs: &SimFs, dir: &str) -> Vec<String> {
    fs.read_dir(p(dir)).unwrap().into_iter().map(|e| e.name).collect()
}

// ----- Durability of names and bytes -----

#[test]
fn a_synced_file_in_an_unsynced_directory_vanishes() {
    let fs = SimFs::new(1);
    fs.create_dir_all(p("/d")).unwrap();
    fs.sync_dir(p("/")).unwrap();
    let file = fs.create(p("/d/a")).unwrap();
    file.write_at(b"data", 0).unwrap();
    file.sync_all().unwrap();
    assert_eq!(fs.durable_len(p("/d/a")).unwrap(), 4, "the bytes are durable");
    fs.crash(CrashPolicy::DropUnsynced);
    assert!(!fs.exists(p("/d/a")).unwrap(), "but the name was not");
    assert!(fs.exists(p("/d")).unwrap());
}

#[test]
fn a_synced_file_survives_once_its_directory_is_synced() {
    let (fs, _file) = disk_with_durable_file(1, b"data");
    for policy in CrashPolicy::ALL {
        fs.crash(policy);
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"data", "{policy:?}");
    }
}

#[test]
fn a_directory_created_in_an_unsynced_parent_vanishes_with_its_contents() {
    let fs = SimFs::new(1);
    fs.create_dir_all(p("/x/y")).unwrap();
    fs.sync_dir(p("/x")).unwrap();
    let file = fs.create(p("/x/y/f")).unwrap();
    file.sync_data().unwrap();
    fs.sync_dir(p("/x/y")).unwrap();
    fs.crash(CrashPolicy::DropUnsynced);
    assert_eq!(names(&fs, "/"), Vec::<String>::new(), "/ was never synced");
}

#[test]
fn a_rename_that_is_not_durable_is_reverted() {
    let (fs, _file) = disk_with_durable_file(1, b"old a");
    let b = fs.create(p("/d/b")).unwrap();
    b.write_at(b"old b", 0).unwrap();
    b.sync_data().unwrap();
    fs.sync_dir(p("/d")).unwrap();
    fs.rename(p("/d/a"), p("/d/b")).unwrap();
    assert_eq!(names(&fs, "/d"), ["b"]);
    assert_eq!(fs.read_file(p("/d/b")).unwrap(), b"old a");

    // The only pending entry operation is the rename: reverting it is the only option.
    fs.crash(CrashPolicy::RevertDirOps);
    assert_eq!(names(&fs, "/d"), ["a", "b"]);
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"old a");
    assert_eq!(fs.read_file(p("/d/b")).unwrap(), b"old b");
}

#[test]
fn a_rename_shows_before_or_after_under_keep_prefix() {
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let (fs, _file) = disk_with_durable_file(seed, b"content");
        fs.rename(p("/d/a"), p("/d/c")).unwrap();
        fs.crash(CrashPolicy::KeepPrefix);
        let listed = names(&fs, "/d");
        assert!(listed == ["a"] || listed == ["c"], "seed {seed}: {listed:?}");
        assert_eq!(fs.read_file(&Path::new("/d").join(&listed[0])).unwrap(), b"content");
        outcomes.insert(listed);
    }
    assert_eq!(outcomes.len(), 2, "both outcomes should occur across 40 seeds");
}

#[test]
fn a_rename_made_durable_stays() {
    let (fs, _file) = disk_with_durable_file(1, b"content");
    fs.rename(p("/d/a"), p("/d/c")).unwrap();
    fs.sync_dir(p("/d")).unwrap();
    fs.crash(CrashPolicy::RevertDirOps);
    assert_eq!(names(&fs, "/d"), ["c"]);
}

#[test]
fn unsynced_bytes_are_dropped_and_durable_bytes_kept() {
    let (fs, file) = disk_with_durable_file(1, b"durable");
    file.write_at(b"XX", 2).unwrap();
    file.write_at(b" tail", 7).unwrap();
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"duXXble tail");
    fs.crash(CrashPolicy::DropUnsynced);
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"durable");
}

#[test]
fn revert_dir_ops_keeps_all_pending_data() {
    let (fs, file) = disk_with_durable_file(1, b"durable");
    file.write_at(b" and more", 7).unwrap();
    fs.crash(CrashPolicy::RevertDirOps);
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"durable and more");
}

#[test]
fn a_truncation_is_pending_until_synced() {
    let (fs, file) = disk_with_durable_file(1, b"durable");
    file.set_len(3).unwrap();
    assert_eq!(file.len().unwrap(), 3);
    assert_eq!(fs.durable_len(p("/d/a")).unwrap(), 7);
    fs.crash(CrashPolicy::DropUnsynced);
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"durable");
}

#[test]
fn allocate_grows_with_zeros_and_never_shrinks() {
    let fs = SimFs::new(1);
    let file = fs.create(p("/f")).unwrap();
    file.write_at(b"abc", 0).unwrap();
    file.allocate(8).unwrap();
    assert_eq!(fs.read_file(p("/f")).unwrap(), b"abc\0\0\0\0\0");
    file.allocate(2).unwrap();
    assert_eq!(file.len().unwrap(), 8);
    file.sync_all().unwrap();
    assert_eq!(fs.durable_len(p("/f")).unwrap(), 8);
}

#[test]
fn extend_past_synced_keeps_durable_bytes_and_zero_fills() {
    let mut lens = std::collections::BTreeSet::new();
    for seed in 0..30 {
        let (fs, file) = disk_with_durable_file(seed, b"durable");
        file.write_at(&[0xAB; 100], 7).unwrap();
        fs.crash(CrashPolicy::ExtendPastSynced { garbage: false });
        let bytes = fs.read_file(p("/d/a")).unwrap();
        assert!(bytes.len() > 7 && bytes.len() <= 107, "seed {seed}: {}", bytes.len());
        assert_eq!(&bytes[..7], b"durable", "seed {seed}");
        assert!(bytes[7..].iter().all(|&b| b == 0), "seed {seed}: the data was not synced");
        lens.insert(bytes.len());
    }
    assert!(lens.len() > 5, "{lens:?}");
}

#[test]
fn torn_sectors_change_only_sectors_that_were_written() {
    for seed in 0..50 {
        let (fs, file) = disk_with_durable_file(seed, &[0x11; 8192]);
        file.write_at(&[0x22; 100], 600).unwrap(); // inside sector 1 (512-byte sectors)
        file.write_at(&[0x33; 10], 8190).unwrap(); // across the end: sectors 15 and 16
        fs.crash(CrashPolicy::TornSectors { sector_bytes: 512 });
        let bytes = fs.read_file(p("/d/a")).unwrap();
        assert!(bytes.len() == 8192 || bytes.len() == 8200, "seed {seed}: {}", bytes.len());
        for (i, &b) in bytes.iter().enumerate().take(8190) {
            if !(600..700).contains(&i) {
                assert_eq!(b, 0x11, "seed {seed}: byte {i} was never overwritten");
            }
        }
    }
}

// ----- Failed syncs -----

#[test]
fn a_failed_sync_loses_the_pending_bytes_for_good() {
    let (fs, file) = disk_with_durable_file(1, b"old");
    file.write_at(b"NEW", 0).unwrap();
    fs.inject(Fault::new(OpKind::SyncData, FaultKind::SyncLosesData));
    let err = file.sync_data().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(EIO));
    // Reads still return the lost bytes, as Linux's page cache does...
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"NEW");
    // ...and a second sync succeeds without making them durable.
    file.sync_data().unwrap();
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"NEW");
    for policy in CrashPolicy::ALL {
        fs.crash(policy);
        assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"old", "{policy:?}");
    }
    assert_eq!(fs.stats().faults_fired.get("SyncLosesData"), Some(&1));
}

#[test]
fn a_failed_sync_is_reported_once_through_every_handle() {
    let (fs, first) = disk_with_durable_file(1, b"old");
    let second = fs.open(p("/d/a"), OpenMode::ReadWrite).unwrap();
    first.write_at(b"NEW", 0).unwrap();
    fs.inject(Fault::new(OpKind::SyncData, FaultKind::SyncLosesData));
    assert_eq!(first.sync_data().unwrap_err().raw_os_error(), Some(EIO));
    // The other handle was open before the error: its next sync reports it (as Linux does
    // per open file description), else it would claim the lost bytes durable; and, as on
    // Linux, that failed sync makes nothing durable, not even what was written since.
    second.write_at(b"two", 3).unwrap();
    assert_eq!(second.sync_all().unwrap_err().raw_os_error(), Some(EIO));
    assert_eq!(fs.stats().file_syncs, 1, "only the setup's sync succeeded");
    // Once each.
    first.sync_data().unwrap();
    second.sync_data().unwrap();
    // A handle opened after the error was reported does not see it.
    let third = fs.open(p("/d/a"), OpenMode::Read).unwrap();
    third.sync_data().unwrap();
    fs.crash(CrashPolicy::KeepPrefix);
    // The writes since the error became durable with the later syncs; the lost ones never.
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"oldtwo");
    assert_eq!(fs.stats().faults_fired.get("SyncLosesData"), Some(&1));
}

#[test]
fn a_sync_that_reports_another_handles_error_makes_nothing_durable() {
    let (fs, first) = disk_with_durable_file(1, b"old");
    let second = fs.open(p("/d/a"), OpenMode::ReadWrite).unwrap();
    first.write_at(b"NEW", 0).unwrap();
    fs.inject(Fault::new(OpKind::SyncData, FaultKind::SyncLosesData));
    first.sync_data().unwrap_err();
    second.write_at(b"two", 3).unwrap();
    // Linux skips the journal commit and the cache flush of a sync that reports an error:
    // what was written since stays pending.
    assert_eq!(second.sync_data().unwrap_err().raw_os_error(), Some(EIO));
    fs.crash(CrashPolicy::DropUnsynced);
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"old");
}

#[test]
fn writes_after_a_failed_sync_can_still_become_durable() {
    let (fs, file) = disk_with_durable_file(1, b"old");
    file.write_at(b"lost", 3).unwrap();
    fs.inject(Fault::new(OpKind::SyncAll, FaultKind::SyncLosesData));
    file.sync_all().unwrap_err();
    file.write_at(b"kept", 7).unwrap();
    file.sync_all().unwrap();
    fs.crash(CrashPolicy::DropUnsynced);
    // The lost bytes are a hole of zeros under the later write's extension.
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"old\0\0\0\0kept");
}

// ----- Injected faults -----

#[test]
fn enospc_fires_on_the_nth_matching_write_only() {
    let fs = SimFs::new(1);
    let x = fs.create(p("/x")).unwrap();
    let y = fs.create(p("/y")).unwrap();
    fs.inject(Fault::new(OpKind::Write, FaultKind::Enospc).on_path("/x").on_nth(3));
    x.write_at(b"1", 0).unwrap();
    y.write_at(b"other path", 0).unwrap();
    x.write_at(b"2", 1).unwrap();
    let err = x.write_at(b"3", 2).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(ENOSPC));
    assert_eq!(fs.read_file(p("/x")).unwrap(), b"12", "the failed write had no effect");
    x.write_at(b"4", 2).unwrap();
    assert_eq!(fs.read_file(p("/x")).unwrap(), b"124", "the fault fired once");
    assert_eq!(fs.stats().faults_fired.get("Enospc"), Some(&1));
}

#[test]
fn a_short_write_writes_a_strict_nonempty_prefix() {
    let mut lens = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let fs = SimFs::new(seed);
        let f = fs.create(p("/f")).unwrap();
        fs.inject(Fault::new(OpKind::Write, FaultKind::ShortWrite));
        let err = f.write_at(b"0123456789", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(ENOSPC));
        let bytes = fs.read_file(p("/f")).unwrap();
        assert!(!bytes.is_empty() && bytes.len() < 10, "seed {seed}: {bytes:?}");
        assert_eq!(bytes[..], b"0123456789"[..bytes.len()], "seed {seed}");
        lens.insert(bytes.len());
    }
    assert!(lens.len() > 3, "{lens:?}");

    let fs = SimFs::new(1);
    let f = fs.create(p("/f")).unwrap();
    fs.inject(Fault::new(OpKind::Write, FaultKind::ShortWrite));
    f.write_at(b"x", 0).unwrap_err();
    assert_eq!(f.len().unwrap(), 0, "a one-byte buffer has no non-empty strict prefix");
}

#[test]
fn eio_faults_have_no_effect() {
    let (fs, file) = disk_with_durable_file(1, b"data");
    fs.inject(Fault::new(OpKind::Read, FaultKind::Eio));
    let err = fs.read_file(p("/d/a")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(EIO));
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"data");

    fs.inject(Fault::new(OpKind::Create, FaultKind::Eio));
    assert_eq!(fs.create(p("/d/b")).unwrap_err().raw_os_error(), Some(EIO));
    assert!(!fs.exists(p("/d/b")).unwrap());

    // The rename filter matches the destination too.
    fs.inject(Fault::new(OpKind::Rename, FaultKind::Eio).on_path("/d/z"));
    assert_eq!(fs.rename(p("/d/a"), p("/d/z")).unwrap_err().raw_os_error(), Some(EIO));
    assert_eq!(names(&fs, "/d"), ["a"]);

    fs.inject(Fault::new(OpKind::SyncData, FaultKind::Eio));
    file.write_at(b"!", 4).unwrap();
    assert_eq!(file.sync_data().unwrap_err().raw_os_error(), Some(EIO));
    file.sync_data().unwrap();
    fs.crash(CrashPolicy::DropUnsynced);
    assert_eq!(
        fs.read_file(p("/d/a")).unwrap(),
        b"data!",
        "a plain EIO on sync keeps the writes pending"
    );
    assert_eq!(fs.stats().faults_fired.get("Eio"), Some(&4));
}

#[test]
fn fault_kinds_outside_their_operation_act_as_plain_errors() {
    let fs = SimFs::new(1);
    fs.inject(Fault::new(OpKind::CreateDir, FaultKind::ShortWrite));
    let err = fs.create_dir_all(p("/d")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(ENOSPC));
    assert!(!fs.exists(p("/d")).unwrap());
    fs.inject(Fault::new(OpKind::SyncDir, FaultKind::SyncLosesData));
    assert_eq!(fs.sync_dir(p("/")).unwrap_err().raw_os_error(), Some(EIO));
    assert_eq!(fs.stats().dir_syncs, 0);
}

#[test]
fn exists_can_fail_but_is_not_counted() {
    let fs = SimFs::new(1);
    fs.inject(Fault::new(OpKind::Exists, FaultKind::Eio));
    assert_eq!(fs.exists(p("/")).unwrap_err().raw_os_error(), Some(EIO));
    assert!(fs.exists(p("/")).unwrap());
    assert_eq!(fs.stats().ops, 0);
}

#[test]
fn cleared_faults_never_fire() {
    let fs = SimFs::new(1);
    fs.inject(Fault::new(OpKind::CreateDir, FaultKind::Eio));
    fs.clear_faults();
    fs.create_dir_all(p("/d")).unwrap();
    assert!(fs.stats().faults_fired.is_empty());
}

// ----- Crash triggers -----

#[test]
fn an_armed_crash_point_cuts_the_power_until_crash() {
    let fs = SimFs::new(1);
    let file = fs.create(p("/f")).unwrap();
    fs.sync_dir(p("/")).unwrap();
    fs.arm_crash_point("wal.append", 2);
    fs.crash_point("wal.append").unwrap();
    file.write_at(b"written", 0).unwrap();
    let err = fs.crash_point("wal.append").unwrap_err();
    assert!(SimFs::is_power_cut(&err), "{err}");
    assert_eq!(err.kind(), io::ErrorKind::Other);
    assert!(fs.is_crashed());

    // Every call fails without effect, on the disk and on every handle.
    assert!(SimFs::is_power_cut(&file.sync_data().unwrap_err()));
    assert!(SimFs::is_power_cut(&file.len().unwrap_err()));
    assert!(SimFs::is_power_cut(&fs.exists(p("/f")).unwrap_err()));
    assert!(SimFs::is_power_cut(&fs.create(p("/g")).unwrap_err()));
    assert!(SimFs::is_power_cut(&fs.crash_point("other").unwrap_err()));
    assert_eq!(fs.crash_points_reached().get("wal.append"), Some(&2));
    assert_eq!(fs.crash_points_reached().get("other"), None, "not counted while off");

    fs.crash(CrashPolicy::DropUnsynced);
    assert!(!fs.is_crashed());
    assert_eq!(fs.read_file(p("/f")).unwrap(), b"", "the sync never happened");
    fs.crash_point("wal.append").unwrap();
    assert_eq!(fs.crash_points_reached().get("wal.append"), Some(&3));
}

#[test]
fn while_the_power_is_cut_even_bad_paths_get_the_power_cut_error() {
    let fs = SimFs::new(1);
    fs.arm_crash_at_op(1);
    fs.sync_dir(p("/")).unwrap_err();
    assert!(SimFs::is_power_cut(&fs.create(p("relative")).unwrap_err()));
    fs.crash(CrashPolicy::DropUnsynced);
    assert_eq!(fs.create(p("relative")).unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn a_denied_write_is_counted_and_can_be_the_crash() {
    let fs = SimFs::new(1);
    drop(fs.create(p("/f")).unwrap());
    let ro = fs.open(p("/f"), OpenMode::Read).unwrap();
    assert_eq!(fs.stats().ops, 2);
    ro.write_at(b"x", 0).unwrap_err();
    assert_eq!(fs.stats().ops, 3);
    fs.arm_crash_at_op(1);
    assert!(SimFs::is_power_cut(&ro.write_at(b"x", 0).unwrap_err()));
}

#[test]
fn crash_disarms_every_trigger() {
    let fs = SimFs::new(1);
    fs.arm_crash_point("p", 1);
    fs.arm_crash_at_op(1);
    fs.crash(CrashPolicy::DropUnsynced);
    fs.crash_point("p").unwrap();
    fs.create_dir_all(p("/d")).unwrap();
    assert!(!fs.is_crashed());
}

#[test]
fn a_crash_at_an_operation_happens_before_it_takes_effect() {
    let fs = SimFs::new(1);
    let file = fs.create(p("/f")).unwrap(); // op 1
    fs.sync_dir(p("/")).unwrap(); // op 2
    fs.arm_crash_at_op(2);
    file.write_at(b"abc", 0).unwrap(); // op 3
    assert_eq!(file.len().unwrap(), 3, "len is not counted");
    assert!(fs.exists(p("/f")).unwrap(), "exists is not counted");
    let err = file.sync_data().unwrap_err(); // op 4: the power is cut before the sync
    assert!(SimFs::is_power_cut(&err));
    assert_eq!(fs.stats().ops, 4);
    fs.crash(CrashPolicy::DropUnsynced);
    assert_eq!(fs.read_file(p("/f")).unwrap(), b"");
}

#[test]
fn is_power_cut_sees_through_wrapping() {
    let fs = SimFs::new(1);
    fs.arm_crash_at_op(1);
    let err = fs.create_dir_all(p("/d")).unwrap_err();
    let wrapped = io::Error::other(err);
    assert!(SimFs::is_power_cut(&wrapped));
    assert!(!SimFs::is_power_cut(&io::Error::from_raw_os_error(EIO)));
    assert!(!SimFs::is_power_cut(&io::Error::other("simulated power cut, but a string")));
}

// ----- Handles and locks -----

#[test]
fn handles_from_before_a_crash_are_stale() {
    let (fs, file) = disk_with_durable_file(1, b"data");
    fs.crash(CrashPolicy::DropUnsynced);
    let err = file.read_at(&mut [0; 4], 0).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::StaleNetworkFileHandle);
    assert!(err.to_string().contains("stale handle"), "{err}");
    assert_eq!(file.write_at(b"x", 0).unwrap_err().kind(), io::ErrorKind::StaleNetworkFileHandle);
    drop(file); // Dropping a stale handle must not disturb the new generation.
    let again = fs.open(p("/d/a"), OpenMode::Read).unwrap();
    assert_eq!(again.len().unwrap(), 4);
}

#[test]
fn a_handle_to_a_removed_file_keeps_working() {
    let (fs, file) = disk_with_durable_file(1, b"data");
    fs.remove_file(p("/d/a")).unwrap();
    fs.sync_dir(p("/d")).unwrap();
    assert!(!fs.exists(p("/d/a")).unwrap());
    file.write_at(b"more", 4).unwrap();
    file.sync_data().unwrap();
    let mut buf = [0; 8];
    assert_eq!(file.read_at(&mut buf, 0).unwrap(), 8);
    assert_eq!(&buf, b"datamore");
    fs.crash(CrashPolicy::RevertDirOps);
    assert!(!fs.exists(p("/d/a")).unwrap(), "the removal was durable");
}

#[test]
fn a_read_only_handle_cannot_write() {
    let (fs, _file) = disk_with_durable_file(1, b"data");
    let ro = fs.open(p("/d/a"), OpenMode::Read).unwrap();
    assert_eq!(ro.write_at(b"x", 0).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(ro.set_len(0).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(ro.allocate(100).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    ro.sync_data().unwrap();
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), b"data");
}

#[test]
fn a_second_lock_fails_until_the_first_is_dropped() {
    let fs = SimFs::new(1);
    fs.create_dir_all(p("/db")).unwrap();
    let guard = fs.lock_dir(p("/db")).unwrap();
    assert_eq!(guard.path(), p("/db"));
    let err = fs.lock_dir(p("/db/.")).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(err.to_string().contains("/db"), "{err}");
    fs.lock_dir(p("/")).unwrap(); // Another directory is independent.
    drop(guard);
    let _again = fs.lock_dir(p("/db")).unwrap();
    assert_eq!(fs.lock_dir(p("/missing")).unwrap_err().kind(), io::ErrorKind::NotFound);
}

#[test]
fn a_crash_releases_locks_and_stale_guards_release_nothing() {
    let fs = SimFs::new(1);
    fs.create_dir_all(p("/db")).unwrap();
    fs.sync_dir(p("/")).unwrap();
    let old = fs.lock_dir(p("/db")).unwrap();
    fs.crash(CrashPolicy::DropUnsynced);
    let new = fs.lock_dir(p("/db")).unwrap();
    drop(old);
    assert_eq!(fs.lock_dir(p("/db")).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    drop(new);
    fs.lock_dir(p("/db")).unwrap();
}

// ----- Namespace errors -----

#[test]
fn namespace_errors() {
    let fs = SimFs::new(1);
    fs.create_dir_all(p("/d/e")).unwrap();
    fs.create_dir_all(p("/d/e")).unwrap(); // Idempotent.
    drop(fs.create(p("/d/f")).unwrap());
    let kind = |r: io::Result<()>| r.unwrap_err().kind();
    assert_eq!(fs.create(p("/d/f")).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs.create(p("/d/e")).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(fs.create(p("/nope/f")).unwrap_err().kind(), io::ErrorKind::NotFound);
    assert_eq!(fs.create(p("relative")).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    assert_eq!(fs.create(p("/d/../f")).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    assert_eq!(fs.open(p("/d/g"), OpenMode::Read).unwrap_err().kind(), io::ErrorKind::NotFound);
    assert_eq!(fs.read_dir(p("/nope")).unwrap_err().kind(), io::ErrorKind::NotFound);
    assert_eq!(kind(fs.remove_file(p("/d/g"))), io::ErrorKind::NotFound);
    assert_eq!(kind(fs.remove_file(p("/d/e"))), io::ErrorKind::IsADirectory);
    assert_eq!(kind(fs.create_dir_all(p("/d/f/x"))), io::ErrorKind::NotADirectory);
    assert_eq!(kind(fs.rename(p("/d/f"), p("/d/e/f"))), io::ErrorKind::Unsupported);
    assert_eq!(kind(fs.rename(p("/d/e"), p("/d/e2"))), io::ErrorKind::Unsupported);
    assert_eq!(kind(fs.rename(p("/d/g"), p("/d/h"))), io::ErrorKind::NotFound);
    assert_eq!(kind(fs.rename(p("/d/f"), p("/d/e"))), io::ErrorKind::IsADirectory);
    // "." components are normalized away.
    assert!(fs.exists(p("/d/./f")).unwrap());
    assert_eq!(
        fs.read_dir(p("/./d")).unwrap(),
        [
            DirEntry { name: "e".into(), kind: EntryKind::Dir },
            DirEntry { name: "f".into(), kind: EntryKind::File },
        ]
    );
    fs.rename(p("/d/f"), p("/d/f")).unwrap();
    assert_eq!(names(&fs, "/d"), ["e", "f"]);
}

#[test]
fn rename_replaces_the_target_atomically() {
    let fs = SimFs::new(1);
    let a = fs.create(p("/a")).unwrap();
    a.write_at(b"new", 0).unwrap();
    let b = fs.create(p("/b")).unwrap();
    b.write_at(b"old contents", 0).unwrap();
    fs.rename(p("/a"), p("/b")).unwrap();
    assert_eq!(names(&fs, "/"), ["b"]);
    assert_eq!(fs.read_file(p("/b")).unwrap(), b"new");
    // The replaced file lives on through its handle.
    assert_eq!(b.len().unwrap(), 12);
}

// ----- Inspection -----

#[test]
fn flip_bit_changes_exactly_one_bit_of_durable_data() {
    let (fs, file) = disk_with_durable_file(1, &[0u8; 64]);
    file.write_at(&[0xFF; 16], 64).unwrap(); // pending, past the durable length
    fs.flip_bit(p("/d/a"), 10, 3).unwrap();
    let now = fs.read_file(p("/d/a")).unwrap();
    let mut expected = vec![0u8; 64];
    expected[10] = 0b1000;
    expected.extend_from_slice(&[0xFF; 16]);
    assert_eq!(now, expected, "reads see the flipped bit");
    fs.crash(CrashPolicy::DropUnsynced);
    assert_eq!(fs.read_file(p("/d/a")).unwrap(), expected[..64], "and so does the disk");
    assert_eq!(fs.flip_bit(p("/d/a"), 64, 0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    assert_eq!(fs.flip_bit(p("/d/a"), 0, 8).unwrap_err().kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn files_lists_the_current_namespace_sorted() {
    let fs = SimFs::new(1);
    fs.create_dir_all(p("/a/b")).unwrap();
    fs.create(p("/a0")).unwrap().write_at(b"xy", 0).unwrap();
    fs.create(p("/a/b/z")).unwrap().write_at(b"xyz", 0).unwrap();
    fs.create(p("/a/c")).unwrap();
    assert_eq!(
        fs.files(),
        [(PathBuf::from("/a/b/z"), 3), (PathBuf::from("/a/c"), 0), (PathBuf::from("/a0"), 2),]
    );
}

#[test]
fn dump_to_writes_the_tree() {
    let fs = SimFs::new(1);
    fs.create_dir_all(p("/wal/empty")).unwrap();
    fs.create(p("/wal/seg")).unwrap().write_at(b"segment bytes", 0).unwrap();
    fs.create(p("/top")).unwrap().write_at(b"t", 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    fs.dump_to(dir.path()).unwrap();
    assert_eq!(std::fs::read(dir.path().join("wal/seg")).unwrap(), b"segment bytes");
    assert_eq!(std::fs::read(dir.path().join("top")).unwrap(), b"t");
    assert!(dir.path().join("wal/empty").is_dir());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

fn scripted_run(seed: u64, payload: &[u8]) -> (u64, Vec<u8>) {
    let (fs, file) = disk_with_durable_file(seed, &[7; 3000]);
    file.write_at(payload, 100).unwrap();
    file.write_at(payload, 2990).unwrap();
    fs.crash_point("step").unwrap();
    let _ = fs.crash_random();
    (fs.trace_hash(), fs.read_file(p("/d/a")).unwrap())
}

#[test]
fn trace_hash_is_equal_for_equal_runs_and_differs_otherwise() {
    let a = scripted_run(5, b"payload");
    assert_eq!(a, scripted_run(5, b"payload"));
    assert_ne!(a.0, scripted_run(5, b"pAyload").0, "data bytes are traced");
    let hashes: std::collections::BTreeSet<u64> =
        (0..8).map(|seed| scripted_run(seed, b"payload").0).collect();
    assert!(hashes.len() > 1, "crash images are traced");
}

#[test]
fn stats_count_what_happened() {
    let fs = SimFs::new(1);
    let f = fs.create(p("/f")).unwrap();
    f.write_at(b"abcd", 0).unwrap();
    f.write_at(b"", 0).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(p("/")).unwrap();
    fs.crash(CrashPolicy::KeepPrefix);
    let stats = fs.stats();
    assert_eq!(stats.ops, 5);
    assert_eq!(stats.writes, 1, "an empty write changes nothing");
    assert_eq!(stats.bytes_written, 4);
    assert_eq!(stats.file_syncs, 1);
    assert_eq!(stats.dir_syncs, 1);
    assert_eq!(stats.crashes, 1);
}

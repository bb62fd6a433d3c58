//! The simulated disk: a deterministic, in-memory [`Fs`] that models what a real disk and file
//! system keep after a power cut (the model in `docs/format.md`, "Assumptions about the storage medium").
//!
//! See [`SimFs`] for the model.

mod crash;
mod rng;
mod state;
mod trace;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use self::state::{Call, HandleCheck, Node, NodeId, SimPath, State, Tag, check_len, fail_if};
use crate::{DirEntry, Fs, FsFile, FsLock, OpenMode};

/// What a simulated power cut keeps of the state that was not yet durable.
///
/// Every policy starts from the durable state; they differ in how much of each file's pending
/// data operations (`before` = durable bytes, `after` = durable bytes with every pending
/// operation applied) and of each directory's pending entry operations survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPolicy {
    /// Drops every un-synced write and every un-synced directory change: exactly the durable
    /// state survives.
    DropUnsynced,
    /// Per file, a random prefix (possibly empty, possibly all) of its pending data
    /// operations survives; per directory, a random prefix of its pending entry operations.
    KeepPrefix,
    /// Sector-granular write-back. The file's length becomes that of `before` or of `after`
    /// (random, when they differ). Each sector of `sector_bytes` in which `before` and
    /// `after` differ (a byte past a length counts as differing) comes out old (zeros past
    /// the old length), new, garbage (random bytes at the differing positions only) or split
    /// (new up to a random cut, old after it). Bytes equal in `before` and `after` never
    /// change. Directories keep a random prefix of their pending entry operations.
    TornSectors {
        /// The sector size: 512 or 4096 on real disks.
        sector_bytes: u32,
    },
    /// The file system persisted a file's new size but not its data (ext4's
    /// `data=writeback`): pending data operations are dropped, but a file whose `after` is
    /// longer than `before` is extended to a random length in `(before.len(), after.len()]`
    /// with zeros or, if `garbage`, random bytes. Directories keep a random prefix of their
    /// pending entry operations.
    ExtendPastSynced {
        /// Whether the extension reads as random bytes rather than zeros.
        garbage: bool,
    },
    /// Every file's pending data operations survive (as if written back), but each directory
    /// with pending entry operations loses a random number, at least one, of its most recent
    /// ones (keeps a strict prefix).
    RevertDirOps,
}

impl CrashPolicy {
    /// One of each policy, with both common sector sizes and both extension fillings: what a
    /// test loops over to try them all.
    pub const ALL: [CrashPolicy; 7] = [
        CrashPolicy::DropUnsynced,
        CrashPolicy::KeepPrefix,
        CrashPolicy::TornSectors { sector_bytes: 512 },
        CrashPolicy::TornSectors { sector_bytes: 4096 },
        CrashPolicy::ExtendPastSynced { garbage: false },
        CrashPolicy::ExtendPastSynced { garbage: true },
        CrashPolicy::RevertDirOps,
    ];
}

/// The kinds of operation the simulated disk counts, and that faults target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// [`Fs::create_dir_all`] (one operation, however many directories it creates).
    CreateDir,
    /// [`Fs::create`].
    Create,
    /// [`Fs::open`] (and the open inside [`Fs::read_file`]).
    Open,
    /// [`FsFile::read_at`].
    Read,
    /// [`FsFile::write_at`].
    Write,
    /// [`FsFile::set_len`].
    SetLen,
    /// [`FsFile::allocate`].
    Allocate,
    /// [`FsFile::sync_data`].
    SyncData,
    /// [`FsFile::sync_all`].
    SyncAll,
    /// [`Fs::sync_dir`].
    SyncDir,
    /// [`Fs::rename`]; a fault's path filter matches either path.
    Rename,
    /// [`Fs::remove_file`].
    Remove,
    /// [`Fs::read_dir`].
    ReadDir,
    /// [`Fs::exists`]; faults can target it, but it is not counted by
    /// [`SimFs::arm_crash_at_op`].
    Exists,
    /// [`Fs::lock_dir`].
    Lock,
}

/// How an injected fault makes its operation fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation fails with `EIO` and has no effect.
    Eio,
    /// The operation fails with `ENOSPC` and has no effect.
    Enospc,
    /// On [`OpKind::Write`]: writes a random non-empty strict prefix of the buffer (nothing
    /// if it is shorter than 2 bytes), then fails with `ENOSPC`. Elsewhere: as
    /// [`FaultKind::Enospc`].
    ShortWrite,
    /// On [`OpKind::SyncData`] and [`OpKind::SyncAll`]: fails with `EIO`, and the file's
    /// pending writes are dropped from what can ever become durable while reads still return
    /// them (Linux's write-back error behaviour). The error is reported once per handle:
    /// the next sync through each other handle open at the time fails with `EIO` as well,
    /// making nothing durable, and after that syncs succeed without making the dropped
    /// writes durable. Elsewhere: as [`FaultKind::Eio`].
    SyncLosesData,
}

impl FaultKind {
    /// The fault's name, as counted in [`SimStats::faults_fired`].
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Eio => "Eio",
            FaultKind::Enospc => "Enospc",
            FaultKind::ShortWrite => "ShortWrite",
            FaultKind::SyncLosesData => "SyncLosesData",
        }
    }
}

/// A fault to inject: the `nth` operation of kind `op` (on a path containing
/// `path_contains`, if set) fails as `kind`. It fires once, then is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The operation it targets.
    pub op: OpKind,
    /// Only operations on a path containing this substring match. For calls on a file
    /// handle, the path is the one the file was created or opened with.
    pub path_contains: Option<String>,
    /// Which matching operation fails, counted from the injection: 1 is the next one.
    pub nth: u64,
    /// How it fails.
    pub kind: FaultKind,
}

impl Fault {
    /// A fault that fails the next operation of kind `op`, on any path.
    #[must_use]
    pub fn new(op: OpKind, kind: FaultKind) -> Fault {
        Fault { op, path_contains: None, nth: 1, kind }
    }

    /// Restricts the fault to paths containing `needle`.
    #[must_use]
    pub fn on_path(mut self, needle: impl Into<String>) -> Fault {
        self.path_contains = Some(needle.into());
        self
    }

    /// Fires on the `nth` matching operation (1 is the next one).
    #[must_use]
    pub fn on_nth(mut self, nth: u64) -> Fault {
        self.nth = nth;
        self
    }
}

/// What the simulated disk has done since it was made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Counted operations: every [`Fs`] and [`FsFile`] call except `crash_point`, `len` and
    /// `exists`, including calls that failed, but not those refused before reaching the disk:
    /// while the power was cut, on a stale handle, or with a malformed path.
    pub ops: u64,
    /// Writes that changed the file (a short write counts if it wrote anything).
    pub writes: u64,
    /// Bytes those writes wrote.
    pub bytes_written: u64,
    /// Successful `sync_data` and `sync_all` calls.
    pub file_syncs: u64,
    /// Successful `sync_dir` calls.
    pub dir_syncs: u64,
    /// Crash images built.
    pub crashes: u64,
    /// Injected faults that fired, by [`FaultKind::name`].
    pub faults_fired: BTreeMap<String, u64>,
}

/// A deterministic in-memory disk that can lose what was not synced. Clones share the same
/// disk.
///
/// # The model
///
/// - A **file** (inode) has *durable* bytes (what survives any crash; their length is the
///   durable length), *current* bytes (what reads return) and the *pending* data operations
///   (writes and length changes) issued since its last sync, in order. `sync_data` and
///   `sync_all` apply the pending operations, in order, onto the durable bytes. They do not
///   copy the current bytes: after a failed sync ([`FaultKind::SyncLosesData`]) the current
///   bytes hold writes that must never become durable. Such an error is reported once to
///   every handle of the file, as Linux reports a write-back error once per open file
///   description: a handle open at the time fails its next sync too, which makes nothing
///   durable (the writes since stay pending).
/// - A **directory** has durable entries, current entries and the pending entry operations
///   (create, remove, rename) since its last sync. Only [`Fs::sync_dir`] makes them durable,
///   so a file that was created and synced, in a directory that was not, can vanish.
/// - A **crash** ([`SimFs::crash`]) builds a new disk from the durable state plus a part of
///   the pending state that a [`CrashPolicy`] chooses, per file and per directory, with the
///   seeded generator. Durable bytes and names are never changed, except by a pending
///   operation on them that the policy lets through. Everything not reachable from `/`
///   through durable entries is gone; every open handle and lock becomes stale.
/// - A **crash trigger** ([`SimFs::arm_crash_point`], [`SimFs::arm_crash_at_op`]) cuts the
///   power in the middle of a run: the triggering call fails without effect, and so does
///   every later call, until [`SimFs::crash`].
/// - An **injected fault** ([`SimFs::inject`]) fails one chosen operation.
///
/// Everything is deterministic: the same seed and the same calls, in the same order, give the
/// same results, the same images and the same [`SimFs::trace_hash`]. (Calls from several
/// threads are only as deterministic as their interleaving.)
///
/// # Differences from [`StdFs`](crate::StdFs)
///
/// - Paths must be absolute; `.` components are ignored and `..` is refused
///   ([`io::ErrorKind::InvalidInput`]).
/// - Only files can be renamed, and only within one directory
///   ([`io::ErrorKind::Unsupported`] otherwise).
/// - [`Fs::lock_dir`] keeps the lock in memory and creates no lock file.
/// - Files hold at most 4 GiB ([`io::ErrorKind::FileTooLarge`] beyond), since they live in
///   memory.
/// - A handle used after a crash fails with [`io::ErrorKind::StaleNetworkFileHandle`].
#[derive(Clone, Debug)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().expect("the simulated disk's state was poisoned by a panic while it was locked")
}

/// Runs one call: traces it, passes it through the gate, runs `body` with the fault that
/// fired (if any), and traces the result.
fn run<T>(
    state: &Mutex<State>,
    call: &Call<'_>,
    body: impl FnOnce(&mut State, Option<FaultKind>) -> io::Result<T>,
) -> io::Result<T> {
    let mut guard = lock(state);
    let st = &mut *guard;
    st.trace_call(call);
    let result = match st.gate(call) {
        Ok(fault) => body(st, fault),
        Err(e) => Err(e),
    };
    st.trace_result(&result);
    result
}

fn op_call(op: OpKind, path: &str) -> Call<'_> {
    Call { tag: Tag::Op(op), counted: true, path, to: None, nums: &[], data: &[], handle: None }
}

impl SimFs {
    /// An empty disk: only the root directory `/`, which exists and is durable. Every random
    /// choice the disk makes is drawn from a generator seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> SimFs {
        SimFs { state: Arc::new(Mutex::new(State::new(seed))) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Cuts the power and builds the post-crash image under `policy` (see [`CrashPolicy`]).
    ///
    /// Afterwards every file and directory holds its new durable state, nothing is pending,
    /// every handle and lock taken before is stale, the power is back on (if a trigger had
    /// cut it), and every armed crash trigger is disarmed. Injected faults stay until they
    /// fire or [`SimFs::clear_faults`].
    pub fn crash(&self, policy: CrashPolicy) {
        self.lock().crash(policy);
    }

    /// Kills the process using the disk, not the power: every handle and lock taken before
    /// becomes stale (as after [`SimFs::crash`]), files that only open handles kept are
    /// gone, every armed crash trigger is disarmed, and every call fails (the dead process's
    /// threads that still run reach nothing) until [`SimFs::revive`] or [`SimFs::crash`];
    /// but nothing pending is lost or made durable: the page cache outlives a process, and a
    /// later power cut may still take it.
    ///
    /// ```
    /// use std::path::Path;
    /// use ingestor_fs::{CrashPolicy, Fs, SimFs};
    ///
    /// let sim = SimFs::new(1);
    /// sim.create_dir_all(Path::new("/d")).unwrap();
    /// let file = sim.create(Path::new("/d/f")).unwrap();
    /// file.write_at(b"unsynced", 0).unwrap();
    /// sim.kill();
    /// assert!(sim.read_file(Path::new("/d/f")).is_err(), "the dead reach nothing");
    /// sim.revive();
    /// assert!(file.write_at(b"x", 0).is_err(), "the dead process's handle is stale");
    /// assert_eq!(sim.read_file(Path::new("/d/f")).unwrap(), b"unsynced", "the cache kept it");
    /// sim.crash(CrashPolicy::DropUnsynced);
    /// assert!(sim.read_file(Path::new("/d/f")).is_err(), "never synced: gone with the power");
    /// ```
    pub fn kill(&self) {
        self.lock().kill();
    }

    /// Lets a new process use the disk after [`SimFs::kill`] (a no-op otherwise).
    pub fn revive(&self) {
        self.lock().revive();
    }

    /// Whether the process using the disk was killed and not yet revived.
    #[must_use]
    pub fn is_killed(&self) -> bool {
        self.lock().killed
    }

    /// Like [`SimFs::crash`], with a policy (and its sector size or filling) drawn from the
    /// seeded generator; returns the policy it applied.
    pub fn crash_random(&self) -> CrashPolicy {
        let mut st = self.lock();
        let policy = match st.rng.below(5) {
            0 => CrashPolicy::DropUnsynced,
            1 => CrashPolicy::KeepPrefix,
            2 => CrashPolicy::TornSectors { sector_bytes: if st.rng.coin() { 512 } else { 4096 } },
            3 => CrashPolicy::ExtendPastSynced { garbage: st.rng.coin() },
            _ => CrashPolicy::RevertDirOps,
        };
        st.crash(policy);
        policy
    }

    /// Injects a fault; it fires once, on its `nth` matching operation. When two faults
    /// would fire on the same operation, the earlier injected one does and the other fires
    /// on the next match.
    ///
    /// # Panics
    ///
    /// If `fault.nth` is 0 (the first match is 1).
    pub fn inject(&self, fault: Fault) {
        assert!(fault.nth >= 1, "Fault::nth counts from 1 (the next matching operation)");
        self.lock().inject(fault);
    }

    /// Removes every injected fault that has not fired yet.
    pub fn clear_faults(&self) {
        self.lock().clear_faults();
    }

    /// Makes the `nth` announcement of crash point `name` from now (1 = the next) cut the
    /// power: that [`Fs::crash_point`] call fails, and so does every call after it until
    /// [`SimFs::crash`].
    ///
    /// # Panics
    ///
    /// If `nth` is 0.
    pub fn arm_crash_point(&self, name: &str, nth: u64) {
        assert!(nth >= 1, "arm_crash_point counts from 1 (the next announcement)");
        let mut st = self.lock();
        let target = st.points_reached.get(name).copied().unwrap_or(0) + nth;
        st.armed_points.entry(name.to_owned()).or_default().insert(target);
    }

    /// Makes the `nth` counted operation from now (1 = the next) cut the power before it
    /// takes effect (see [`SimStats::ops`] for what counts).
    ///
    /// # Panics
    ///
    /// If `nth` is 0.
    pub fn arm_crash_at_op(&self, nth: u64) {
        assert!(nth >= 1, "arm_crash_at_op counts from 1 (the next operation)");
        let mut st = self.lock();
        let target = st.stats.ops + nth;
        st.armed_ops.insert(target);
    }

    /// Whether a crash trigger has cut the power (and [`SimFs::crash`] has not run since).
    #[must_use]
    pub fn is_crashed(&self) -> bool {
        self.lock().crashed.is_some()
    }

    /// Whether `err` is (or wraps, through [`std::error::Error::source`] or an
    /// [`io::Error`]'s inner error) the error calls return while the power is cut.
    #[must_use]
    pub fn is_power_cut(err: &io::Error) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
        while let Some(e) = next {
            if e.is::<state::PowerCut>() {
                return true;
            }
            if let Some(io) = e.downcast_ref::<io::Error>()
                && io.get_ref().is_some_and(|inner| inner.is::<state::PowerCut>())
            {
                return true;
            }
            next = e.source();
        }
        false
    }

    /// How many times each crash point was announced since the disk was made (announcements
    /// while the power was cut do not count).
    #[must_use]
    pub fn crash_points_reached(&self) -> BTreeMap<String, u64> {
        self.lock().points_reached.clone()
    }

    /// Flips bit `bit` (0 = least significant) of byte `offset` of a file, both in its
    /// durable bytes and in its current bytes: a media fault on data already on the disk.
    ///
    /// Fails with [`io::ErrorKind::InvalidInput`] if `offset` is not below the durable
    /// length or `bit` is not below 8.
    pub fn flip_bit(&self, path: &Path, offset: u64, bit: u8) -> io::Result<()> {
        let p = SimPath::parse(path)?;
        let mut st = self.lock();
        st.trace.u8(Tag::FlipBit.code());
        st.trace.str(&p.to_string());
        st.trace.u64(offset);
        st.trace.u8(bit);
        let id = st.lookup_file(&p)?;
        let file = st.file_mut(id);
        let index = usize::try_from(offset).ok().filter(|&i| i < file.durable.len());
        let (Some(index), true) = (index, bit < 8) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot flip bit {bit} of byte {offset} of {p}: the durable length is {}",
                    file.durable.len()
                ),
            ));
        };
        file.durable[index] ^= 1 << bit;
        if let Some(b) = file.current.get_mut(index) {
            *b ^= 1 << bit;
        }
        Ok(())
    }

    /// Every file of the current namespace with its current length, sorted by path.
    #[must_use]
    pub fn files(&self) -> Vec<(PathBuf, u64)> {
        let st = self.lock();
        let mut files: Vec<(PathBuf, u64)> = st
            .walk_current()
            .into_iter()
            .filter_map(|(path, id)| match &st.nodes[&id] {
                Node::File(file) => Some((path.to_path_buf(), file.current.len() as u64)),
                Node::Dir(_) => None,
            })
            .collect();
        files.sort();
        files
    }

    /// The durable length of the file at `path` (in the current namespace).
    pub fn durable_len(&self, path: &Path) -> io::Result<u64> {
        let p = SimPath::parse(path)?;
        let st = self.lock();
        let id = st.lookup_file(&p)?;
        Ok(st.file(id).durable.len() as u64)
    }

    /// Writes the current namespace (directories, and files with their current bytes) under
    /// `real_dir` on the real file system, to keep a failing crash image for inspection.
    pub fn dump_to(&self, real_dir: &Path) -> io::Result<()> {
        // Copy out first, so that no real I/O happens under the lock.
        let snapshot: Vec<(SimPath, Option<Vec<u8>>)> = {
            let st = self.lock();
            st.walk_current()
                .into_iter()
                .map(|(path, id)| match &st.nodes[&id] {
                    Node::File(file) => (path, Some(file.current.clone())),
                    Node::Dir(_) => (path, None),
                })
                .collect()
        };
        std::fs::create_dir_all(real_dir)?;
        for (path, bytes) in snapshot {
            let target = path.names().iter().fold(real_dir.to_path_buf(), |p, name| p.join(name));
            match bytes {
                Some(bytes) => std::fs::write(&target, bytes)?,
                None => std::fs::create_dir_all(&target)?,
            }
        }
        Ok(())
    }

    /// The FNV-1a hash of every call made (its kind, paths, offsets, lengths, data and
    /// outcome), every fault and trigger that fired and every crash image built. Two runs
    /// with the same seed and the same calls have the same hash.
    #[must_use]
    pub fn trace_hash(&self) -> u64 {
        self.lock().trace.hash()
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    /// Parses a path argument. While the power is cut, even a malformed path gets the
    /// power-cut error, as every call does.
    fn parse(&self, path: &Path) -> io::Result<SimPath> {
        SimPath::parse(path).map_err(|e| match self.lock().check_power() {
            Err(cut) => cut,
            Ok(()) => e,
        })
    }

    /// A handle to `id`, whose open was counted in `generation`.
    fn handle(
        &self,
        (id, generation, wb_seen): (NodeId, u64, u64),
        path: &SimPath,
        writable: bool,
    ) -> Box<dyn FsFile> {
        Box::new(SimFile {
            state: Arc::clone(&self.state),
            node: id,
            generation,
            writable,
            path: path.to_string(),
            wb_seen: AtomicU64::new(wb_seen),
        })
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let p = self.parse(path)?;
        let s = p.to_string();
        run(&self.state, &op_call(OpKind::CreateDir, &s), |st, fault| {
            fail_if(fault)?;
            st.create_dir_all(&p)
        })
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let p = self.parse(path)?;
        let s = p.to_string();
        let id = run(&self.state, &op_call(OpKind::Create, &s), |st, fault| {
            fail_if(fault)?;
            Ok((st.create(&p)?, st.generation, 0))
        })?;
        Ok(self.handle(id, &p, true))
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let p = self.parse(path)?;
        let s = p.to_string();
        let nums = [u64::from(mode == OpenMode::ReadWrite)];
        let call = Call { nums: &nums, ..op_call(OpKind::Open, &s) };
        let id = run(&self.state, &call, |st, fault| {
            fail_if(fault)?;
            let id = st.open(&p)?;
            Ok((id, st.generation, st.wb_error_sample(id)))
        })?;
        Ok(self.handle(id, &p, mode == OpenMode::ReadWrite))
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        let p = self.parse(path)?;
        let s = p.to_string();
        run(&self.state, &op_call(OpKind::ReadDir, &s), |st, fault| {
            fail_if(fault)?;
            let entries = st.read_dir(&p)?;
            for entry in &entries {
                st.trace.str(&entry.name);
            }
            Ok(entries)
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let from = self.parse(from)?;
        let to = self.parse(to)?;
        let (f, t) = (from.to_string(), to.to_string());
        run(&self.state, &Call { to: Some(&t), ..op_call(OpKind::Rename, &f) }, |st, fault| {
            fail_if(fault)?;
            st.rename(&from, &to)
        })
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let p = self.parse(path)?;
        let s = p.to_string();
        run(&self.state, &op_call(OpKind::Remove, &s), |st, fault| {
            fail_if(fault)?;
            st.remove_file(&p)
        })
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let p = self.parse(path)?;
        let s = p.to_string();
        run(&self.state, &op_call(OpKind::SyncDir, &s), |st, fault| {
            fail_if(fault)?;
            st.sync_dir(&p)
        })
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let p = self.parse(path)?;
        let s = p.to_string();
        let call = Call { counted: false, ..op_call(OpKind::Exists, &s) };
        run(&self.state, &call, |st, fault| {
            fail_if(fault)?;
            let exists = st.lookup(&p).is_ok();
            st.trace.u8(u8::from(exists));
            Ok(exists)
        })
    }

    fn lock_dir(&self, path: &Path) -> io::Result<Box<dyn FsLock>> {
        let p = self.parse(path)?;
        let s = p.to_string();
        let generation = run(&self.state, &op_call(OpKind::Lock, &s), |st, fault| {
            fail_if(fault)?;
            st.lock_dir(&p)?;
            Ok(st.generation)
        })?;
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: p.to_path_buf(),
            key: s,
            generation,
        }))
    }

    fn crash_point(&self, name: &'static str) -> io::Result<()> {
        let call = Call {
            tag: Tag::CrashPoint,
            counted: false,
            path: name,
            to: None,
            nums: &[],
            data: &[],
            handle: None,
        };
        run(&self.state, &call, |st, _| {
            let count = st.points_reached.entry(name.to_owned()).or_default();
            *count += 1;
            let count = *count;
            let fires = st.armed_points.get_mut(name).is_some_and(|targets| targets.remove(&count));
            if fires {
                return Err(st.cut_power(format!("crash point `{name}`, announcement {count}")));
            }
            Ok(())
        })
    }
}

/// An open file of a [`SimFs`].
struct SimFile {
    state: Arc<Mutex<State>>,
    node: NodeId,
    generation: u64,
    writable: bool,
    /// The normalized path it was opened with, for faults and messages.
    path: String,
    /// The file's write-back errors this handle has seen (see `State::sync_file`).
    wb_seen: AtomicU64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("node", &self.node)
            .field("generation", &self.generation)
            .field("writable", &self.writable)
            .finish()
    }
}

impl SimFile {
    fn call<'a>(&'a self, tag: Tag, nums: &'a [u64], data: &'a [u8], writes: bool) -> Call<'a> {
        Call {
            tag,
            counted: !matches!(tag, Tag::Len),
            path: &self.path,
            to: None,
            nums,
            data,
            handle: Some(HandleCheck {
                generation: self.generation,
                write_denied: writes && !self.writable,
            }),
        }
    }
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let nums = [offset, buf.len() as u64];
        let call = self.call(Tag::Op(OpKind::Read), &nums, &[], false);
        run(&self.state, &call, |st, fault| {
            fail_if(fault)?;
            let n = st.read_at(self.node, buf, offset);
            st.trace.bytes(&buf[..n]);
            Ok(n)
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let nums = [offset];
        let call = self.call(Tag::Op(OpKind::Write), &nums, buf, true);
        run(&self.state, &call, |st, fault| {
            check_len(offset.checked_add(buf.len() as u64), &self.path)?;
            match fault {
                Some(FaultKind::ShortWrite) => {
                    let n = if buf.len() >= 2 { 1 + st.rng.below(buf.len() - 1) } else { 0 };
                    st.trace.u64(n as u64);
                    st.write_at(self.node, &buf[..n], offset);
                    Err(state::fault_error(FaultKind::ShortWrite))
                }
                Some(kind) => Err(state::fault_error(kind)),
                None => {
                    st.write_at(self.node, buf, offset);
                    Ok(())
                }
            }
        })
    }

    fn len(&self) -> io::Result<u64> {
        let call = self.call(Tag::Len, &[], &[], false);
        run(&self.state, &call, |st, _| {
            let len = st.len(self.node);
            st.trace.u64(len);
            Ok(len)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let nums = [len];
        let call = self.call(Tag::Op(OpKind::SetLen), &nums, &[], true);
        run(&self.state, &call, |st, fault| {
            check_len(Some(len), &self.path)?;
            fail_if(fault)?;
            st.set_len(self.node, len);
            Ok(())
        })
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        let nums = [len];
        let call = self.call(Tag::Op(OpKind::Allocate), &nums, &[], true);
        run(&self.state, &call, |st, fault| {
            check_len(Some(len), &self.path)?;
            fail_if(fault)?;
            if st.len(self.node) < len {
                st.set_len(self.node, len);
            }
            Ok(())
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let call = self.call(Tag::Op(OpKind::SyncData), &[], &[], false);
        run(&self.state, &call, |st, fault| st.sync_file(self.node, &self.wb_seen, fault))
    }

    fn sync_all(&self) -> io::Result<()> {
        let call = self.call(Tag::Op(OpKind::SyncAll), &[], &[], false);
        run(&self.state, &call, |st, fault| st.sync_file(self.node, &self.wb_seen, fault))
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        // A poisoned state means a panic is already unwinding; leave it be.
        if let Ok(mut st) = self.state.lock() {
            st.release_handle(self.node, self.generation);
        }
    }
}

/// A lock on a directory of a [`SimFs`].
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    key: String,
    generation: u64,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLock")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .finish()
    }
}

impl FsLock for SimLock {
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SimLock {
    fn drop(&mut self) {
        if let Ok(mut st) = self.state.lock() {
            // A lock from before a crash was already released by it; the same path may be
            // locked again since, by someone else.
            if st.generation == self.generation {
                st.locks.remove(&self.key);
            }
        }
    }
}

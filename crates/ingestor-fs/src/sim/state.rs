//! The simulated disk's state: an arena of inodes (files) and directories, each with a durable
//! view, a current view and the ordered operations that lead from one to the other; and the
//! gate every call passes through (power-cut state, crash triggers, injected faults).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::rng::Rng;
use super::trace::Trace;
use super::{Fault, FaultKind, OpKind, SimStats};
use crate::{DirEntry, EIO, ENOSPC, EntryKind};

/// The largest file the simulated disk holds (4 GiB). Everything lives in memory, so a larger
/// offset or length is almost certainly a bug in the caller; it fails with
/// [`io::ErrorKind::FileTooLarge`] rather than aborting on allocation.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 32;

/// An inode or directory number in the arena. Never reused within one [`State`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct NodeId(u64);

/// The root directory, which exists and is durable from the start.
pub(crate) const ROOT: NodeId = NodeId(0);

/// A change to a file's bytes that is not yet durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DataOp {
    /// `pwrite(data, offset)`, extending the file with zeros up to `offset` if needed.
    Write {
        /// Where the write starts.
        offset: u64,
        /// What was written.
        data: Vec<u8>,
    },
    /// `ftruncate(len)`: cuts the file or extends it with zeros.
    SetLen {
        /// The new length.
        len: u64,
    },
}

impl DataOp {
    /// Applies the operation to `bytes`. Offsets and lengths were checked against
    /// [`MAX_FILE_BYTES`] when the operation was issued.
    pub(crate) fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            DataOp::Write { offset, data } => {
                let start = index(*offset);
                let end = start + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[start..end].copy_from_slice(data);
            }
            DataOp::SetLen { len } => bytes.resize(index(*len), 0),
        }
    }
}

/// A change to a directory's entries that is not yet durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DirOp {
    /// A new entry `name` for `node` (a new file or directory).
    Create {
        /// The entry's name.
        name: String,
        /// What it names.
        node: NodeId,
    },
    /// `unlink(name)`.
    Remove {
        /// The removed name.
        name: String,
    },
    /// `rename(from, to)` within this directory, replacing any entry `to`.
    Rename {
        /// The old name.
        from: String,
        /// The new name.
        to: String,
    },
}

impl DirOp {
    /// Applies the operation to a directory's entries. Pending operations are replayed onto
    /// the durable entries they were recorded after, so every name they touch is where the
    /// operation expects it.
    pub(crate) fn apply(&self, entries: &mut BTreeMap<String, NodeId>) {
        match self {
            DirOp::Create { name, node } => {
                entries.insert(name.clone(), *node);
            }
            DirOp::Remove { name } => {
                entries.remove(name);
            }
            DirOp::Rename { from, to } => {
                if let Some(node) = entries.remove(from) {
                    entries.insert(to.clone(), node);
                }
            }
        }
    }
}

/// A file (inode).
#[derive(Clone, Debug)]
pub(crate) struct FileNode {
    /// The directory whose entries name this file. Files are only renamed within their
    /// directory, so this never changes.
    pub(crate) parent: NodeId,
    /// What survives any power cut; its length is the durable length.
    pub(crate) durable: Vec<u8>,
    /// What reads return.
    pub(crate) current: Vec<u8>,
    /// The operations since the last sync, in order. Applied onto `durable` they give what a
    /// sync would make durable; after a failed sync they no longer give `current`.
    pub(crate) pending: Vec<DataOp>,
    /// Open handles of the current generation; a file with none and no name is dropped.
    pub(crate) open_handles: u64,
    /// Write-back errors so far (Linux's per-file `errseq_t`): a sync through a handle that
    /// has not seen the latest one fails with `EIO`, once per handle. Every error is
    /// reported at once by the sync that met it, so a handle opened later starts past it.
    pub(crate) wb_errors: u64,
}

/// A directory.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirNode {
    /// The entries that survive any power cut.
    pub(crate) durable: BTreeMap<String, NodeId>,
    /// The entries lookups see.
    pub(crate) current: BTreeMap<String, NodeId>,
    /// The entry operations since the last directory sync, in order; replayed onto `durable`
    /// they give `current`.
    pub(crate) pending: Vec<DirOp>,
}

/// A node of the arena.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    /// A regular file.
    File(FileNode),
    /// A directory.
    Dir(DirNode),
}

impl Node {
    fn kind(&self) -> EntryKind {
        match self {
            Node::File(_) => EntryKind::File,
            Node::Dir(_) => EntryKind::Dir,
        }
    }
}

/// A normalized absolute path: the names below `/`, none of them `.` or `..`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct SimPath(Vec<String>);

impl SimPath {
    /// Parses an absolute path, dropping `.` components. Relative paths, `..` and names that
    /// are not UTF-8 fail with [`io::ErrorKind::InvalidInput`].
    pub(crate) fn parse(path: &Path) -> io::Result<SimPath> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the simulated disk {why}: {}", path.display()),
            )
        };
        if !path.has_root() {
            return Err(invalid("takes only absolute paths"));
        }
        let mut names = Vec::new();
        for component in path.components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir => return Err(invalid("does not resolve `..`")),
                Component::Prefix(_) => return Err(invalid("has no drive prefixes")),
                Component::Normal(name) => match name.to_str() {
                    Some(name) => names.push(name.to_owned()),
                    None => return Err(invalid("takes only UTF-8 names")),
                },
            }
        }
        Ok(SimPath(names))
    }

    /// The names below the root, outermost first.
    pub(crate) fn names(&self) -> &[String] {
        &self.0
    }

    /// The parent directory and the last name, or `None` for the root.
    pub(crate) fn split_last(&self) -> Option<(SimPath, &str)> {
        let (last, parent) = self.0.split_last()?;
        Some((SimPath(parent.to_vec()), last))
    }

    /// This path with one more name.
    pub(crate) fn join(&self, name: &str) -> SimPath {
        let mut names = self.0.clone();
        names.push(name.to_owned());
        SimPath(names)
    }

    /// As a [`PathBuf`] rooted at `/`.
    pub(crate) fn to_path_buf(&self) -> PathBuf {
        PathBuf::from(self.to_string())
    }
}

impl fmt::Display for SimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("/");
        }
        for name in &self.0 {
            write!(f, "/{name}")?;
        }
        Ok(())
    }
}

/// The payload of the error every call returns once the power is cut, so that
/// [`super::SimFs::is_power_cut`] can recognise it through layers that wrap it.
#[derive(Debug)]
pub(crate) struct PowerCut {
    cause: String,
}

impl fmt::Display for PowerCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulated power cut ({}): the disk is off until SimFs::crash builds the post-crash image",
            self.cause
        )
    }
}

impl std::error::Error for PowerCut {}

fn power_cut(cause: &str) -> io::Error {
    io::Error::other(PowerCut { cause: cause.to_owned() })
}

/// Converts a checked offset or length to an index.
fn index(v: u64) -> usize {
    usize::try_from(v).expect("offsets and lengths are checked against MAX_FILE_BYTES")
}

/// Checks that a file may grow to `end` bytes.
pub(crate) fn check_len(end: Option<u64>, path: &str) -> io::Result<u64> {
    match end {
        Some(end) if end <= MAX_FILE_BYTES && usize::try_from(end).is_ok() => Ok(end),
        _ => Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("{path}: the simulated disk holds files of at most {MAX_FILE_BYTES} bytes"),
        )),
    }
}

fn not_found(path: &SimPath) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no such file or directory: {path}"))
}

fn not_a_dir(path: &SimPath) -> io::Error {
    io::Error::new(io::ErrorKind::NotADirectory, format!("not a directory: {path}"))
}

fn is_a_dir(path: &SimPath) -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, format!("is a directory: {path}"))
}

/// The error an injected fault makes an operation fail with.
pub(crate) fn fault_error(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::Eio | FaultKind::SyncLosesData => io::Error::from_raw_os_error(EIO),
        FaultKind::Enospc | FaultKind::ShortWrite => io::Error::from_raw_os_error(ENOSPC),
    }
}

/// Fails with the injected fault, if one fired.
pub(crate) fn fail_if(fault: Option<FaultKind>) -> io::Result<()> {
    match fault {
        Some(kind) => Err(fault_error(kind)),
        None => Ok(()),
    }
}

/// What a trace entry records first: which call it was.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Tag {
    /// A counted operation (or `exists`).
    Op(OpKind),
    /// [`crate::FsFile::len`].
    Len,
    /// [`crate::Fs::crash_point`].
    CrashPoint,
    /// [`super::SimFs::flip_bit`].
    FlipBit,
    /// [`super::SimFs::crash`]: a crash image was built.
    Crash,
    /// A crash trigger fired.
    PowerCut,
    /// An injected fault fired.
    FaultFired,
}

impl Tag {
    /// The tag's byte in the trace.
    pub(crate) fn code(self) -> u8 {
        match self {
            Tag::Op(op) => op as u8,
            Tag::Len => 100,
            Tag::CrashPoint => 101,
            Tag::FlipBit => 102,
            Tag::Crash => 103,
            Tag::PowerCut => 104,
            Tag::FaultFired => 105,
        }
    }
}

/// A handle's identity, checked before the call does anything.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandleCheck {
    /// The disk generation the handle was opened in.
    pub(crate) generation: u64,
    /// The call writes through a handle opened read-only.
    pub(crate) write_denied: bool,
}

/// One call as the gate sees it.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    /// What the trace records.
    pub(crate) tag: Tag,
    /// Whether the call counts for [`super::SimFs::arm_crash_at_op`] and `stats.ops`.
    pub(crate) counted: bool,
    /// The path injected faults match against (for a handle, the path it was opened with;
    /// for a crash point, its name).
    pub(crate) path: &'a str,
    /// The second path of a rename, which faults match too.
    pub(crate) to: Option<&'a str>,
    /// Offsets and lengths, for the trace.
    pub(crate) nums: &'a [u64],
    /// Data written, for the trace.
    pub(crate) data: &'a [u8],
    /// Set for calls through a file handle.
    pub(crate) handle: Option<HandleCheck>,
}

/// An injected fault and how many matching operations it has seen.
#[derive(Clone, Debug)]
struct ArmedFault {
    fault: Fault,
    seen: u64,
}

impl ArmedFault {
    fn matches(&self, op: OpKind, call: &Call<'_>) -> bool {
        self.fault.op == op
            && match &self.fault.path_contains {
                None => true,
                Some(needle) => {
                    call.path.contains(needle.as_str())
                        || call.to.is_some_and(|to| to.contains(needle.as_str()))
                }
            }
    }
}

/// Everything the simulated disk knows.
pub(crate) struct State {
    /// Files and directories, by number. Removed files live on while a handle or a
    /// not-yet-durable entry still refers to them.
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    next_id: u64,
    /// Bumped by every crash; handles of an older generation are stale.
    pub(crate) generation: u64,
    /// Locked directories, by normalized path.
    pub(crate) locks: BTreeSet<String>,
    /// Why the power is cut, while it is.
    pub(crate) crashed: Option<String>,
    /// Whether the process using the disk was killed and not yet revived
    /// ([`crate::SimFs::kill`]): every call fails meanwhile.
    pub(crate) killed: bool,
    /// Per crash point name, the announcement counts that cut the power.
    pub(crate) armed_points: BTreeMap<String, BTreeSet<u64>>,
    /// The values of `stats.ops` at which the power is cut.
    pub(crate) armed_ops: BTreeSet<u64>,
    /// Announcements per crash point name since the disk was made.
    pub(crate) points_reached: BTreeMap<String, u64>,
    faults: Vec<ArmedFault>,
    /// The source of every random choice.
    pub(crate) rng: Rng,
    /// The hash of everything done.
    pub(crate) trace: Trace,
    /// Counters.
    pub(crate) stats: SimStats,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bytes would drown any log; the counts say what matters.
        f.debug_struct("State")
            .field("nodes", &self.nodes.len())
            .field("generation", &self.generation)
            .field("crashed", &self.crashed)
            .field("locks", &self.locks)
            .field("faults", &self.faults.len())
            .field("trace_hash", &format_args!("{:#018x}", self.trace.hash()))
            .finish_non_exhaustive()
    }
}

impl State {
    /// An empty disk whose root directory is durable.
    pub(crate) fn new(seed: u64) -> State {
        let mut nodes = BTreeMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        State {
            nodes,
            next_id: 1,
            generation: 0,
            locks: BTreeSet::new(),
            crashed: None,
            killed: false,
            armed_points: BTreeMap::new(),
            armed_ops: BTreeSet::new(),
            points_reached: BTreeMap::new(),
            faults: Vec::new(),
            rng: Rng::new(seed),
            trace: Trace::new(),
            stats: SimStats::default(),
        }
    }

    /// Traces the start of a call.
    pub(crate) fn trace_call(&mut self, call: &Call<'_>) {
        self.trace.u8(call.tag.code());
        self.trace.str(call.path);
        self.trace.str(call.to.unwrap_or(""));
        for &n in call.nums {
            self.trace.u64(n);
        }
        self.trace.bytes(call.data);
    }

    /// Traces the outcome of a call.
    pub(crate) fn trace_result<T>(&mut self, result: &io::Result<T>) {
        match result {
            Ok(_) => self.trace.u8(0),
            Err(e) => {
                self.trace.u8(1);
                self.trace.str(&format!("{:?}", e.kind()));
                self.trace.u64(e.raw_os_error().map_or(0, |c| u64::from(c.unsigned_abs())));
            }
        }
    }

    /// The error every call returns while the power is cut, or while the process that uses
    /// the disk is dead.
    pub(crate) fn check_power(&self) -> io::Result<()> {
        match &self.crashed {
            Some(cause) => Err(power_cut(cause)),
            None if self.killed => Err(io::Error::other(
                "the process using the simulated disk was killed (SimFs::kill): nothing reaches \
                 the disk until SimFs::revive",
            )),
            None => Ok(()),
        }
    }

    /// Cuts the power: this call and every later one fails until a crash image is built.
    pub(crate) fn cut_power(&mut self, cause: String) -> io::Error {
        self.trace.u8(Tag::PowerCut.code());
        self.trace.str(&cause);
        let err = power_cut(&cause);
        self.crashed = Some(cause);
        err
    }

    /// Lets a call through, or not: checks the power, the handle, the crash-at-op trigger,
    /// and returns the injected fault that fires on this call, if any.
    ///
    /// When several faults would fire on the same call, the earliest injected fires; the
    /// others stay one match short of firing and fire on the next matching call.
    pub(crate) fn gate(&mut self, call: &Call<'_>) -> io::Result<Option<FaultKind>> {
        self.check_power()?;
        if call.handle.is_some_and(|h| h.generation != self.generation) {
            return Err(io::Error::new(
                io::ErrorKind::StaleNetworkFileHandle,
                format!(
                    "stale handle: the simulated disk lost power since this file was opened ({})",
                    call.path
                ),
            ));
        }
        if call.counted {
            self.stats.ops += 1;
            if self.armed_ops.remove(&self.stats.ops) {
                let cause = format!("armed at operation {}", self.stats.ops);
                return Err(self.cut_power(cause));
            }
        }
        if call.handle.is_some_and(|h| h.write_denied) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{}: file was opened read-only", call.path),
            ));
        }
        let Tag::Op(op) = call.tag else { return Ok(None) };
        let mut fired = None;
        let mut i = 0;
        while i < self.faults.len() {
            let armed = &mut self.faults[i];
            if armed.matches(op, call) {
                if armed.seen + 1 >= armed.fault.nth {
                    if fired.is_none() {
                        fired = Some(armed.fault.kind);
                        self.faults.remove(i);
                        continue;
                    }
                } else {
                    armed.seen += 1;
                }
            }
            i += 1;
        }
        if let Some(kind) = fired {
            *self.stats.faults_fired.entry(kind.name().to_owned()).or_default() += 1;
            self.trace.u8(Tag::FaultFired.code());
            self.trace.str(kind.name());
        }
        Ok(fired)
    }

    /// Adds a fault.
    pub(crate) fn inject(&mut self, fault: Fault) {
        self.faults.push(ArmedFault { fault, seen: 0 });
    }

    /// Removes every fault.
    pub(crate) fn clear_faults(&mut self) {
        self.faults.clear();
    }

    fn alloc(&mut self, node: Node) -> NodeId {
        let id = NodeId(self.next_id);
        self.next_id += 1;
        self.nodes.insert(id, node);
        id
    }

    /// The directory `id`; a broken invariant if it is not one.
    pub(crate) fn dir(&self, id: NodeId) -> &DirNode {
        match self.nodes.get(&id) {
            Some(Node::Dir(dir)) => dir,
            other => panic!("node {id:?} should be a directory, is {other:?}"),
        }
    }

    /// The directory `id`, mutably.
    pub(crate) fn dir_mut(&mut self, id: NodeId) -> &mut DirNode {
        match self.nodes.get_mut(&id) {
            Some(Node::Dir(dir)) => dir,
            other => panic!("node {id:?} should be a directory, is {other:?}"),
        }
    }

    /// The file `id`; a broken invariant if it is not one.
    pub(crate) fn file(&self, id: NodeId) -> &FileNode {
        match self.nodes.get(&id) {
            Some(Node::File(file)) => file,
            other => panic!("node {id:?} should be a file, is {other:?}"),
        }
    }

    /// The file `id`, mutably.
    pub(crate) fn file_mut(&mut self, id: NodeId) -> &mut FileNode {
        match self.nodes.get_mut(&id) {
            Some(Node::File(file)) => file,
            other => panic!("node {id:?} should be a file, is {other:?}"),
        }
    }

    /// Resolves a path in the current namespace.
    pub(crate) fn lookup(&self, path: &SimPath) -> io::Result<NodeId> {
        let mut id = ROOT;
        for name in path.names() {
            let Node::Dir(dir) = &self.nodes[&id] else { return Err(not_a_dir(path)) };
            id = *dir.current.get(name).ok_or_else(|| not_found(path))?;
        }
        Ok(id)
    }

    /// Resolves a path that must name a directory.
    pub(crate) fn lookup_dir(&self, path: &SimPath) -> io::Result<NodeId> {
        let id = self.lookup(path)?;
        match self.nodes[&id] {
            Node::Dir(_) => Ok(id),
            Node::File(_) => Err(not_a_dir(path)),
        }
    }

    /// Resolves a path that must name a file.
    pub(crate) fn lookup_file(&self, path: &SimPath) -> io::Result<NodeId> {
        let id = self.lookup(path)?;
        match self.nodes[&id] {
            Node::File(_) => Ok(id),
            Node::Dir(_) => Err(is_a_dir(path)),
        }
    }

    /// Resolves the directory that holds `path`'s last name, and that name.
    fn lookup_parent<'p>(&self, path: &'p SimPath) -> io::Result<(NodeId, &'p str)> {
        let (parent, name) = path.split_last().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the root directory has no name")
        })?;
        Ok((self.lookup_dir(&parent)?, name))
    }

    /// `create_dir_all`: each missing directory becomes a pending create in its parent.
    pub(crate) fn create_dir_all(&mut self, path: &SimPath) -> io::Result<()> {
        let mut id = ROOT;
        let mut walked = SimPath::default();
        for name in path.names() {
            walked = walked.join(name);
            let existing = self.dir(id).current.get(name).copied();
            id = match existing {
                Some(child) => match self.nodes[&child] {
                    Node::Dir(_) => child,
                    Node::File(_) => return Err(not_a_dir(&walked)),
                },
                None => {
                    let child = self.alloc(Node::Dir(DirNode::default()));
                    let parent = self.dir_mut(id);
                    parent.current.insert(name.clone(), child);
                    parent.pending.push(DirOp::Create { name: name.clone(), node: child });
                    child
                }
            };
        }
        Ok(())
    }

    /// `open(O_CREAT | O_EXCL)`: a new empty file with one open handle.
    pub(crate) fn create(&mut self, path: &SimPath) -> io::Result<NodeId> {
        let (parent, name) = self.lookup_parent(path)?;
        if self.dir(parent).current.contains_key(name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("file exists: {path}"),
            ));
        }
        let id = self.alloc(Node::File(FileNode {
            parent,
            durable: Vec::new(),
            current: Vec::new(),
            pending: Vec::new(),
            open_handles: 1,
            wb_errors: 0,
        }));
        let dir = self.dir_mut(parent);
        dir.current.insert(name.to_owned(), id);
        dir.pending.push(DirOp::Create { name: name.to_owned(), node: id });
        Ok(id)
    }

    /// `open` of an existing file: one more open handle.
    pub(crate) fn open(&mut self, path: &SimPath) -> io::Result<NodeId> {
        let id = self.lookup_file(path)?;
        self.file_mut(id).open_handles += 1;
        Ok(id)
    }

    /// Where a new handle of file `id` starts in its write-back errors: past the latest one
    /// (Linux's `errseq_sample`, for an error some handle already reported: here, always).
    pub(crate) fn wb_error_sample(&self, id: NodeId) -> u64 {
        self.file(id).wb_errors
    }

    /// The current entries of a directory, sorted by name.
    pub(crate) fn read_dir(&self, path: &SimPath) -> io::Result<Vec<DirEntry>> {
        let id = self.lookup_dir(path)?;
        Ok(self
            .dir(id)
            .current
            .iter()
            .map(|(name, child)| DirEntry { name: name.clone(), kind: self.nodes[child].kind() })
            .collect())
    }

    /// Checks a rename and returns the directory and the two names.
    pub(crate) fn check_rename<'p>(
        &self,
        from: &'p SimPath,
        to: &'p SimPath,
    ) -> io::Result<(NodeId, &'p str, &'p str)> {
        let unsupported = |why: &str| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("the simulated disk {why}: rename {from} to {to}"),
            )
        };
        let (Some((from_dir, from_name)), Some((to_dir, to_name))) =
            (from.split_last(), to.split_last())
        else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot rename the root directory: rename {from} to {to}"),
            ));
        };
        if from_dir != to_dir {
            return Err(unsupported("renames only within one directory"));
        }
        let dir = self.lookup_dir(&from_dir)?;
        let node = *self.dir(dir).current.get(from_name).ok_or_else(|| not_found(from))?;
        if matches!(self.nodes[&node], Node::Dir(_)) {
            return Err(unsupported("renames only files"));
        }
        if let Some(target) = self.dir(dir).current.get(to_name)
            && matches!(self.nodes[target], Node::Dir(_))
        {
            return Err(is_a_dir(to));
        }
        Ok((dir, from_name, to_name))
    }

    /// `rename` within one directory, atomically replacing any file at `to`.
    pub(crate) fn rename(&mut self, from: &SimPath, to: &SimPath) -> io::Result<()> {
        let (dir, from_name, to_name) = self.check_rename(from, to)?;
        if from_name == to_name {
            // POSIX: renaming a name onto itself does nothing.
            return Ok(());
        }
        let dir = self.dir_mut(dir);
        let node = dir.current.remove(from_name).expect("checked by check_rename");
        dir.current.insert(to_name.to_owned(), node);
        dir.pending.push(DirOp::Rename { from: from_name.to_owned(), to: to_name.to_owned() });
        Ok(())
    }

    /// `unlink` of a file. The inode lives on while handles or pending entries refer to it.
    pub(crate) fn remove_file(&mut self, path: &SimPath) -> io::Result<()> {
        let (parent, name) = self.lookup_parent(path)?;
        let node = *self.dir(parent).current.get(name).ok_or_else(|| not_found(path))?;
        if matches!(self.nodes[&node], Node::Dir(_)) {
            return Err(is_a_dir(path));
        }
        let dir = self.dir_mut(parent);
        dir.current.remove(name);
        dir.pending.push(DirOp::Remove { name: name.to_owned() });
        Ok(())
    }

    /// `fsync` of a directory: its current entries become durable.
    pub(crate) fn sync_dir(&mut self, path: &SimPath) -> io::Result<()> {
        let id = self.lookup_dir(path)?;
        let dir = self.dir_mut(id);
        let mut dropped: BTreeSet<NodeId> = dir.durable.values().copied().collect();
        for op in dir.pending.drain(..) {
            if let DirOp::Create { node, .. } = op {
                dropped.insert(node);
            }
        }
        dir.durable = dir.current.clone();
        for node in dir.durable.values() {
            dropped.remove(node);
        }
        for node in dropped {
            self.forget_if_unused(node);
        }
        self.stats.dir_syncs += 1;
        Ok(())
    }

    /// Whether a file is named by its directory, now, durably, or by a pending create that a
    /// crash could keep.
    fn is_linked(&self, id: NodeId) -> bool {
        let dir = self.dir(self.file(id).parent);
        dir.current.values().any(|&n| n == id)
            || dir.durable.values().any(|&n| n == id)
            || dir.pending.iter().any(|op| matches!(op, DirOp::Create { node, .. } if *node == id))
    }

    /// Drops a file that nothing can reach any more: no name, no pending create, no handle.
    pub(crate) fn forget_if_unused(&mut self, id: NodeId) {
        if let Some(Node::File(file)) = self.nodes.get(&id)
            && file.open_handles == 0
            && !self.is_linked(id)
        {
            self.nodes.remove(&id);
        }
    }

    /// A handle of `generation` to `id` was dropped.
    pub(crate) fn release_handle(&mut self, id: NodeId, generation: u64) {
        if generation != self.generation {
            return;
        }
        let file = self.file_mut(id);
        file.open_handles -= 1;
        if file.open_handles == 0 {
            self.forget_if_unused(id);
        }
    }

    /// Takes a directory lock.
    pub(crate) fn lock_dir(&mut self, path: &SimPath) -> io::Result<()> {
        self.lookup_dir(path)?;
        let key = path.to_string();
        if self.locks.contains(&key) {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{key} is already locked through this simulated disk"),
            ));
        }
        self.locks.insert(key);
        Ok(())
    }

    /// `pread`.
    pub(crate) fn read_at(&self, id: NodeId, buf: &mut [u8], offset: u64) -> usize {
        let current = &self.file(id).current;
        let Ok(start) = usize::try_from(offset) else { return 0 };
        if start >= current.len() {
            return 0;
        }
        let n = buf.len().min(current.len() - start);
        buf[..n].copy_from_slice(&current[start..start + n]);
        n
    }

    /// `pwrite`: changes the current bytes and records a pending write.
    pub(crate) fn write_at(&mut self, id: NodeId, data: &[u8], offset: u64) {
        if data.is_empty() {
            // A zero-length pwrite does not extend the file.
            return;
        }
        let op = DataOp::Write { offset, data: data.to_vec() };
        let file = self.file_mut(id);
        op.apply(&mut file.current);
        file.pending.push(op);
        self.stats.writes += 1;
        self.stats.bytes_written += data.len() as u64;
    }

    /// `ftruncate`: changes the current length and records it as pending.
    pub(crate) fn set_len(&mut self, id: NodeId, len: u64) {
        let op = DataOp::SetLen { len };
        let file = self.file_mut(id);
        op.apply(&mut file.current);
        file.pending.push(op);
    }

    /// The current length of a file.
    pub(crate) fn len(&self, id: NodeId) -> u64 {
        self.file(id).current.len() as u64
    }

    /// `fdatasync`/`fsync` of a file through a handle whose last seen write-back error is
    /// `seen`: applies the file's pending operations, in order, onto its durable bytes. After
    /// a [`FaultKind::SyncLosesData`] they are dropped instead, and the error is recorded on
    /// the file: every handle that has not seen it fails its next sync with `EIO` too (what
    /// Linux does since 4.13, per open file description), making nothing durable (the
    /// pending operations stay pending, as Linux skips the journal commit and the cache
    /// flush), then syncs normally.
    pub(crate) fn sync_file(
        &mut self,
        id: NodeId,
        seen: &AtomicU64,
        fault: Option<FaultKind>,
    ) -> io::Result<()> {
        let file = self.file_mut(id);
        match fault {
            Some(FaultKind::SyncLosesData) => {
                // Linux after a write-back error: the pages are marked clean, so the bytes
                // stay readable from the cache but never reach the disk.
                file.pending.clear();
                file.wb_errors += 1;
                seen.store(file.wb_errors, Ordering::Relaxed);
                Err(fault_error(FaultKind::SyncLosesData))
            }
            Some(kind) => Err(fault_error(kind)),
            None if seen.load(Ordering::Relaxed) != file.wb_errors => {
                // An error another handle's sync met: this handle reports it once.
                seen.store(file.wb_errors, Ordering::Relaxed);
                Err(fault_error(FaultKind::SyncLosesData))
            }
            None => {
                for op in file.pending.drain(..) {
                    op.apply(&mut file.durable);
                }
                self.stats.file_syncs += 1;
                Ok(())
            }
        }
    }

    /// Every node of the current namespace, depth first in name order, with its path.
    pub(crate) fn walk_current(&self) -> Vec<(SimPath, NodeId)> {
        let mut out = vec![(SimPath::default(), ROOT)];
        let mut stack = vec![(SimPath::default(), ROOT)];
        while let Some((path, id)) = stack.pop() {
            if let Node::Dir(dir) = &self.nodes[&id] {
                // Reverse, so that the stack pops children in name order.
                for (name, &child) in dir.current.iter().rev() {
                    stack.push((path.join(name), child));
                }
            }
            if id != ROOT {
                out.push((path, id));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalizes_dots_and_rejects_the_rest() {
        let p = SimPath::parse(Path::new("/a/./b/")).unwrap();
        assert_eq!(p.names(), ["a", "b"]);
        assert_eq!(p.to_string(), "/a/b");
        assert_eq!(SimPath::parse(Path::new("/")).unwrap().to_string(), "/");
        for bad in ["a/b", "/a/../b", ""] {
            let err = SimPath::parse(Path::new(bad)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[test]
    fn data_ops_extend_with_zeros_and_truncate() {
        let mut bytes = b"abc".to_vec();
        DataOp::Write { offset: 5, data: b"xy".to_vec() }.apply(&mut bytes);
        assert_eq!(bytes, b"abc\0\0xy");
        DataOp::SetLen { len: 2 }.apply(&mut bytes);
        assert_eq!(bytes, b"ab");
        DataOp::SetLen { len: 4 }.apply(&mut bytes);
        assert_eq!(bytes, b"ab\0\0");
    }

    #[test]
    fn dir_ops_replay_a_rename_over_an_existing_name() {
        let mut entries = BTreeMap::new();
        DirOp::Create { name: "a".into(), node: NodeId(1) }.apply(&mut entries);
        DirOp::Create { name: "b".into(), node: NodeId(2) }.apply(&mut entries);
        DirOp::Rename { from: "a".into(), to: "b".into() }.apply(&mut entries);
        assert_eq!(entries.into_iter().collect::<Vec<_>>(), [("b".to_owned(), NodeId(1))]);
    }

    #[test]
    fn a_removed_file_is_forgotten_once_durably_gone_and_closed() {
        let mut st = State::new(1);
        let path = SimPath::parse(Path::new("/f")).unwrap();
        let id = st.create(&path).unwrap();
        st.sync_dir(&SimPath::default()).unwrap();
        st.remove_file(&path).unwrap();
        st.sync_dir(&SimPath::default()).unwrap();
        assert!(st.nodes.contains_key(&id), "an open handle keeps the inode");
        st.release_handle(id, 0);
        assert!(!st.nodes.contains_key(&id));
    }

    #[test]
    fn a_closed_file_removed_before_its_create_was_synced_lives_until_the_dir_sync() {
        let mut st = State::new(1);
        let path = SimPath::parse(Path::new("/f")).unwrap();
        let id = st.create(&path).unwrap();
        st.release_handle(id, 0);
        st.remove_file(&path).unwrap();
        // A crash could still keep the pending create and drop the remove.
        assert!(st.nodes.contains_key(&id));
        st.sync_dir(&SimPath::default()).unwrap();
        assert!(!st.nodes.contains_key(&id));
    }
}

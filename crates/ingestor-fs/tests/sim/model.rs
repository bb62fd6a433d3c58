//! Seeded model tests: random sequences of operations run against the simulated disk and
//! against a simple model of what is durable and what is pending; after each crash, the
//! image the disk shows must be one the model allows under the policy used.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use ingestor_fs::{CrashPolicy, EntryKind, Fault, FaultKind, Fs, FsFile, OpKind, OpenMode, SimFs};

use crate::TestRng;

#[derive(Clone, Debug)]
enum MOp {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

fn apply(bytes: &mut Vec<u8>, op: &MOp) {
    match op {
        MOp::Write(offset, data) => {
            let start = *offset as usize;
            if bytes.len() < start + data.len() {
                bytes.resize(start + data.len(), 0);
            }
            bytes[start..start + data.len()].copy_from_slice(data);
        }
        MOp::SetLen(len) => bytes.resize(*len as usize, 0),
    }
}

fn applied(bytes: &[u8], ops: &[MOp]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for op in ops {
        apply(&mut out, op);
    }
    out
}

struct MFile {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<MOp>,
    handle: Box<dyn FsFile>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MEntry {
    File(usize),
    Dir(usize),
}

#[derive(Clone, Debug)]
enum MDirOp {
    Create(String, MEntry),
    Remove(String),
    Rename(String, String),
}

fn apply_dir(entries: &mut BTreeMap<String, MEntry>, op: &MDirOp) {
    match op {
        MDirOp::Create(name, entry) => {
            entries.insert(name.clone(), *entry);
        }
        MDirOp::Remove(name) => {
            entries.remove(name);
        }
        MDirOp::Rename(from, to) => {
            let entry = entries.remove(from).expect("the model renames only existing names");
            entries.insert(to.clone(), entry);
        }
    }
}

struct MDir {
    path: String,
    durable: BTreeMap<String, MEntry>,
    current: BTreeMap<String, MEntry>,
    pending: Vec<MDirOp>,
}

/// The model: every file and directory ever created since the last crash (removed files stay,
/// since a crash may bring them back).
struct Model {
    files: Vec<MFile>,
    dirs: Vec<MDir>,
}

const DIRS: [&str; 3] = ["/a", "/a/b", "/c"];
const NAMES: [&str; 5] = ["f0", "f1", "f2", "f3", "f4"];

fn join(dir: &str, name: &str) -> String {
    if dir == "/" { format!("/{name}") } else { format!("{dir}/{name}") }
}

impl Model {
    fn empty() -> Model {
        Model {
            files: Vec::new(),
            dirs: vec![MDir {
                path: "/".to_owned(),
                durable: BTreeMap::new(),
                current: BTreeMap::new(),
                pending: Vec::new(),
            }],
        }
    }

    /// Files of one directory, by current name.
    fn named_files(&self, dir: usize) -> Vec<(String, usize)> {
        self.dirs[dir]
            .current
            .iter()
            .filter_map(|(name, e)| match e {
                MEntry::File(f) => Some((name.clone(), *f)),
                MEntry::Dir(_) => None,
            })
            .collect()
    }
}

/// One random step, run on both the disk and the model.
fn step(fs: &SimFs, m: &mut Model, rng: &mut TestRng, ctx: &str) {
    match rng.below(20) {
        0 => {
            let path = DIRS[rng.below(DIRS.len() as u64) as usize];
            fs.create_dir_all(Path::new(path)).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let mut parent = 0;
            let mut walked = String::new();
            for name in path.trim_start_matches('/').split('/') {
                walked = format!("{walked}/{name}");
                parent = match m.dirs[parent].current.get(name) {
                    Some(MEntry::Dir(d)) => *d,
                    Some(MEntry::File(_)) => {
                        unreachable!("the model never names a file like a dir")
                    }
                    None => {
                        let d = m.dirs.len();
                        m.dirs.push(MDir {
                            path: walked.clone(),
                            durable: BTreeMap::new(),
                            current: BTreeMap::new(),
                            pending: Vec::new(),
                        });
                        let p = &mut m.dirs[parent];
                        p.current.insert(name.to_owned(), MEntry::Dir(d));
                        p.pending.push(MDirOp::Create(name.to_owned(), MEntry::Dir(d)));
                        d
                    }
                };
            }
        }
        1 | 2 => {
            let dir = rng.below(m.dirs.len() as u64) as usize;
            let name = NAMES[rng.below(NAMES.len() as u64) as usize];
            let path = join(&m.dirs[dir].path, name);
            let result = fs.create(Path::new(&path));
            if m.dirs[dir].current.contains_key(name) {
                let err = result.expect_err(ctx);
                assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{ctx}: create {path}");
            } else {
                let handle = result.unwrap_or_else(|e| panic!("{ctx}: create {path}: {e}"));
                let f = m.files.len();
                m.files.push(MFile {
                    durable: Vec::new(),
                    current: Vec::new(),
                    pending: Vec::new(),
                    handle,
                });
                let d = &mut m.dirs[dir];
                d.current.insert(name.to_owned(), MEntry::File(f));
                d.pending.push(MDirOp::Create(name.to_owned(), MEntry::File(f)));
            }
        }
        3..=6 if !m.files.is_empty() => {
            let f = rng.below(m.files.len() as u64) as usize;
            let file = &mut m.files[f];
            let len = file.current.len() as u64;
            // Mostly appends and small overwrites; sometimes a write that spans sectors.
            let offset = match rng.below(4) {
                0 => len,
                1 => rng.below(len + 1),
                2 => len + rng.below(16),
                _ => rng.below(5000),
            };
            let size = if rng.chance(20) { 1 + rng.below(1200) } else { 1 + rng.below(40) };
            let data = rng.bytes(size as usize);
            if rng.chance(5) {
                fs.inject(Fault::new(OpKind::Write, FaultKind::Eio));
                let err = file.handle.write_at(&data, offset).expect_err(ctx);
                assert_eq!(err.raw_os_error(), Some(ingestor_fs::EIO), "{ctx}");
            } else {
                file.handle.write_at(&data, offset).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let op = MOp::Write(offset, data);
                apply(&mut file.current, &op);
                file.pending.push(op);
            }
        }
        7 if !m.files.is_empty() => {
            let f = rng.below(m.files.len() as u64) as usize;
            let file = &mut m.files[f];
            let len = rng.below(file.current.len() as u64 + 30);
            if rng.chance(30) {
                file.handle.allocate(len).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                if (file.current.len() as u64) < len {
                    let op = MOp::SetLen(len);
                    apply(&mut file.current, &op);
                    file.pending.push(op);
                }
            } else {
                file.handle.set_len(len).unwrap_or_else(|e| panic!("{ctx}: {e}"));
                let op = MOp::SetLen(len);
                apply(&mut file.current, &op);
                file.pending.push(op);
            }
        }
        8..=10 if !m.files.is_empty() => {
            let f = rng.below(m.files.len() as u64) as usize;
            let file = &mut m.files[f];
            if rng.chance(8) {
                // A failed fsync loses the pending writes for good, though reads return them.
                fs.inject(Fault::new(OpKind::SyncData, FaultKind::SyncLosesData));
                let err = file.handle.sync_data().expect_err(ctx);
                assert_eq!(err.raw_os_error(), Some(ingestor_fs::EIO), "{ctx}");
                file.pending.clear();
            } else {
                let result =
                    if rng.chance(50) { file.handle.sync_data() } else { file.handle.sync_all() };
                result.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                for op in file.pending.drain(..) {
                    apply(&mut file.durable, &op);
                }
            }
        }
        11..=13 => {
            let dir = rng.below(m.dirs.len() as u64) as usize;
            fs.sync_dir(Path::new(&m.dirs[dir].path)).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let d = &mut m.dirs[dir];
            d.durable = d.current.clone();
            d.pending.clear();
        }
        14 | 15 => {
            let dir = rng.below(m.dirs.len() as u64) as usize;
            let files = m.named_files(dir);
            if files.is_empty() {
                return;
            }
            let (from, _) = &files[rng.below(files.len() as u64) as usize];
            let to = NAMES[rng.below(NAMES.len() as u64) as usize];
            let d = &mut m.dirs[dir];
            let (from_path, to_path) = (join(&d.path, from), join(&d.path, to));
            fs.rename(Path::new(&from_path), Path::new(&to_path))
                .unwrap_or_else(|e| panic!("{ctx}: rename {from_path} {to_path}: {e}"));
            if from != to {
                let op = MDirOp::Rename(from.clone(), to.to_owned());
                apply_dir(&mut d.current, &op);
                d.pending.push(op);
            }
        }
        16 => {
            let dir = rng.below(m.dirs.len() as u64) as usize;
            let files = m.named_files(dir);
            let name = NAMES[rng.below(NAMES.len() as u64) as usize];
            let d = &mut m.dirs[dir];
            let path = join(&d.path, name);
            let result = fs.remove_file(Path::new(&path));
            if files.iter().any(|(n, _)| n == name) {
                result.unwrap_or_else(|e| panic!("{ctx}: remove {path}: {e}"));
                let op = MDirOp::Remove(name.to_owned());
                apply_dir(&mut d.current, &op);
                d.pending.push(op);
            } else {
                let err = result.expect_err(ctx);
                assert_eq!(err.kind(), io::ErrorKind::NotFound, "{ctx}: remove {path}");
            }
        }
        17 if !m.files.is_empty() => {
            // Reads see the current bytes, through the handle and by name.
            let f = rng.below(m.files.len() as u64) as usize;
            let file = &m.files[f];
            let mut buf = vec![0; file.current.len() + 3];
            let n = file.handle.read_at(&mut buf, 0).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(&buf[..n], &file.current[..], "{ctx}: read of file {f}");
            assert_eq!(file.handle.len().unwrap(), file.current.len() as u64, "{ctx}");
        }
        18 => {
            let dir = rng.below(m.dirs.len() as u64) as usize;
            let d = &m.dirs[dir];
            let listed = fs.read_dir(Path::new(&d.path)).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
            let expected: Vec<&str> = d.current.keys().map(String::as_str).collect();
            assert_eq!(names, expected, "{ctx}: read_dir {}", d.path);
            for (name, entry) in &d.current {
                if let MEntry::File(f) = entry {
                    let bytes = fs.read_file(Path::new(&join(&d.path, name))).unwrap();
                    assert_eq!(bytes, m.files[*f].current, "{ctx}: read_file {name}");
                }
            }
        }
        _ => {
            // Errors that must have no effect.
            let err = fs.rename(Path::new("/a/f0"), Path::new("/c/f0")).expect_err(ctx);
            assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{ctx}");
            let err = fs.open(Path::new("/missing"), OpenMode::Read).expect_err(ctx);
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{ctx}");
        }
    }
}

/// Whether `obs` is an image of `file` that `policy` allows.
fn file_allowed(file: &MFile, obs: &[u8], policy: CrashPolicy) -> Result<(), String> {
    let before = &file.durable;
    let after = applied(before, &file.pending);
    let ok = match policy {
        CrashPolicy::DropUnsynced => obs == &before[..],
        CrashPolicy::KeepPrefix => {
            (0..=file.pending.len()).any(|k| applied(before, &file.pending[..k]) == obs)
        }
        CrashPolicy::RevertDirOps => obs == &after[..],
        CrashPolicy::ExtendPastSynced { garbage } => {
            if after.len() > before.len() {
                obs.len() > before.len()
                    && obs.len() <= after.len()
                    && obs[..before.len()] == before[..]
                    && (garbage || obs[before.len()..].iter().all(|&b| b == 0))
            } else {
                obs == &before[..]
            }
        }
        CrashPolicy::TornSectors { sector_bytes } => {
            let s = sector_bytes as usize;
            let differs = |j: usize| before.get(j) != after.get(j);
            (obs.len() == before.len() || obs.len() == after.len())
                && obs.iter().enumerate().all(|(j, &b)| differs(j) || b == before[j])
                // A byte can only differ from the old one inside a sector the writes touched.
                && obs.iter().enumerate().all(|(j, &b)| {
                    let old = before.get(j).copied().unwrap_or(0);
                    b == old || (j / s * s..((j / s + 1) * s)).any(differs)
                })
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "file image not allowed under {policy:?}: before {} bytes, after {} bytes, \
             {} pending ops, observed {} bytes",
            before.len(),
            after.len(),
            file.pending.len(),
            obs.len()
        ))
    }
}

/// Checks the directory `dir` of the model against the disk after a crash, recursively.
fn check_dir(fs: &SimFs, m: &Model, dir: usize, policy: CrashPolicy) -> Result<(), String> {
    let d = &m.dirs[dir];
    let listed =
        fs.read_dir(Path::new(&d.path)).map_err(|e| format!("read_dir {}: {e}", d.path))?;
    let n = d.pending.len();
    let prefixes: Vec<usize> = match policy {
        CrashPolicy::DropUnsynced => vec![0],
        CrashPolicy::RevertDirOps if n > 0 => (0..n).collect(),
        _ => (0..=n).collect(),
    };
    let mut why = Vec::new();
    'candidates: for k in prefixes {
        let mut entries = d.durable.clone();
        for op in &d.pending[..k] {
            apply_dir(&mut entries, op);
        }
        let shape: Vec<(&str, EntryKind)> = entries
            .iter()
            .map(|(name, e)| {
                let kind =
                    if matches!(e, MEntry::Dir(_)) { EntryKind::Dir } else { EntryKind::File };
                (name.as_str(), kind)
            })
            .collect();
        let seen: Vec<(&str, EntryKind)> =
            listed.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        if shape != seen {
            why.push(format!("prefix {k}: entries {shape:?}"));
            continue;
        }
        for (name, entry) in &entries {
            let result = match entry {
                MEntry::File(f) => {
                    let path = join(&d.path, name);
                    let obs = fs.read_file(Path::new(&path)).map_err(|e| format!("{path}: {e}"))?;
                    file_allowed(&m.files[*f], &obs, policy).map_err(|e| format!("{path}: {e}"))
                }
                MEntry::Dir(child) => check_dir(fs, m, *child, policy),
            };
            if let Err(e) = result {
                why.push(format!("prefix {k}: {e}"));
                continue 'candidates;
            }
        }
        return Ok(());
    }
    Err(format!("{} shows {listed:?}, which no allowed prefix explains: {why:?}", d.path))
}

/// The model of the disk as it is now (after a crash: everything durable, nothing pending),
/// checking on the way that what is current is durable.
fn model_of(fs: &SimFs, ctx: &str) -> Model {
    let mut m = Model::empty();
    let mut stack = vec![0];
    let mut files = BTreeSet::new();
    while let Some(dir) = stack.pop() {
        let path = m.dirs[dir].path.clone();
        for entry in fs.read_dir(Path::new(&path)).unwrap() {
            let child_path = join(&path, &entry.name);
            let child = match entry.kind {
                EntryKind::Dir => {
                    m.dirs.push(MDir {
                        path: child_path,
                        durable: BTreeMap::new(),
                        current: BTreeMap::new(),
                        pending: Vec::new(),
                    });
                    stack.push(m.dirs.len() - 1);
                    MEntry::Dir(m.dirs.len() - 1)
                }
                EntryKind::File => {
                    let bytes = fs.read_file(Path::new(&child_path)).unwrap();
                    assert_eq!(
                        fs.durable_len(Path::new(&child_path)).unwrap(),
                        bytes.len() as u64,
                        "{ctx}: after a crash, {child_path} is wholly durable"
                    );
                    files.insert((child_path.clone().into(), bytes.len() as u64));
                    let handle = fs.open(Path::new(&child_path), OpenMode::ReadWrite).unwrap();
                    m.files.push(MFile {
                        durable: bytes.clone(),
                        current: bytes,
                        pending: Vec::new(),
                        handle,
                    });
                    MEntry::File(m.files.len() - 1)
                }
            };
            let d = &mut m.dirs[dir];
            d.durable.insert(entry.name.clone(), child);
            d.current.insert(entry.name, child);
        }
    }
    let listed: BTreeSet<(std::path::PathBuf, u64)> = fs.files().into_iter().collect();
    assert_eq!(listed, files, "{ctx}: SimFs::files() lists the namespace");
    m
}

/// Runs one seed: rounds of random steps, each ended by a crash under a policy, checked.
/// Returns the final trace hash.
fn run_seed(seed: u64, steps_per_round: usize, rounds: usize) -> u64 {
    let fs = SimFs::new(seed);
    let mut rng = TestRng::new(seed);
    let mut m = Model::empty();
    let mut policies = BTreeSet::new();
    for round in 0..rounds {
        let ctx = format!("seed {seed} round {round}");
        for i in 0..steps_per_round {
            step(&fs, &mut m, &mut rng, &format!("{ctx} step {i}"));
        }
        // Each round uses the next policy; the eighth is chosen by the disk.
        let which = (seed as usize + round) % (CrashPolicy::ALL.len() + 1);
        let policy = match CrashPolicy::ALL.get(which) {
            Some(&policy) => {
                fs.crash(policy);
                policy
            }
            None => fs.crash_random(),
        };
        policies.insert(format!("{policy:?}"));
        if let Err(why) = check_dir(&fs, &m, 0, policy) {
            let dir = std::env::temp_dir().join(format!("simfs-model-seed-{seed}-round-{round}"));
            let saved = fs.dump_to(&dir).map(|()| dir.display().to_string());
            panic!("{ctx}: {policy:?}: {why} (image saved: {saved:?})");
        }
        if let Some(file) = m.files.first() {
            let err = file.handle.len().expect_err(&ctx);
            assert_eq!(err.kind(), io::ErrorKind::StaleNetworkFileHandle, "{ctx}");
        }
        m = model_of(&fs, &ctx);
    }
    if rounds > CrashPolicy::ALL.len() {
        assert!(policies.len() >= CrashPolicy::ALL.len(), "seed {seed}: {policies:?}");
    }
    fs.trace_hash()
}

#[test]
fn every_crash_image_is_one_the_model_allows() {
    for seed in 0..500 {
        run_seed(seed, 40, 8);
    }
}

#[test]
fn long_runs_without_crashes_stay_consistent() {
    for seed in 1000..1010 {
        run_seed(seed, 400, 2);
    }
}

#[test]
fn same_seed_same_calls_same_trace_and_image() {
    for seed in [3, 77, 1 << 40] {
        let a = run_seed(seed, 40, 3);
        let b = run_seed(seed, 40, 3);
        assert_eq!(a, b, "seed {seed}");
    }
    assert_ne!(run_seed(5, 40, 3), run_seed(6, 40, 3));
}

/// A fixed history with pending writes across sectors, growth past the durable length and
/// several pending entry operations, crashed under `policy` on disks of different seeds.
fn images_across_disk_seeds(policy: CrashPolicy) -> BTreeSet<Vec<(String, Vec<u8>)>> {
    let mut images = BTreeSet::new();
    for disk_seed in 0..16 {
        let fs = SimFs::new(disk_seed);
        fs.create_dir_all(Path::new("/d")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        for i in 0..4u8 {
            let file = fs.create(Path::new(&format!("/d/f{i}"))).unwrap();
            file.write_at(&[i; 3000], 0).unwrap();
            file.sync_data().unwrap();
            file.write_at(&[0xF0 | i; 5000], 1000).unwrap();
            file.write_at(&[0xE0 | i; 10], 200).unwrap();
        }
        fs.sync_dir(Path::new("/d")).unwrap();
        fs.rename(Path::new("/d/f0"), Path::new("/d/g0")).unwrap();
        fs.remove_file(Path::new("/d/f1")).unwrap();
        fs.rename(Path::new("/d/f2"), Path::new("/d/f3")).unwrap();
        drop(fs.create(Path::new("/d/h")).unwrap());
        fs.crash(policy);
        let image = fs
            .files()
            .into_iter()
            .map(|(path, _)| {
                let bytes = fs.read_file(&path).unwrap();
                (path.display().to_string(), bytes)
            })
            .collect();
        images.insert(image);
    }
    images
}

#[test]
fn different_seeds_usually_give_different_images() {
    for policy in CrashPolicy::ALL {
        let images = images_across_disk_seeds(policy);
        if policy == CrashPolicy::DropUnsynced {
            assert_eq!(images.len(), 1, "DropUnsynced involves no chance");
        } else {
            // RevertDirOps has only four outcomes here (it keeps 0 to 3 of /d's 4 entry ops).
            assert!(images.len() >= 3, "{policy:?}: 16 seeds gave {} images", images.len());
        }
    }
}

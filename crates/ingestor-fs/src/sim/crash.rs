//! Building the post-crash image: the durable state plus the part of the pending state a
//! crash policy lets through, chosen per file and per directory with the seeded generator.

use std::collections::BTreeSet;

use super::CrashPolicy;
use super::rng::Rng;
use super::state::{DataOp, Node, NodeId, ROOT, State, Tag};

impl State {
    /// A power cut: replaces the disk with a post-crash image under `policy`.
    ///
    /// Directories are decided first (which of their pending entry operations survive), then
    /// the files reachable from `/` through the resulting entries (which of their pending
    /// bytes survive), each in node order so that the generator is drawn from in a fixed
    /// order. Nodes that are no longer reachable are dropped.
    pub(crate) fn crash(&mut self, policy: CrashPolicy) {
        let rng = &mut self.rng;
        for node in self.nodes.values_mut() {
            let Node::Dir(dir) = node else { continue };
            let n = dir.pending.len();
            let keep = match policy {
                _ if n == 0 => 0,
                CrashPolicy::DropUnsynced => 0,
                CrashPolicy::RevertDirOps => rng.below(n),
                CrashPolicy::KeepPrefix
                | CrashPolicy::TornSectors { .. }
                | CrashPolicy::ExtendPastSynced { .. } => rng.below(n + 1),
            };
            for op in &dir.pending[..keep] {
                op.apply(&mut dir.durable);
            }
        }

        let reachable = self.reachable_durably();
        self.nodes.retain(|id, _| reachable.contains(id));
        let rng = &mut self.rng;
        for node in self.nodes.values_mut() {
            match node {
                Node::Dir(dir) => {
                    dir.pending.clear();
                    dir.current = dir.durable.clone();
                }
                Node::File(file) => {
                    file.durable = crash_file(&file.durable, &file.pending, policy, rng);
                    file.pending.clear();
                    file.current = file.durable.clone();
                    // A new boot: no write-back error is remembered.
                    file.wb_errors = 0;
                    file.open_handles = 0;
                }
            }
        }

        self.generation += 1;
        self.locks.clear();
        self.crashed = None;
        self.killed = false;
        self.armed_points.clear();
        self.armed_ops.clear();
        self.stats.crashes += 1;
        self.trace_image(policy);
    }

    /// The death of the process alone (`kill -9`): the disk and its page cache stay as they
    /// are (nothing pending is lost or made durable), but every handle and lock taken before
    /// becomes stale, files that only open handles kept are gone, and every call fails until
    /// [`State::revive`].
    pub(crate) fn kill(&mut self) {
        self.killed = true;
        let files: Vec<NodeId> = self
            .nodes
            .iter()
            .filter_map(|(id, node)| matches!(node, Node::File(_)).then_some(*id))
            .collect();
        for id in files {
            if let Some(Node::File(file)) = self.nodes.get_mut(&id) {
                file.open_handles = 0;
            }
            self.forget_if_unused(id);
        }
        self.generation += 1;
        self.locks.clear();
        self.armed_points.clear();
        self.armed_ops.clear();
    }

    /// A new process may use the disk after [`State::kill`].
    pub(crate) fn revive(&mut self) {
        self.killed = false;
    }

    /// The nodes reachable from the root through durable entries.
    fn reachable_durably(&self) -> BTreeSet<NodeId> {
        let mut seen = BTreeSet::from([ROOT]);
        let mut stack = vec![ROOT];
        while let Some(id) = stack.pop() {
            if let Node::Dir(dir) = &self.nodes[&id] {
                for &child in dir.durable.values() {
                    if seen.insert(child) {
                        stack.push(child);
                    }
                }
            }
        }
        seen
    }

    /// Adds the policy and the whole new image to the trace.
    fn trace_image(&mut self, policy: CrashPolicy) {
        self.trace.u8(Tag::Crash.code());
        let (code, param) = match policy {
            CrashPolicy::DropUnsynced => (0, 0),
            CrashPolicy::KeepPrefix => (1, 0),
            CrashPolicy::TornSectors { sector_bytes } => (2, u64::from(sector_bytes)),
            CrashPolicy::ExtendPastSynced { garbage } => (3, u64::from(garbage)),
            CrashPolicy::RevertDirOps => (4, 0),
        };
        self.trace.u8(code);
        self.trace.u64(param);
        for (path, id) in self.walk_current() {
            self.trace.str(&path.to_string());
            match &self.nodes[&id] {
                Node::Dir(_) => self.trace.u8(0),
                Node::File(file) => {
                    self.trace.u8(1);
                    self.trace.bytes(&file.durable);
                }
            }
        }
    }
}

/// Applies every operation of `ops` onto a copy of `bytes`.
fn applied(bytes: &[u8], ops: &[DataOp]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for op in ops {
        op.apply(&mut out);
    }
    out
}

/// The bytes one file holds after the crash, given its durable bytes (`before`) and its
/// pending operations (whose application gives `after`).
pub(crate) fn crash_file(
    before: &[u8],
    pending: &[DataOp],
    policy: CrashPolicy,
    rng: &mut Rng,
) -> Vec<u8> {
    if pending.is_empty() {
        return before.to_vec();
    }
    match policy {
        CrashPolicy::DropUnsynced => before.to_vec(),
        CrashPolicy::KeepPrefix => applied(before, &pending[..rng.below(pending.len() + 1)]),
        CrashPolicy::RevertDirOps => applied(before, pending),
        CrashPolicy::ExtendPastSynced { garbage } => {
            let after_len = applied(before, pending).len();
            let mut out = before.to_vec();
            if after_len > before.len() {
                let len = before.len() + 1 + rng.below(after_len - before.len());
                if garbage {
                    let start = out.len();
                    out.resize(len, 0);
                    rng.fill(&mut out[start..]);
                } else {
                    out.resize(len, 0);
                }
            }
            out
        }
        CrashPolicy::TornSectors { sector_bytes } => {
            torn(before, &applied(before, pending), sector_bytes, rng)
        }
    }
}

/// How one sector that a pending write touched comes out of the crash.
#[derive(Clone, Copy)]
enum SectorFate {
    Old,
    New,
    Garbage,
    /// New bytes before the cut, old ones from it on.
    Split(usize),
}

/// The torn-sector image of a file that went from `before` to `after`.
fn torn(before: &[u8], after: &[u8], sector_bytes: u32, rng: &mut Rng) -> Vec<u8> {
    let sector = usize::try_from(sector_bytes).unwrap_or(usize::MAX).max(1);
    let len = if before.len() != after.len() && rng.coin() { after.len() } else { before.len() };
    let max = before.len().max(after.len());
    // A byte past a file's length is absent: it differs from any byte, and reads as zero.
    let differs = |j: usize| before.get(j) != after.get(j);
    let old = |j: usize| before.get(j).copied().unwrap_or(0);
    let new = |j: usize| after.get(j).copied().unwrap_or(0);
    let mut out = Vec::with_capacity(max);
    for start in (0..max).step_by(sector) {
        let end = (start + sector).min(max);
        if !(start..end).any(differs) {
            out.extend_from_slice(&before[start..end]);
            continue;
        }
        let fate = match rng.below(4) {
            0 => SectorFate::Old,
            1 => SectorFate::New,
            2 => SectorFate::Garbage,
            _ if end - start < 2 => SectorFate::New,
            _ => SectorFate::Split(start + 1 + rng.below(end - start - 1)),
        };
        for j in start..end {
            let byte = if !differs(j) {
                old(j)
            } else {
                match fate {
                    SectorFate::Old => old(j),
                    SectorFate::New => new(j),
                    SectorFate::Garbage => rng.byte(),
                    SectorFate::Split(cut) if j < cut => new(j),
                    SectorFate::Split(_) => old(j),
                }
            };
            out.push(byte);
        }
    }
    out.resize(len, 0);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn write(offset: u64, data: &[u8]) -> DataOp {
        DataOp::Write { offset, data: data.to_vec() }
    }

    #[test]
    fn torn_sectors_touch_only_sectors_with_differences() {
        let before = vec![0xAA; 4096];
        let pending = [write(10, &[0xBB; 5]), write(3000, &[0xCC; 600])];
        let after = applied(&before, &pending);
        for seed in 0..200 {
            let out = crash_file(
                &before,
                &pending,
                CrashPolicy::TornSectors { sector_bytes: 512 },
                &mut Rng::new(seed),
            );
            assert_eq!(out.len(), 4096, "seed {seed}");
            for (j, &b) in out.iter().enumerate() {
                if before[j] == after[j] {
                    assert_eq!(b, before[j], "seed {seed}: byte {j} was not written");
                }
            }
        }
    }

    #[test]
    fn torn_sectors_choose_each_fate_across_seeds() {
        let before = vec![1; 512];
        let pending = [write(0, &[2; 512])];
        let mut fates = BTreeSet::new();
        for seed in 0..200 {
            let out = crash_file(
                &before,
                &pending,
                CrashPolicy::TornSectors { sector_bytes: 512 },
                &mut Rng::new(seed),
            );
            let fate = if out.iter().all(|&b| b == 1) {
                "old"
            } else if out.iter().all(|&b| b == 2) {
                "new"
            } else if out.iter().position(|&b| b == 1).is_some_and(|p| {
                out[..p].iter().all(|&b| b == 2) && out[p..].iter().all(|&b| b == 1)
            }) {
                "split"
            } else {
                "garbage"
            };
            fates.insert(fate);
        }
        assert_eq!(fates.len(), 4, "{fates:?}");
    }

    #[test]
    fn extend_past_synced_never_shrinks_and_never_exceeds_after() {
        let before = b"durable".to_vec();
        let pending = [write(7, &[9; 100])];
        let mut lens = BTreeSet::new();
        for seed in 0..100 {
            let out = crash_file(
                &before,
                &pending,
                CrashPolicy::ExtendPastSynced { garbage: false },
                &mut Rng::new(seed),
            );
            assert!(out.len() > 7 && out.len() <= 107, "seed {seed}: {}", out.len());
            assert_eq!(&out[..7], b"durable");
            assert!(out[7..].iter().all(|&b| b == 0), "seed {seed}: zeros, not data");
            lens.insert(out.len());
        }
        assert!(lens.len() > 10, "lengths should vary: {lens:?}");
    }

    #[test]
    fn keep_prefix_is_a_prefix_of_the_pending_ops() {
        let before = Vec::new();
        let pending = [write(0, b"aaaa"), DataOp::SetLen { len: 2 }, write(2, b"bb")];
        let prefixes: Vec<Vec<u8>> = (0..=3).map(|k| applied(&before, &pending[..k])).collect();
        let mut seen = BTreeMap::new();
        for seed in 0..100 {
            let out = crash_file(&before, &pending, CrashPolicy::KeepPrefix, &mut Rng::new(seed));
            let k = prefixes.iter().position(|p| *p == out);
            assert!(k.is_some(), "seed {seed}: {out:?} is no prefix");
            *seen.entry(k).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 4, "every prefix length should occur: {seen:?}");
    }
}

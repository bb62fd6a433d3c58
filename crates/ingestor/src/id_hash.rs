//! A hasher for the ingestor's own integer ids (series ids of the log, memstore handles):
//! not attacker-chosen, so one multiply instead of SipHash. The memstore keeps its own.

use std::hash::Hasher;

/// Hashes integer ids with one rotate, xor and multiply per value.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(n)).wrapping_mul(K);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }
}

/// Builds [`IdHasher`]s, for maps and sets keyed by ids.
pub(crate) type IdHashBuilder = std::hash::BuildHasherDefault<IdHasher>;

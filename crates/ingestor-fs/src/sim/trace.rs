//! The running FNV-1a hash of everything the simulated disk did, so that two runs can be
//! compared cheaply: the same seed and the same calls give the same hash.

const FNV_OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01B3;

/// A 64-bit FNV-1a hash fed with length-prefixed fields, so that two different sequences of
/// fields cannot produce the same byte stream.
#[derive(Clone, Debug)]
pub(crate) struct Trace {
    hash: u64,
}

impl Trace {
    /// An empty trace.
    pub(crate) fn new() -> Trace {
        Trace { hash: FNV_OFFSET_BASIS }
    }

    /// The hash so far.
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    fn raw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
    }

    /// Adds one byte (a tag).
    pub(crate) fn u8(&mut self, v: u8) {
        self.raw(&[v]);
    }

    /// Adds a number.
    pub(crate) fn u64(&mut self, v: u64) {
        self.raw(&v.to_le_bytes());
    }

    /// Adds a length-prefixed byte string.
    pub(crate) fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.raw(v);
    }

    /// Adds a length-prefixed string.
    pub(crate) fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::Trace;

    #[test]
    fn matches_reference_fnv1a_64() {
        let mut t = Trace::new();
        assert_eq!(t.hash(), 0xCBF2_9CE4_8422_2325);
        t.raw(b"a");
        assert_eq!(t.hash(), 0xAF63_DC4C_8601_EC8C);
        let mut t = Trace::new();
        t.raw(b"foobar");
        assert_eq!(t.hash(), 0x8594_4171_F739_67E8);
    }

    #[test]
    fn length_prefix_separates_fields() {
        let mut a = Trace::new();
        a.str("ab");
        a.str("c");
        let mut b = Trace::new();
        b.str("a");
        b.str("bc");
        assert_ne!(a.hash(), b.hash());
    }
}

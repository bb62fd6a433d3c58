//! CRC-32C (Castagnoli) for the log's frames: the same checksum as the `crc32c` crate,
//! quicker on the short inputs every frame is (a 100-byte record's frame checksums 118
//! bytes).
//!
//! The `crc32c` crate reads the bytes up to the first 8-byte aligned address and the last
//! few bytes one at a time, each a dependent CRC instruction as slow as one over 8 bytes,
//! and under 768 bytes it runs one chain of them: the time of a short input is the length
//! of that chain. Here, on x86-64 with SSE4.2 and PCLMULQDQ, an input from
//! 48 to 767 bytes is cut in three lanes whose chains run side by
//! side, each read 8 bytes at a time from wherever it starts (an unaligned load costs
//! nothing extra) and its last bytes 4, 2 and 1 at a time; the lanes' CRCs are then joined
//! with two carry-less multiplications by constants and one CRC instruction. Shorter inputs
//! run one such chain. Longer inputs, and other CPUs, go to the crate, which interleaves
//! three chains on long inputs.
//!
//! Joining: the CRC state after `A` then `B` is the state `B` leaves from zero, xor the
//! state after `A` multiplied by `x^(8|B|)` modulo the polynomial. A carry-less product of
//! the (bit-reflected) state by `x^(8|B| - 33)`, reduced by the CRC instruction over its 64
//! bits (which multiplies by `x^32` and reduces), is that product: the extra `x^33` comes
//! from the instruction's `x^32` and the one-bit offset of a reflected carry-less product.
//!
//! This is the only module of the workspace with `unsafe` code: the calls into the
//! functions compiled for SSE4.2 and PCLMULQDQ, made only after the CPU was seen to have
//! them.
#![allow(unsafe_code)]

/// Inputs shorter than this take this module's path on x86-64; from this length on, the
/// crate interleaves three chains of CRC instructions itself.
pub(crate) const SHORT_MAX: usize = 768;

/// Inputs from this length on are cut in three lanes.
pub(crate) const THREE_LANES_MIN: usize = 48;

/// The CRC-32C of `bytes`.
#[must_use]
#[inline]
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_append(0, bytes)
}

/// The CRC-32C of the bytes whose CRC-32C was `crc`, followed by `bytes` (as
/// `crc32c::crc32c_append`).
#[must_use]
#[inline]
pub fn crc32c_append(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() < SHORT_MAX && std::arch::is_x86_feature_detected!("sse4.2") {
        if bytes.len() >= THREE_LANES_MIN && std::arch::is_x86_feature_detected!("pclmulqdq") {
            // SAFETY: `three_lanes` needs SSE4.2 and PCLMULQDQ, which the CPU was just seen
            // to have (the detection is cached after the first call).
            return unsafe { x86::three_lanes(crc, bytes) };
        }
        // SAFETY: `one_lane` needs SSE4.2, which the CPU was just seen to have.
        return !unsafe { x86::one_lane(!crc, bytes) };
    }
    crc32c::crc32c_append(crc, bytes)
}

/// `x^(8n - 33)` modulo the CRC-32C polynomial, bit-reflected, for `n` in `0..SHORT_MAX`
/// bytes (0 where `8n < 33`: never used, every lane joined being longer).
#[cfg(target_arch = "x86_64")]
const JOIN: [u32; SHORT_MAX] = {
    /// The polynomial without its `x^32` term, bit-reflected.
    const POLY: u32 = 0x82F6_3B78;
    // Multiplying by x shifts a reflected value right, reducing what leaves bit 0.
    const fn times_x(v: u32) -> u32 {
        (v >> 1) ^ if v & 1 == 1 { POLY } else { 0 }
    }
    let mut table = [0u32; SHORT_MAX];
    // x^0 is the reflected value's top bit; x^7 = x^(8 * 5 - 33) is the first power used.
    let mut power = 1u32 << 31;
    let mut i = 0;
    while i < 7 {
        power = times_x(power);
        i += 1;
    }
    let mut n = 5;
    while n < SHORT_MAX {
        table[n] = power;
        let mut k = 0;
        while k < 8 {
            power = times_x(power);
            k += 1;
        }
        n += 1;
    }
    table
};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _mm_clmulepi64_si128, _mm_crc32_u8, _mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64,
        _mm_cvtsi64_si128, _mm_cvtsi128_si64, _mm_xor_si128,
    };

    use super::JOIN;

    /// The raw CRC state (not inverted) after `bytes` from `state`: one chain of CRC
    /// instructions, 8 bytes at a time, then 4, 2 and 1.
    #[target_feature(enable = "sse4.2")]
    #[inline]
    pub(super) fn one_lane(state: u32, bytes: &[u8]) -> u32 {
        let mut words = bytes.chunks_exact(8);
        let mut state = u64::from(state);
        for word in &mut words {
            state = _mm_crc32_u64(state, u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        // The CRC instruction leaves the upper half of its 64-bit result zero.
        let mut state = state as u32;
        let mut rest = words.remainder();
        if let Some((four, after)) = rest.split_first_chunk::<4>() {
            state = _mm_crc32_u32(state, u32::from_le_bytes(*four));
            rest = after;
        }
        if let Some((two, after)) = rest.split_first_chunk::<2>() {
            state = _mm_crc32_u16(state, u16::from_le_bytes(*two));
            rest = after;
        }
        if let Some(&one) = rest.first() {
            state = _mm_crc32_u8(state, one);
        }
        state
    }

    /// [`super::crc32c_append`] in three lanes: two of a whole number of 8-byte words, a
    /// third of the input or a little less each, and the rest; the three chains interleave
    /// over as many words as the first two lanes have, then the third finishes alone.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) fn three_lanes(crc: u32, bytes: &[u8]) -> u32 {
        let lane = bytes.len() / 24 * 8;
        let (a, rest) = bytes.split_at(lane);
        let (b, c) = rest.split_at(lane);
        let (mut sa, mut sb, mut sc) = (u64::from(!crc), 0u64, 0u64);
        for ((wa, wb), wc) in a.chunks_exact(8).zip(b.chunks_exact(8)).zip(c.chunks_exact(8)) {
            sa = _mm_crc32_u64(sa, u64::from_le_bytes(wa.try_into().expect("8 bytes")));
            sb = _mm_crc32_u64(sb, u64::from_le_bytes(wb.try_into().expect("8 bytes")));
            sc = _mm_crc32_u64(sc, u64::from_le_bytes(wc.try_into().expect("8 bytes")));
        }
        let sc = one_lane(sc as u32, &c[lane..]);
        // state(a b c) = sa * x^(8(|b| + |c|)) + sb * x^(8|c|) + sc, reduced.
        let joined = _mm_xor_si128(
            _mm_clmulepi64_si128(
                _mm_cvtsi64_si128(sa as i64),
                _mm_cvtsi64_si128(i64::from(JOIN[b.len() + c.len()])),
                0,
            ),
            _mm_clmulepi64_si128(
                _mm_cvtsi64_si128(sb as i64),
                _mm_cvtsi64_si128(i64::from(JOIN[c.len()])),
                0,
            ),
        );
        let state = _mm_crc32_u64(0, _mm_cvtsi128_si64(joined) as u64) as u32 ^ sc;
        !state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_crate_at_every_length_and_alignment() {
        let bytes: Vec<u8> = (0..SHORT_MAX as u32 + 80)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for start in 0..8 {
            for len in 0..bytes.len() - start {
                let slice = &bytes[start..start + len];
                assert_eq!(crc32c(slice), crc32c::crc32c(slice), "start {start}, length {len}");
                let prev = crc32c::crc32c(&bytes[..start]);
                assert_eq!(
                    crc32c_append(prev, slice),
                    crc32c::crc32c_append(prev, slice),
                    "start {start}, length {len}, appended"
                );
            }
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn one_lane_matches_the_crate_at_every_length() {
        if !std::arch::is_x86_feature_detected!("sse4.2") {
            return;
        }
        let bytes: Vec<u8> =
            (0..SHORT_MAX as u32).map(|i| (i.wrapping_mul(40_503) >> 7) as u8).collect();
        for start in 0..8 {
            for len in 0..bytes.len() - start {
                let slice = &bytes[start..start + len];
                // SAFETY: the CPU has SSE4.2 (checked above).
                let crc = !unsafe { x86::one_lane(!0, slice) };
                assert_eq!(crc, crc32c::crc32c(slice), "start {start}, length {len}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_and_any_starting_crc_match_the_crate(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2000),
            crc in proptest::num::u32::ANY,
            start in 0usize..8,
        ) {
            let slice = bytes.get(start..).unwrap_or_default();
            proptest::prop_assert_eq!(crc32c_append(crc, slice), crc32c::crc32c_append(crc, slice));
        }
    }

    #[test]
    fn known_values() {
        // The check value of CRC-32C, and the iSCSI test vector of 32 zero bytes (RFC 3720).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[]), 0);
    }
}

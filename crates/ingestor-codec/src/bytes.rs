//! Primitive encodings: varints (LEB128 via `integer-encoding`, zigzag for signed values),
//! little-endian floats, length-prefixed strings; and a bounds-checked reader that never
//! panics and reports the offset of whatever it could not read.

use integer_encoding::VarInt;

use crate::error::{DecodeError, DecodeErrorKind};

/// The longest varint of a 64-bit value.
pub(crate) const MAX_VARINT_LEN: usize = 10;

#[inline]
pub(crate) fn put_uvarint(out: &mut Vec<u8>, v: u64) {
    let mut buf = [0u8; MAX_VARINT_LEN];
    let n = v.encode_var(&mut buf);
    out.extend_from_slice(&buf[..n]);
}

#[inline]
pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; MAX_VARINT_LEN];
    let n = v.encode_var(&mut buf);
    out.extend_from_slice(&buf[..n]);
}

#[inline]
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// A cursor over a record payload. Every read checks bounds; errors carry the offset at
/// which the failing item starts, counted in the payload.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn err(&self, at: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::payload(at, kind)
    }

    fn truncated(&self, needed: usize) -> DecodeError {
        self.err(
            self.pos,
            DecodeErrorKind::Truncated {
                needed: needed as u64,
                available: self.remaining() as u64,
            },
        )
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.truncated(1))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    pub(crate) fn uvarint(&mut self) -> Result<u64, DecodeError> {
        match u64::decode_var(&self.buf[self.pos..]) {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(self.varint_error()),
        }
    }

    /// A varint that did not decode: cut off by the end of the input, or malformed.
    #[cold]
    fn varint_error(&self) -> DecodeError {
        let rest = &self.buf[self.pos..];
        if rest.len() < MAX_VARINT_LEN && rest.iter().all(|b| b & 0x80 != 0) {
            self.truncated(rest.len() + 1)
        } else {
            self.err(self.pos, DecodeErrorKind::BadVarint)
        }
    }

    #[inline]
    pub(crate) fn ivarint(&mut self) -> Result<i64, DecodeError> {
        match i64::decode_var(&self.buf[self.pos..]) {
            Some((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(self.varint_error()),
        }
    }

    /// A varint that must not exceed `limit`; `what` names it in the error.
    #[inline]
    pub(crate) fn uvarint_max(
        &mut self,
        limit: u64,
        what: &'static str,
    ) -> Result<u64, DecodeError> {
        let at = self.pos;
        let v = self.uvarint()?;
        if v > limit {
            return Err(self.err(at, DecodeErrorKind::LimitExceeded { what, limit, found: v }));
        }
        Ok(v)
    }

    #[inline]
    pub(crate) fn f64_le(&mut self) -> Result<f64, DecodeError> {
        let bytes = self.bytes(8)?;
        let mut arr = [0u8; 8];
        arr.copy_from_slice(bytes);
        Ok(f64::from_le_bytes(arr))
    }

    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.truncated(n));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// A length-prefixed UTF-8 string of at most `max_len` bytes.
    pub(crate) fn str(
        &mut self,
        max_len: usize,
        what: &'static str,
    ) -> Result<&'a str, DecodeError> {
        let len = self.uvarint_max(max_len as u64, what)? as usize;
        let at = self.pos;
        let bytes = self.bytes(len)?;
        std::str::from_utf8(bytes).map_err(|_| self.err(at, DecodeErrorKind::InvalidUtf8 { what }))
    }

    /// Fails unless every byte has been read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(self.err(self.pos, DecodeErrorKind::TrailingBytes(n as u64))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_uvarint(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.uvarint().unwrap(), v);
            r.finish().unwrap();
        }
        for v in [0, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            put_ivarint(&mut out, v);
            assert_eq!(Reader::new(&out).ivarint().unwrap(), v);
        }
    }

    #[test]
    fn malformed_varints_are_errors_with_offsets() {
        let mut r = Reader::new(&[0x05, 0x80, 0x80]);
        assert_eq!(r.u8().unwrap(), 5);
        let err = r.uvarint().unwrap_err();
        assert_eq!(err.offset, 1);
        assert_eq!(err.kind, DecodeErrorKind::Truncated { needed: 3, available: 2 });
        assert!(matches!(
            Reader::new(&[]).uvarint().unwrap_err().kind,
            DecodeErrorKind::Truncated { .. }
        ));
        // Eleven continuation bytes: longer than any 64-bit varint.
        let long = [0xffu8; 11];
        assert_eq!(Reader::new(&long).uvarint().unwrap_err().kind, DecodeErrorKind::BadVarint);
    }

    #[test]
    fn strings_are_bounded_and_checked() {
        let mut out = Vec::new();
        put_str(&mut out, "héllo");
        assert_eq!(Reader::new(&out).str(16, "s").unwrap(), "héllo");
        let err = Reader::new(&out).str(3, "s").unwrap_err();
        assert!(matches!(err.kind, DecodeErrorKind::LimitExceeded { limit: 3, found: 6, .. }));
        let bad = [2u8, 0xff, 0xfe];
        assert_eq!(
            Reader::new(&bad).str(16, "s").unwrap_err().kind,
            DecodeErrorKind::InvalidUtf8 { what: "s" }
        );
        let short = [5u8, b'a'];
        assert!(matches!(
            Reader::new(&short).str(16, "s").unwrap_err().kind,
            DecodeErrorKind::Truncated { needed: 5, available: 1 }
        ));
    }
}

//! Bearer-token and basic authentication, compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::config::Credentials;

/// What a request's `Authorization` header earns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No credentials needed, or the right ones given.
    Allowed,
    /// None given: 401 with `WWW-Authenticate`.
    Missing,
    /// Wrong ones given: 403.
    Wrong,
}

/// Compares two secrets in time that depends only on their lengths, not on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Checks an `Authorization` header against what is required (`None`: anyone).
pub(crate) fn check(required: Option<&Credentials>, header: Option<&[u8]>) -> Verdict {
    let Some(creds) = required else { return Verdict::Allowed };
    let Some(header) = header else { return Verdict::Missing };
    let header = std::str::from_utf8(header).unwrap_or("").trim();
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    let value = value.trim().as_bytes();
    if scheme.eq_ignore_ascii_case("bearer") {
        // Every token is compared, so that the time does not say which one nearly matched.
        let ok = creds.bearer_tokens.iter().fold(false, |ok, t| ok | same(t.as_bytes(), value));
        return if ok { Verdict::Allowed } else { Verdict::Wrong };
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(value).unwrap_or_default();
        let ok = creds.basic.iter().fold(false, |ok, (user, password)| {
            let want = format!("{user}:{password}");
            ok | same(want.as_bytes(), &decoded)
        });
        return if ok { Verdict::Allowed } else { Verdict::Wrong };
    }
    Verdict::Wrong
}

/// The `WWW-Authenticate` challenge for credentials: Bearer when tokens are accepted, else
/// Basic.
pub(crate) fn challenge(creds: &Credentials) -> &'static str {
    if creds.bearer_tokens.is_empty() {
        "Basic realm=\"ingestor\", charset=\"UTF-8\""
    } else {
        "Bearer realm=\"ingestor\""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            bearer_tokens: vec!["s3cret".into(), "other".into()],
            basic: vec![("ana".into(), "pw:with:colons".into())],
        }
    }

    #[test]
    fn verdicts() {
        let c = creds();
        assert_eq!(check(None, None), Verdict::Allowed);
        assert_eq!(check(Some(&c), None), Verdict::Missing);
        assert_eq!(check(Some(&c), Some(b"Bearer s3cret")), Verdict::Allowed);
        assert_eq!(check(Some(&c), Some(b"bearer other")), Verdict::Allowed);
        assert_eq!(check(Some(&c), Some(b"Bearer s3cre")), Verdict::Wrong);
        assert_eq!(check(Some(&c), Some(b"Bearer s3cret2")), Verdict::Wrong);
        assert_eq!(check(Some(&c), Some(b"Bearer ")), Verdict::Wrong);
        let basic = format!("Basic {}", STANDARD.encode("ana:pw:with:colons"));
        assert_eq!(check(Some(&c), Some(basic.as_bytes())), Verdict::Allowed);
        let wrong = format!("Basic {}", STANDARD.encode("ana:pw"));
        assert_eq!(check(Some(&c), Some(wrong.as_bytes())), Verdict::Wrong);
        assert_eq!(check(Some(&c), Some(b"Basic !!!")), Verdict::Wrong);
        assert_eq!(check(Some(&c), Some(b"Digest x")), Verdict::Wrong);
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
        assert!(same(b"", b""));
    }
}

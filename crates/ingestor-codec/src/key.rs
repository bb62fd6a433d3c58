//! Series keys: a metric name plus a set of labels, validated as Prometheus validates them.

use std::fmt;
use std::sync::Arc;

use crate::error::ValidationError;

/// The longest metric name accepted, in bytes.
pub const MAX_METRIC_NAME_LEN: usize = 255;
/// The longest label name accepted, in bytes.
pub const MAX_LABEL_NAME_LEN: usize = 255;
/// The longest label value accepted, in bytes.
pub const MAX_LABEL_VALUE_LEN: usize = 4096;
/// The most labels one series may have (the metric name not counted).
pub const MAX_LABELS: usize = 64;

/// One label: a name and a value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    name: Box<str>,
    value: Box<str>,
}

impl Label {
    /// The label's name, for example `host`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The label's value, for example `web-1`.
    #[must_use]
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// A validated series key in canonical form: a metric name and labels sorted by name.
///
/// Two keys are equal exactly when they name the same series. Rules (those of Prometheus,
/// with documented limits):
/// - the metric name matches `[a-zA-Z_:][a-zA-Z0-9_:]*`, at most [`MAX_METRIC_NAME_LEN`] bytes;
/// - label names match `[a-zA-Z_][a-zA-Z0-9_]*`, at most [`MAX_LABEL_NAME_LEN`] bytes, and do
///   not start with `__` (reserved, as in Prometheus);
/// - label values are non-empty UTF-8 (Prometheus treats an empty value as an absent label,
///   so one is refused rather than silently dropped), at most [`MAX_LABEL_VALUE_LEN`] bytes;
/// - no label name appears twice; at most [`MAX_LABELS`] labels.
///
/// ```
/// use ingestor_codec::SeriesKey;
/// let key = SeriesKey::new("http_requests", [("path", "/"), ("code", "200")])?;
/// assert_eq!(key.to_string(), r#"http_requests{code="200",path="/"}"#);
/// assert!(SeriesKey::new("9lives", [("a", "b")]).is_err());
/// # Ok::<(), ingestor_codec::ValidationError>(())
/// ```
///
/// A key is immutable and shared: cloning one (into each [`crate::Update`] of a batch, say)
/// costs a reference count, not a copy of its strings.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey(Arc<KeyParts>);

/// What a key holds; compared, ordered and hashed as the name, then the labels.
#[derive(PartialEq, Eq, PartialOrd, Ord, Hash)]
struct KeyParts {
    name: Box<str>,
    labels: Box<[Label]>,
}

impl fmt::Debug for SeriesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeriesKey")
            .field("name", &self.0.name)
            .field("labels", &self.0.labels)
            .finish()
    }
}

impl SeriesKey {
    /// Validates a metric name and labels (in any order) and builds the canonical key.
    ///
    /// # Errors
    /// A [`ValidationError`] naming the field that breaks a rule and the rule it breaks.
    pub fn new<N, V>(
        name: &str,
        labels: impl IntoIterator<Item = (N, V)>,
    ) -> Result<SeriesKey, ValidationError>
    where
        N: AsRef<str>,
        V: AsRef<str>,
    {
        validate_metric_name(name)?;
        let mut out: Vec<Label> = Vec::new();
        for (label_name, value) in labels {
            let (label_name, value) = (label_name.as_ref(), value.as_ref());
            if out.len() == MAX_LABELS {
                return Err(ValidationError::TooManyLabels { max: MAX_LABELS });
            }
            validate_label(label_name, value)?;
            out.push(Label { name: label_name.into(), value: value.into() });
        }
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = out.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(ValidationError::DuplicateLabel { name: pair[0].name.to_string() });
        }
        Ok(SeriesKey(Arc::new(KeyParts { name: name.into(), labels: out.into_boxed_slice() })))
    }

    /// Builds a key from labels that must already be in canonical order (strictly
    /// increasing names), as decoders read them; validates every rule.
    ///
    /// # Errors
    /// As [`validate_canonical`].
    pub fn from_canonical(
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<SeriesKey, ValidationError> {
        validate_canonical(name, labels)?;
        Ok(SeriesKey::from_checked(name, labels))
    }

    /// Builds a key from parts [`validate_canonical`] accepted.
    pub(crate) fn from_checked(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
        SeriesKey(Arc::new(KeyParts {
            name: name.into(),
            labels: labels
                .iter()
                .map(|&(n, v)| Label { name: n.into(), value: v.into() })
                .collect(),
        }))
    }

    /// The metric name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The labels, sorted by name.
    #[must_use]
    pub fn labels(&self) -> &[Label] {
        &self.0.labels
    }

    /// The value of the label `name`, if the series has it.
    #[must_use]
    pub fn label(&self, name: &str) -> Option<&str> {
        self.0
            .labels
            .binary_search_by(|l| (*l.name).cmp(name))
            .ok()
            .map(|i| &*self.0.labels[i].value)
    }
}

impl fmt::Display for SeriesKey {
    /// Prometheus' notation: `name{a="x",b="y"}`, values escaped as in the text format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.name)?;
        if self.0.labels.is_empty() {
            return Ok(());
        }
        f.write_str("{")?;
        for (i, label) in self.0.labels.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}=\"", label.name)?;
            for c in label.value.chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '"' => f.write_str("\\\"")?,
                    '\n' => f.write_str("\\n")?,
                    c => write!(f, "{c}")?,
                }
            }
            f.write_str("\"")?;
        }
        f.write_str("}")
    }
}

/// At most 64 characters of a rejected name, so that an error message stays readable.
fn excerpt(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// Checks a metric name and labels given in canonical order (strictly increasing names), as
/// [`SeriesKey::new`] would check them; allocates nothing. Decoders use it to check keys they
/// read without building them.
///
/// # Errors
/// A [`ValidationError`] naming the field that breaks a rule; unsorted or duplicate label
/// names.
pub fn validate_canonical(name: &str, labels: &[(&str, &str)]) -> Result<(), ValidationError> {
    validate_metric_name(name)?;
    if labels.len() > MAX_LABELS {
        return Err(ValidationError::TooManyLabels { max: MAX_LABELS });
    }
    let mut prev: Option<&str> = None;
    for &(label_name, value) in labels {
        validate_label(label_name, value)?;
        if let Some(prev) = prev {
            // One comparison for both checks (replay validates every key of the log).
            match prev.cmp(label_name) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    return Err(ValidationError::DuplicateLabel { name: label_name.to_string() });
                }
                std::cmp::Ordering::Greater => {
                    return Err(ValidationError::LabelName {
                        name: excerpt(label_name),
                        reason: "labels are not sorted by name (not in canonical form)",
                    });
                }
            }
        }
        prev = Some(label_name);
    }
    Ok(())
}

/// Which bytes may stand where in names: bit 0, anywhere in a label name; bit 1, anywhere in
/// a metric name; bit 2, first in a label name; bit 3, first in a metric name. One load a
/// byte instead of the range tests of `is_ascii_alphanumeric` (replay validates every key
/// of the log).
const NAME_BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() || c == b'_' {
            0b1111
        } else if c.is_ascii_digit() {
            0b0011
        } else if c == b':' {
            0b1010
        } else {
            0
        };
        b += 1;
    }
    t
};

/// Whether the first byte of `name` (not empty) has `first_bit` in [`NAME_BYTES`], and
/// whether every byte has `any_bit`.
#[inline]
fn name_bytes(name: &[u8], first_bit: u8, any_bit: u8) -> (bool, bool) {
    let first = NAME_BYTES[name[0] as usize] & first_bit != 0;
    let all = name.iter().fold(0xff, |acc, &b| acc & NAME_BYTES[b as usize]) & any_bit != 0;
    (first, all)
}

fn validate_metric_name(name: &str) -> Result<(), ValidationError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_METRIC_NAME_LEN {
        Some("it is longer than 255 bytes")
    } else {
        match name_bytes(name.as_bytes(), 0b1000, 0b0010) {
            (false, _) => Some("it must start with a letter, '_' or ':'"),
            (true, false) => Some("it may contain only letters, digits, '_' and ':'"),
            (true, true) => None,
        }
    };
    match reason {
        Some(reason) => Err(ValidationError::MetricName { name: excerpt(name), reason }),
        None => Ok(()),
    }
}

fn validate_label(name: &str, value: &str) -> Result<(), ValidationError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > MAX_LABEL_NAME_LEN {
        Some("it is longer than 255 bytes")
    } else {
        match name_bytes(name.as_bytes(), 0b0100, 0b0001) {
            (false, _) => Some("it must start with a letter or '_'"),
            (true, false) => Some("it may contain only letters, digits and '_'"),
            (true, true) if name.starts_with("__") => Some("names starting with '__' are reserved"),
            (true, true) => None,
        }
    };
    if let Some(reason) = reason {
        return Err(ValidationError::LabelName { name: excerpt(name), reason });
    }
    let reason = if value.is_empty() {
        Some("it is empty (an empty value means an absent label; omit the label)")
    } else if value.len() > MAX_LABEL_VALUE_LEN {
        Some("it is longer than 4096 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ValidationError::LabelValue { label: excerpt(name), reason }),
        None => Ok(()),
    }
}

const _: () = assert!(MAX_METRIC_NAME_LEN == 255 && MAX_LABEL_NAME_LEN == 255);
const _: () = assert!(MAX_LABEL_VALUE_LEN == 4096);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ascii_byte_is_allowed_exactly_where_the_format_says() {
        for b in 0..128u8 {
            let metric_first = b.is_ascii_alphabetic() || b == b'_' || b == b':';
            let metric_any = b.is_ascii_alphanumeric() || b == b'_' || b == b':';
            let label_first = b.is_ascii_alphabetic() || b == b'_';
            let label_any = b.is_ascii_alphanumeric() || b == b'_';
            let first = String::from_utf8(vec![b, b'a']).unwrap();
            let middle = String::from_utf8(vec![b'a', b, b'a']).unwrap();
            assert_eq!(validate_metric_name(&first).is_ok(), metric_first, "{first:?}");
            assert_eq!(validate_metric_name(&middle).is_ok(), metric_any, "{middle:?}");
            assert_eq!(validate_label(&first, "v").is_ok(), label_first, "{first:?}");
            assert_eq!(validate_label(&middle, "v").is_ok(), label_any, "{middle:?}");
        }
        for name in ["é", "aé", "a\u{7f}b", "a b"] {
            assert!(validate_metric_name(name).is_err() && validate_label(name, "v").is_err());
        }
        assert!(validate_label("__a", "v").is_err(), "reserved");
        assert!(validate_label("_a", "v").is_ok());
    }

    #[test]
    fn canonical_form_sorts_labels() {
        let a = SeriesKey::new("m", [("b", "2"), ("a", "1")]).unwrap();
        let b = SeriesKey::new("m", [("a", "1"), ("b", "2")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.labels()[0].name(), "a");
        assert_eq!(a.label("b"), Some("2"));
        assert_eq!(a.label("c"), None);
    }

    #[test]
    fn metric_name_rules() {
        for ok in ["a", "_", ":", "http_requests_total", "ns:rule:rate5m", "A9"] {
            SeriesKey::new(ok, Vec::<(&str, &str)>::new()).unwrap();
        }
        for (bad, reason) in
            [("", "empty"), ("9a", "start"), ("a-b", "only"), ("é", "start"), ("a b", "only")]
        {
            let err = SeriesKey::new(bad, Vec::<(&str, &str)>::new()).unwrap_err();
            assert!(
                matches!(&err, ValidationError::MetricName { reason: r, .. } if r.contains(reason)),
                "{bad:?}: {err}"
            );
        }
        let long = "a".repeat(MAX_METRIC_NAME_LEN + 1);
        assert!(SeriesKey::new(&long, Vec::<(&str, &str)>::new()).is_err());
        SeriesKey::new(&long[1..], Vec::<(&str, &str)>::new()).unwrap();
    }

    #[test]
    fn label_rules() {
        let cases: [(&str, &str, &str); 6] = [
            ("", "v", "empty"),
            ("1a", "v", "start"),
            ("a:b", "v", "only"),
            ("__name__", "v", "reserved"),
            ("a", "", "absent"),
            ("a", &"x".repeat(MAX_LABEL_VALUE_LEN + 1), "4096"),
        ];
        for (name, value, reason) in cases {
            let err = SeriesKey::new("m", [(name, value)]).unwrap_err();
            assert!(err.to_string().contains(reason), "{name:?}={value:?}: {err}");
        }
        let err = SeriesKey::new("m", [("a", "1"), ("a", "2")]).unwrap_err();
        assert_eq!(err, ValidationError::DuplicateLabel { name: "a".into() });
        let many: Vec<(String, String)> =
            (0..=MAX_LABELS).map(|i| (format!("l{i}"), "v".to_string())).collect();
        assert_eq!(
            SeriesKey::new("m", many.clone()).unwrap_err(),
            ValidationError::TooManyLabels { max: MAX_LABELS }
        );
        SeriesKey::new("m", many[..MAX_LABELS].to_vec()).unwrap();
    }

    #[test]
    fn display_escapes_values() {
        let key = SeriesKey::new("m", [("a", "x\"y\\z\nw")]).unwrap();
        assert_eq!(key.to_string(), r#"m{a="x\"y\\z\nw"}"#);
        assert_eq!(SeriesKey::new("m", Vec::<(&str, &str)>::new()).unwrap().to_string(), "m");
    }

    #[test]
    fn a_key_is_one_pointer_and_clones_share_it() {
        assert_eq!(std::mem::size_of::<SeriesKey>(), std::mem::size_of::<usize>());
        let a = SeriesKey::new("m", [("a", "1")]).unwrap();
        let b = a.clone();
        assert!(Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(
            format!("{a:?}"),
            r#"SeriesKey { name: "m", labels: [Label { name: "a", value: "1" }] }"#
        );
    }

    #[test]
    fn from_canonical_refuses_unsorted_or_duplicate_labels() {
        assert!(SeriesKey::from_canonical("m", &[("a", "1"), ("b", "2")]).is_ok());
        assert!(SeriesKey::from_canonical("m", &[("b", "1"), ("a", "2")]).is_err());
        assert!(SeriesKey::from_canonical("m", &[("a", "1"), ("a", "2")]).is_err());
        assert!(validate_canonical("m", &[("b", "1"), ("a", "2")]).is_err());
        // Each of the two neighbour checks says which it is.
        assert_eq!(
            validate_canonical("m", &[("a", "1"), ("a", "2")]),
            Err(ValidationError::DuplicateLabel { name: "a".into() })
        );
        assert!(matches!(
            validate_canonical("m", &[("b", "1"), ("a", "2")]),
            Err(ValidationError::LabelName { reason, .. }) if reason.contains("not sorted")
        ));
        assert!(validate_canonical("m", &[("a", "")]).is_err(), "empty values are refused");
        assert!(validate_canonical("9m", &[]).is_err());
    }

    #[test]
    fn long_names_are_cut_in_errors() {
        let err = SeriesKey::new(&format!("-{}", "a".repeat(500)), Vec::<(&str, &str)>::new())
            .unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }
}

//! Durations as people write them in flags and configuration files: a whole number and a
//! unit, `250us`, `5ms`, `15s`, `2m`, `1h`. With the `serde` feature, the module `serde`
//! reads them (or a number of seconds) and writes seconds as a number, for the configuration
//! and report types of the workspace.

use std::time::Duration;

/// Parses `<whole number><unit>`, the unit one of `us`, `ms`, `s`, `m`, `h`.
///
/// # Errors
/// What is wrong, quoting the input.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(ingestor_codec::duration::parse("15s"), Ok(Duration::from_secs(15)));
/// assert!(ingestor_codec::duration::parse("15").unwrap_err().contains("unit"));
/// ```
pub fn parse(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a number and a unit (us, ms, s, m, h)"))?;
    match unit {
        "us" => Ok(Duration::from_micros(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        "" => Err(format!("{s:?}: a duration needs a unit (us, ms, s, m, h)")),
        _ => Err(format!("{s:?}: unknown unit {unit:?} (us, ms, s, m, h)")),
    }
}

/// `#[serde(with = "ingestor_codec::duration::serde")]` for a [`Duration`]: reads a string
/// [`parse`] takes or a non-negative number of seconds; writes seconds as a number.
#[cfg(feature = "serde")]
pub mod serde {
    use std::time::Duration;

    use serde::de::{self, Deserializer, Visitor};
    use serde::ser::Serializer;

    /// Writes `d` as seconds (a number).
    ///
    /// # Errors
    /// The serializer's.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Reads a duration: `"15s"` or `15` (seconds; fractions allowed).
    ///
    /// # Errors
    /// Anything else, with the reason.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a duration such as \"15s\" or \"250ms\", or a number of seconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            super::parse(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("{v}: a duration is not negative")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v).map_err(|e| E::custom(format!("{v} seconds: {e}")))
        }
    }

    /// The same for an `Option<Duration>`: `"off"` (or `"none"`, or a missing value with
    /// `#[serde(default)]`) is `None`; `None` is written as nothing (`null`).
    pub mod option {
        use std::time::Duration;

        use serde::de::{self, Deserializer, Visitor};
        use serde::ser::Serializer;

        /// Writes `Some(d)` as seconds, `None` as `null`.
        ///
        /// # Errors
        /// The serializer's.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_f64(d.as_secs_f64()),
                None => s.serialize_none(),
            }
        }

        /// Reads `"off"`, `"none"` or `null` as `None`, anything [`super::deserialize`]
        /// takes as `Some`.
        ///
        /// # Errors
        /// Anything else, with the reason.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            d.deserialize_any(OptionVisitor)
        }

        struct OptionVisitor;

        impl<'de> Visitor<'de> for OptionVisitor {
            type Value = Option<Duration>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"15s\", a number of seconds, or \"off\"")
            }

            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(None)
            }

            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "off" | "none" => Ok(None),
                    _ => super::super::parse(v).map(Some).map_err(E::custom),
                }
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                super::DurationVisitor.visit_u64(v).map(Some)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                super::DurationVisitor.visit_i64(v).map(Some)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                super::DurationVisitor.visit_f64(v).map(Some)
            }
        }
    }
}

//! What to forward where, and how hard to try.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::ForwardError;

/// One remote-write receiver: a name (for cursors, metrics and logs) and its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Destination {
    /// `[A-Za-z0-9_-]`, 1 to 64 characters; names the cursor file and the metrics' label.
    pub name: String,
    /// The receiver's remote-write endpoint, `http://` or `https://`, for example
    /// `http://vm:8428/api/v1/write`.
    pub url: String,
    /// Whether requests go out as remote write 2.0 (`io.prometheus.write.v2.Request`) instead
    /// of 1.0. Default: 1.0.
    pub v2: bool,
}

impl Destination {
    /// A destination, validated.
    ///
    /// # Errors
    /// [`ForwardError::Config`] naming what is wrong with the name or the URL.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Result<Self, ForwardError> {
        let d = Destination { name: name.into(), url: url.into(), v2: false };
        d.validate()?;
        Ok(d)
    }

    /// The same destination, sent remote write 2.0.
    #[must_use]
    pub fn remote_write_v2(mut self) -> Self {
        self.v2 = true;
        self
    }

    fn validate(&self) -> Result<(), ForwardError> {
        let bad = |why: String| Err(ForwardError::Config(why));
        let name = &self.name;
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return bad(format!(
                "destination name {name:?}: use 1 to 64 characters of [A-Za-z0-9_-]"
            ));
        }
        let uri: ureq::http::Uri = match self.url.parse() {
            Ok(u) => u,
            Err(e) => return bad(format!("destination {name}: URL {:?}: {e}", self.url)),
        };
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return bad(format!(
                "destination {name}: URL {:?} is not an http:// or https:// URL with a host",
                self.url
            ));
        }
        Ok(())
    }
}

impl FromStr for Destination {
    type Err = ForwardError;

    /// `NAME=URL`, as `ingestor serve --forward` takes it.
    fn from_str(s: &str) -> Result<Self, ForwardError> {
        match s.split_once('=') {
            Some((name, url)) => Destination::new(name, url),
            None => Err(ForwardError::Config(format!(
                "{s:?}: a destination is NAME=URL, for example vm=http://127.0.0.1:8428/api/v1/write"
            ))),
        }
    }
}

/// What happens when a destination's backlog in the outbox reaches its byte budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum BudgetPolicy {
    /// New writes to the ingestor are refused (the server answers 503 with `Retry-After`)
    /// until the destination's backlog is below the budget again. Nothing is lost.
    #[default]
    Block,
    /// The destination's cursor skips its oldest requests until the backlog fits; their
    /// samples are counted as dropped (`reason="budget"`). Writes go on.
    DropOldest,
}

impl FromStr for BudgetPolicy {
    type Err = ForwardError;

    fn from_str(s: &str) -> Result<Self, ForwardError> {
        match s {
            "block" => Ok(BudgetPolicy::Block),
            "drop_oldest" | "drop-oldest" => Ok(BudgetPolicy::DropOldest),
            _ => {
                Err(ForwardError::Config(format!("budget policy {s:?}: use block or drop_oldest")))
            }
        }
    }
}

impl fmt::Display for BudgetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BudgetPolicy::Block => "block",
            BudgetPolicy::DropOldest => "drop_oldest",
        })
    }
}

/// How forwarding runs. Start from [`ForwardConfig::default`] and set fields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct ForwardConfig {
    /// Where to send. Forwarding does nothing without a destination.
    pub destinations: Vec<Destination>,
    /// How often the series changed since the last flush become samples in the outbox.
    /// Default 15 s.
    #[cfg_attr(feature = "serde", serde(with = "ingestor::duration::serde"))]
    pub flush_interval: Duration,
    /// The most samples in one remote-write request. Default 2,000.
    pub max_samples_per_request: usize,
    /// The first retry's delay after a 5xx, a 429 or a network error; it doubles up to
    /// `backoff_max`, with jitter. Default 30 ms.
    #[cfg_attr(feature = "serde", serde(with = "ingestor::duration::serde"))]
    pub backoff_min: Duration,
    /// The longest delay between retries (a receiver's `Retry-After` can ask for longer).
    /// Default 5 s.
    #[cfg_attr(feature = "serde", serde(with = "ingestor::duration::serde"))]
    pub backoff_max: Duration,
    /// Whether a 429 is retried (the default) or drops the request like other 4xx.
    pub retry_429: bool,
    /// The longest one request may take, connection included. Default 30 s.
    #[cfg_attr(feature = "serde", serde(with = "ingestor::duration::serde"))]
    pub request_timeout: Duration,
    /// The outbox bytes a destination may have waiting before `budget_policy` applies.
    /// Default 1 GiB.
    pub budget_bytes: u64,
    /// What happens at the budget. Default [`BudgetPolicy::Block`].
    pub budget_policy: BudgetPolicy,
    /// The size of the outbox's segment files. Default 64 MiB.
    pub segment_bytes: u64,
    /// How many requests may be sent again after a crash: those settled (answered) whose
    /// cursor is not durable yet, which the cursor keeper group-commits while the next
    /// requests go out, and the one in flight. Default 8.
    pub cursor_window: usize,
    /// Senders per destination, each with its own cursor, POSTing at once: a series always
    /// goes to the same shard (its key's hash), so its samples keep their order. Default 4;
    /// 1 to 256.
    pub shards: usize,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            destinations: Vec::new(),
            flush_interval: Duration::from_secs(15),
            max_samples_per_request: 2_000,
            backoff_min: Duration::from_millis(30),
            backoff_max: Duration::from_secs(5),
            retry_429: true,
            request_timeout: Duration::from_secs(30),
            budget_bytes: 1 << 30,
            budget_policy: BudgetPolicy::Block,
            segment_bytes: 64 << 20,
            cursor_window: 8,
            shards: 4,
        }
    }
}

impl ForwardConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ForwardError::Config`] naming the field and the rule.
    pub fn validate(&self) -> Result<(), ForwardError> {
        let bad = |why: &str| Err(ForwardError::Config(why.to_owned()));
        if self.destinations.is_empty() {
            return bad("no destination: forwarding needs at least one");
        }
        for (i, d) in self.destinations.iter().enumerate() {
            d.validate()?;
            if self.destinations[..i].iter().any(|o| o.name == d.name) {
                return Err(ForwardError::Config(format!(
                    "destination name {:?} is used twice",
                    d.name
                )));
            }
        }
        if self.flush_interval.is_zero() {
            return bad("flush_interval must be above zero");
        }
        if self.max_samples_per_request == 0 {
            return bad("max_samples_per_request must be at least 1");
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return bad("backoff_min must be above zero and at most backoff_max");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be above zero");
        }
        if self.budget_bytes == 0 {
            return bad("budget_bytes must be above zero");
        }
        if self.segment_bytes < 4 << 10 {
            return bad("segment_bytes must be at least 4 KiB");
        }
        if self.cursor_window == 0 {
            return bad("cursor_window must be at least 1");
        }
        if !(1..=256).contains(&self.shards) {
            return bad("shards must be 1 to 256");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_refuse_with_reasons() {
        let d: Destination = "vm=http://127.0.0.1:8428/api/v1/write".parse().unwrap();
        assert_eq!((d.name.as_str(), d.url.as_str()), ("vm", "http://127.0.0.1:8428/api/v1/write"));
        for (bad, why) in [
            ("novalue", "NAME=URL"),
            ("=http://a/", "destination name"),
            ("a b=http://a/", "destination name"),
            ("vm=ftp://a/", "not an http"),
            ("vm=not a url", "URL"),
        ] {
            let err = bad.parse::<Destination>().unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn config_validation_names_the_field() {
        let mut c = ForwardConfig::default();
        assert!(c.validate().unwrap_err().to_string().contains("at least one"));
        c.destinations = vec![Destination::new("a", "http://x/").unwrap()];
        c.validate().unwrap();
        c.destinations = vec![
            Destination::new("a", "http://x/").unwrap(),
            Destination::new("a", "http://y/").unwrap(),
        ];
        assert!(c.validate().unwrap_err().to_string().contains("used twice"));
        let c = ForwardConfig {
            backoff_min: Duration::from_secs(10),
            destinations: vec![Destination::new("a", "http://x/").unwrap()],
            ..ForwardConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("backoff_min"));
        assert_eq!("drop_oldest".parse::<BudgetPolicy>().unwrap(), BudgetPolicy::DropOldest);
        assert!("sometimes".parse::<BudgetPolicy>().is_err());
    }
}

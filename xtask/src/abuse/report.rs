//! The checks and the figures they rest on: each check is printed with its figure and what
//! it was measured against, and the run fails naming every check that failed.

use std::time::Duration;

/// One check and its outcome.
#[derive(Debug, Clone)]
pub(crate) struct Check {
    /// What is checked.
    pub(crate) name: String,
    /// Whether it held.
    pub(crate) passed: bool,
    /// The measured figure, with what it was compared against.
    pub(crate) figure: String,
}

/// The checks of a run, in the order they were made.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Every check.
    pub(crate) checks: Vec<Check>,
}

impl Report {
    /// Adds a check and prints it at once.
    pub(crate) fn check(&mut self, name: &str, passed: bool, figure: String) {
        println!("  {} {name}: {figure}", if passed { "PASS" } else { "FAIL" });
        self.checks.push(Check { name: name.to_string(), passed, figure });
    }

    /// The names of the checks that failed.
    pub(crate) fn failed(&self) -> Vec<&str> {
        self.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect()
    }

    /// Prints every check again, as a summary.
    pub(crate) fn print_summary(&self) {
        println!("\n==> summary: {} checks, {} failed", self.checks.len(), self.failed().len());
        for c in &self.checks {
            println!("  {} {}: {}", if c.passed { "PASS" } else { "FAIL" }, c.name, c.figure);
        }
    }
}

/// The `p`-th percentile (0 to 100) of `values` by the nearest-rank method; zero when empty.
pub(crate) fn percentile(values: &[Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut v = values.to_vec();
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// A duration for people: microseconds, milliseconds or seconds.
pub(crate) fn ms(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 0.001 {
        format!("{:.0} us", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// Bytes for people, in MiB.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Minimum, median and maximum of `values`, for people.
pub(crate) fn spread(values: &[Duration]) -> String {
    if values.is_empty() {
        return "none".to_string();
    }
    let min = values.iter().min().copied().unwrap_or_default();
    let max = values.iter().max().copied().unwrap_or_default();
    format!("min {}, median {}, max {}", ms(min), ms(percentile(values, 50.0)), ms(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
    }
}

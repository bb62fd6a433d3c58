//! Figures, their ratios to the ceiling and to each peer, and the report: Markdown for
//! people, JSON for programs.

use std::fmt::Write as _;

use serde::Serialize;

/// What a ratio target compares against.
#[derive(Debug, Clone)]
pub enum Against {
    /// The ceiling of the figure.
    Ceiling,
    /// The best of the peers.
    BestPeer,
    /// One peer, by name.
    Peer(&'static str),
}

/// One measured figure of the ingestor, with what it is compared to.
#[derive(Debug, Clone)]
pub struct Figure {
    pub section: String,
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub lower_is_better: bool,
    pub ceiling: Option<(String, f64)>,
    pub peers: Vec<(String, f64)>,
    /// An absolute target.
    pub target: Option<f64>,
    /// Ratio targets: at least `x` times what they compare against.
    pub ratio_targets: Vec<(Against, f64)>,
    pub note: Option<String>,
    /// When measured in interleaved rounds: the figure of each round, in order.
    pub runs: Vec<f64>,
    /// The rounds of the ceiling and of the peers measured in the same rounds, by name.
    pub other_runs: Vec<(String, Vec<f64>)>,
}

impl Figure {
    pub fn new(section: &str, name: &str, value: f64, unit: &str) -> Figure {
        Figure {
            section: section.to_string(),
            name: name.to_string(),
            value,
            unit: unit.to_string(),
            lower_is_better: false,
            ceiling: None,
            peers: Vec::new(),
            target: None,
            ratio_targets: Vec::new(),
            note: None,
            runs: Vec::new(),
            other_runs: Vec::new(),
        }
    }

    pub fn lower_is_better(mut self) -> Figure {
        self.lower_is_better = true;
        self
    }

    pub fn target(mut self, t: f64) -> Figure {
        self.target = Some(t);
        self
    }

    pub fn ceiling(mut self, name: &str, value: f64) -> Figure {
        self.ceiling = Some((name.to_string(), value));
        self
    }

    pub fn peer(mut self, name: &str, value: f64) -> Figure {
        self.peers.push((name.to_string(), value));
        self
    }

    pub fn at_least(mut self, against: Against, x: f64) -> Figure {
        self.ratio_targets.push((against, x));
        self
    }

    /// A figure measured in interleaved rounds: its value is the median of `runs`.
    pub fn from_runs(section: &str, name: &str, runs: &[f64], unit: &str) -> Figure {
        let mut f = Figure::new(section, name, median(runs), unit);
        f.runs = runs.to_vec();
        f
    }

    /// A ceiling measured in the same rounds as the figure (see [`Figure::ratio_to`]).
    pub fn ceiling_runs(self, name: &str, runs: &[f64]) -> Figure {
        let mut f = self.ceiling(name, median(runs));
        f.other_runs.push((name.to_string(), runs.to_vec()));
        f
    }

    /// A peer measured in the same rounds as the figure (see [`Figure::ratio_to`]).
    pub fn peer_runs(self, name: &str, runs: &[f64]) -> Figure {
        let mut f = self.peer(name, median(runs));
        f.other_runs.push((name.to_string(), runs.to_vec()));
        f
    }

    pub fn note(mut self, note: String) -> Figure {
        self.note = Some(note);
        self
    }

    /// How many times better than `other` (above 1: better).
    fn ratio(&self, other: f64) -> f64 {
        if self.lower_is_better { other / self.value } else { self.value / other }
    }

    /// The rounds' ratios to the ceiling or peer `name`, when both were measured in the same
    /// interleaved rounds.
    fn round_ratios(&self, name: &str) -> Option<Vec<f64>> {
        let (_, other) = self.other_runs.iter().find(|(n, _)| n == name)?;
        (!self.runs.is_empty() && other.len() == self.runs.len()).then(|| {
            let pair = |(&mine, &theirs): (&f64, &f64)| {
                if self.lower_is_better { theirs / mine } else { mine / theirs }
            };
            self.runs.iter().zip(other).map(pair).collect()
        })
    }

    /// The ratio to the ceiling or peer `name` of value `other`: the median of the rounds'
    /// ratios when both were measured in the same interleaved rounds (a slow moment of the
    /// shared machine then weighs on both sides of each ratio), else the ratio of the figures.
    fn ratio_to(&self, name: &str, other: f64) -> f64 {
        self.round_ratios(name).map_or_else(|| self.ratio(other), |r| median(&r))
    }

    fn best_peer(&self) -> Option<&(String, f64)> {
        self.peers
            .iter()
            .max_by(|a, b| self.ratio_to(&b.0, b.1).total_cmp(&self.ratio_to(&a.0, a.1)))
    }

    /// The ratio to the ceiling or to peer `name` (of figure `value`) as the table prints
    /// it: two decimals, or as many more as a ratio target against it needs to show its
    /// side (as the verdict does).
    fn ratio_text(&self, name: &str, value: f64, is_ceiling: bool) -> String {
        let r = self.ratio_to(name, value);
        let best = self.best_peer().map(|b| b.0.as_str());
        let target = self.ratio_targets.iter().find_map(|(against, x)| {
            let applies = match against {
                Against::Ceiling => is_ceiling,
                Against::BestPeer => !is_ceiling && best == Some(name),
                Against::Peer(p) => !is_ceiling && *p == name,
            };
            applies.then_some(*x)
        });
        match target {
            Some(x) => decimals(r, |s| (s >= x) == (r >= x)),
            None => format!("{r:.2}"),
        }
    }

    /// Each target with its verdict: (text, met).
    fn verdicts(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        if let Some(t) = self.target {
            let met = if self.lower_is_better { self.value <= t } else { self.value >= t };
            let sign = if self.lower_is_better { "<=" } else { ">=" };
            // A figure that prints as the target itself (9.996M against 10.0M) says which
            // side it is on with more digits.
            let side = |v: f64| if self.lower_is_better { v <= t } else { v >= t };
            let shown = more_digits(self.value, |s| side(s) == met);
            let close =
                if shown == human(self.value) { String::new() } else { format!(" (is {shown})") };
            out.push((format!("{sign} {}{close}", human(t)), met));
        }
        for (against, x) in &self.ratio_targets {
            let (label, other) = match against {
                Against::Ceiling => ("ceiling", self.ceiling.as_ref()),
                Against::BestPeer => ("best peer", self.best_peer()),
                Against::Peer(name) => (*name, self.peers.iter().find(|p| p.0 == *name)),
            };
            if let Some((name, other)) = other {
                let r = self.ratio_to(name, *other);
                let rounds = self.round_ratios(name).map_or(String::new(), |rs| {
                    let each: Vec<String> = rs.iter().map(|r| format!("{r:.2}")).collect();
                    format!("; rounds {}", each.join(", "))
                });
                // Two decimals, or more where two would print a miss as the target (1.497
                // as 1.50 against 1.5).
                let is = decimals(r, |s| (s >= *x) == (r >= *x));
                out.push((format!(">= {x}x {label} (is {is}x{rounds})"), r >= *x));
            }
        }
        out
    }

    /// The figure as the JSON report holds it.
    fn to_json(&self) -> FigureJson<'_> {
        let compared = |(name, value): &(String, f64)| Compared {
            name: name.clone(),
            value: *value,
            ratio: self.ratio_to(name, *value),
            runs: self.other_runs.iter().find(|(n, _)| n == name).map(|(_, r)| r.clone()),
        };
        FigureJson {
            section: &self.section,
            name: &self.name,
            value: self.value,
            unit: &self.unit,
            lower_is_better: self.lower_is_better,
            ceiling: self.ceiling.as_ref().map(compared),
            peers: self.peers.iter().map(compared).collect(),
            targets: self
                .verdicts()
                .into_iter()
                .map(|(target, met)| Verdict { target, met })
                .collect(),
            note: self.note.as_deref(),
            runs: (!self.runs.is_empty()).then_some(&self.runs[..]),
        }
    }
}

/// The median of `values` (the upper one of an even count; 0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// A figure in the JSON report.
#[derive(Debug, Serialize)]
struct FigureJson<'a> {
    section: &'a str,
    name: &'a str,
    value: f64,
    unit: &'a str,
    lower_is_better: bool,
    ceiling: Option<Compared>,
    peers: Vec<Compared>,
    targets: Vec<Verdict>,
    note: Option<&'a str>,
    /// Each round's figure, when measured in interleaved rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    runs: Option<&'a [f64]>,
}

/// A ceiling or a peer, and the figure's ratio to it (above 1: the ingestor is ahead): the
/// median of the rounds' ratios when both were measured in the same rounds.
#[derive(Debug, Serialize)]
struct Compared {
    name: String,
    value: f64,
    ratio: f64,
    /// Each round's figure, when measured in the figure's rounds.
    #[serde(skip_serializing_if = "Option::is_none")]
    runs: Option<Vec<f64>>,
}

/// A target and whether the figure met it.
#[derive(Debug, Serialize)]
struct Verdict {
    target: String,
    met: bool,
}

/// The JSON report: the machine it ran on and every figure.
#[derive(Debug, Serialize)]
struct ReportJson<'a> {
    machine: std::collections::BTreeMap<&'a str, &'a str>,
    figures: Vec<FigureJson<'a>>,
}

/// A number in a readable form: 3 significant digits, with k/M/G for large values.
pub fn human(v: f64) -> String {
    human_with(v, 0)
}

/// `v` with two decimals, or up to five where `faithful` (given the printed value read back)
/// says fewer would mislead.
fn decimals(v: f64, faithful: impl Fn(f64) -> bool) -> String {
    (2..=5)
        .map(|d| format!("{v:.d$}"))
        .find(|s| s.parse().is_ok_and(&faithful))
        .unwrap_or_else(|| format!("{v}"))
}

/// [`human`], with up to four more decimals where `faithful` (given the printed value read
/// back, with its suffix) says fewer would mislead.
fn more_digits(v: f64, faithful: impl Fn(f64) -> bool) -> String {
    // Read back exactly: "9.996M" as 9.996e6, not 9.996 * 1e6.
    let scale = |s: &str| {
        let (n, exponent) = match s.as_bytes().last() {
            Some(b'G') => (&s[..s.len() - 1], "e9"),
            Some(b'M') => (&s[..s.len() - 1], "e6"),
            Some(b'k') => (&s[..s.len() - 1], "e3"),
            _ => (s, ""),
        };
        format!("{n}{exponent}").parse::<f64>()
    };
    (0..=4)
        .map(|extra| human_with(v, extra))
        .find(|s| scale(s).is_ok_and(&faithful))
        .unwrap_or_else(|| format!("{v}"))
}

/// [`human`] with `extra` more decimals.
fn human_with(v: f64, extra: usize) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if x.abs() >= 100.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else {
        2
    };
    let digits = digits + extra;
    format!("{x:.digits$}{suffix}")
}

/// Every figure of one run, and the facts of the machine it ran on.
#[derive(Debug, Default)]
pub struct Report {
    pub figures: Vec<Figure>,
    pub machine: Vec<(String, String)>,
}

impl Report {
    pub fn add(&mut self, f: Figure) {
        eprintln!("  {}: {} = {} {}", f.section, f.name, human(f.value), f.unit);
        self.figures.push(f);
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.machine {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let mut sections: Vec<&str> = Vec::new();
        for f in &self.figures {
            if !sections.contains(&f.section.as_str()) {
                sections.push(&f.section);
            }
        }
        for section in sections {
            let _ = writeln!(s, "\n### {section}\n");
            let _ = writeln!(s, "| figure | ingestor | ceiling | peers | target |");
            let _ = writeln!(s, "|---|---|---|---|---|");
            for f in self.figures.iter().filter(|f| f.section == section) {
                let ceiling = f.ceiling.as_ref().map_or(String::new(), |(n, v)| {
                    format!("{n}: {} ({}x)", human(*v), f.ratio_text(n, *v, true))
                });
                let peers: Vec<String> = f
                    .peers
                    .iter()
                    .map(|(n, v)| format!("{n}: {} ({}x)", human(*v), f.ratio_text(n, *v, false)))
                    .collect();
                let mut targets: Vec<String> = f
                    .verdicts()
                    .into_iter()
                    .map(|(t, met)| format!("{t} {}", if met { "met" } else { "**missed**" }))
                    .collect();
                if let Some(n) = &f.note {
                    targets.push(n.clone());
                }
                let _ = writeln!(
                    s,
                    "| {} | {} {} | {ceiling} | {} | {} |",
                    f.name,
                    human(f.value),
                    f.unit,
                    peers.join("; "),
                    targets.join("; ")
                );
            }
        }
        let _ = writeln!(
            s,
            "\nRatios are the ingestor's figure over the other one (inverted where lower is \
             better): above 1 the ingestor is ahead. Where the systems took turns in rounds, \
             each figure is that system's median and each ratio the median of the rounds' \
             ratios (every round measures each system back to back, so a slow moment of the \
             shared machine weighs on both sides of a ratio); a ratio target lists the rounds' \
             ratios, and the JSON report holds every round's figure."
        );
        s
    }

    pub fn json(&self) -> serde_json::Value {
        let report = ReportJson {
            machine: self.machine.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            figures: self.figures.iter().map(Figure::to_json).collect(),
        };
        serde_json::to_value(report).expect("the report serializes")
    }
}

//! InfluxDB line protocol in, validated ingestor updates out.
//!
//! A line is `measurement[,tag=value...] field=value[,field=value...] [timestamp]`. The mapping
//! is VictoriaMetrics': every field `f` of measurement `m` becomes the gauge series `m_f`, set
//! to the field's value, with the tags as its labels. Floats (`1.5`, `1e3`), integers (`3i`)
//! and unsigned integers (`3u`) are taken as they are (an integer beyond 2^53 loses precision
//! as an `f64`); booleans (`t`, `true`, `f`, `FALSE`, ...) are 1 and 0.
//!
//! # Syntax: the reference decoder's
//!
//! The syntax is the one InfluxData's reference decoder reads (the `lineprotocol` package of
//! `github.com/influxdata/line-protocol/v2`, which InfluxDB, Telegraf and the client libraries
//! write and read by). The crate's `tests/line_conformance.rs` is a table of inputs with what
//! that decoder makes of them; this parser agrees on every row except the deliberate
//! deviations listed below, each of which is a row of its own.
//!
//! - **Escapes.** In the measurement a backslash escapes only `,` and space; in tag keys, tag
//!   values and field keys only `,`, `=` and space. A backslash before anything else (another
//!   backslash included) is kept as it is, and the character after it is read as usual: the
//!   tag value `two\\\ words` is `two\\ words`, and `\\ east` is `\ east`. Inside string field
//!   values `\"` and `\\` are the escapes.
//! - **Non-printable ASCII** (0x00 to 0x1F and 0x7F, the tab included) is refused everywhere
//!   but inside string field values: in the measurement, tag keys and values, field keys,
//!   values, timestamps and comments, and before the measurement.
//! - **Lines** are split at `\n`; one `\r` right before it (or at the very end of the body)
//!   belongs to the line ending, and a `\r` anywhere else is refused. Spaces, and only spaces,
//!   may start a line and separate its sections, several at a time. Blank lines and comments
//!   (lines whose first non-space character is `#`) are skipped.
//! - **Tags** need a non-empty key and a non-empty value: `m,t= v=1` is refused, and so is an
//!   unescaped `=` in a tag value (`m,t=a=b v=1`). The measurement may hold `=` unescaped.
//! - **Field values**: a float is an optional `-` then decimal digits with an optional `.`
//!   and exponent (`-1.5`, `1.`, `.5`, `1e-3`; no leading `+`); an integer is `-3i`, an
//!   unsigned integer `3u`; booleans are `t`, `T`, `true`, `True`, `TRUE` and the same for
//!   `f`/`false`.
//! - **Timestamps** are an optional `-` and decimal digits (no `+`), in the body's
//!   [`Precision`]; one whose value in nanoseconds does not fit an `i64` (outside the years
//!   1677 to 2262) is refused. A line without one is stamped with the time the body arrived,
//!   cut to the precision as the reference does (to the second for [`Precision::S`]).
//!
//! # Deliberate deviations
//!
//! Where ingestor differs from the reference decoder, on purpose (each is a row of the
//! conformance table):
//!
//! - **String fields are refused**, and with them the line and so the body: a string is not
//!   a sample. They are refused only once the whole line has been read, so that a syntax
//!   error later in the line is reported as such. A raw newline inside a string value, which
//!   the reference reads as part of the string, ends the line here, so that the string reads
//!   as unterminated (refused either way).
//! - **Hexadecimal floats** (`0x1p4`), which the reference takes because Go's `ParseFloat`
//!   does, are refused: the line-protocol grammar has decimal floats only.
//! - **Names are made Prometheus names**, the way VictoriaMetrics makes them: every character
//!   outside `[a-zA-Z0-9_:]` (metric names) or `[a-zA-Z0-9_]` (label names) becomes `_`, and a
//!   name that starts with a digit gets a leading `_`. Two tag keys that sanitize alike
//!   (`a.b` and `a_b`) are then one label twice, and refused; a tag key that starts with `__`
//!   once sanitized (`__x`, `_.x`, `\\n`) is reserved, and refused.
//! - **The data model's limits** ([`SeriesKey::new`], [`Update::new`]): at most 64 tags
//!   ([`ingestor_codec::MAX_LABELS`]), names of at most 255 bytes, tag values of at most
//!   4,096 bytes, finite values (`1e999` is refused, as the reference refuses it out of range).
//! - **A repeated field** (or two whose series names sanitize alike) is one series, and the
//!   last value wins; the reference returns each.
//! - **Input is UTF-8 text** (the parser takes a `&str`): the reference refuses invalid UTF-8
//!   in names, keys and tag values too, but reads it inside comments and string values.
//!
//! Each line is checked for syntax first, then for string fields, then against the data model
//! ([`SeriesKey::new`] and [`Update::new`]). A body is all or nothing: the first bad line is
//! the error, named by its 1-based number.

use std::collections::HashMap;
use std::fmt;

use ingestor_codec::{Op, SeriesKey, Timestamp, Update};

/// The unit of the timestamps in a body, as given by the `precision` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Nanoseconds (`ns`, or InfluxDB 1's `n`): InfluxDB's default.
    Ns,
    /// Microseconds (`us`, or InfluxDB 1's `u`).
    Us,
    /// Milliseconds (`ms`).
    Ms,
    /// Seconds (`s`).
    S,
}

impl Precision {
    /// Reads a `precision` parameter: `ns` or `n`, `us` or `u`, `ms`, `s`; `None` for anything
    /// else (InfluxDB 1's `m` and `h` are not accepted).
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "ns" | "n" => Some(Precision::Ns),
            "us" | "u" => Some(Precision::Us),
            "ms" => Some(Precision::Ms),
            "s" => Some(Precision::S),
            _ => None,
        }
    }

    /// The unit's name, for error messages.
    fn unit(self) -> &'static str {
        match self {
            Precision::Ns => "nanoseconds",
            Precision::Us => "microseconds",
            Precision::Ms => "milliseconds",
            Precision::S => "seconds",
        }
    }

    /// Nanoseconds in one unit.
    fn nanos(self) -> i64 {
        match self {
            Precision::Ns => 1,
            Precision::Us => 1_000,
            Precision::Ms => 1_000_000,
            Precision::S => 1_000_000_000,
        }
    }

    /// Converts a timestamp in this unit to milliseconds, rounding down (so that a moment
    /// before the epoch stays before it); `None` when it is out of range: when its value in
    /// nanoseconds does not fit an `i64`, as InfluxDB's time does not.
    pub(crate) fn to_millis(self, t: i64) -> Option<i64> {
        let ns = t.checked_mul(self.nanos())?;
        Some(ns.div_euclid(1_000_000))
    }

    /// The timestamp of a line that has none: `now_ms` cut to this unit (to the second for
    /// seconds), as the reference decoder cuts its default time to the precision.
    pub(crate) fn default_time(self, now_ms: i64) -> i64 {
        match self {
            Precision::S => now_ms - now_ms.rem_euclid(1_000),
            Precision::Ns | Precision::Us | Precision::Ms => now_ms,
        }
    }
}

/// A line of a body that could not be taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The line's number, counting from 1 (blank and comment lines count).
    pub line: usize,
    /// What is wrong with it, naming the measurement, tag, field or value at fault.
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for LineError {}

/// Parses a whole body; all or nothing: the first bad line is the error.
///
/// Timestamps are read in `precision` and converted to milliseconds (rounding down); a line
/// without one is stamped `now_ms`, cut to the precision (to the second for [`Precision::S`]).
pub fn parse_body(body: &str, precision: Precision, now_ms: i64) -> Result<Vec<Update>, LineError> {
    let mut out = Vec::new();
    for (number, line) in lines(body) {
        parse_line(line, precision, now_ms, &mut out, None)
            .map_err(|reason| LineError { line: number, reason })?;
    }
    Ok(out)
}

/// The lines of a body that may hold data, with their 1-based numbers: split at `\n`,
/// without one trailing `\r` or leading spaces; blank lines and comments left out. A comment
/// that holds a non-printable character is not left out, for [`parse_line`] to refuse.
pub(crate) fn lines(body: &str) -> impl Iterator<Item = (usize, &str)> {
    body.split('\n').enumerate().filter_map(|(index, raw)| {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = line.trim_start_matches(' ');
        let skip = line.is_empty()
            || (line.starts_with('#') && !line.bytes().any(|b| b.is_ascii_control()));
        (!skip).then_some((index + 1, line))
    })
}

/// The characters a backslash escapes in tag keys, tag values and field keys. A backslash
/// before any other character (another backslash included) is a plain character.
const ESCAPABLE: &[u8] = b",= ";

/// The characters a backslash escapes in the measurement: `\=` there is two characters.
const MEASUREMENT_ESCAPABLE: &[u8] = b", ";

/// Refuses a token that holds non-printable ASCII (0x00 to 0x1F, 0x7F), naming it.
fn printable(what: &str, raw: &str) -> Result<(), String> {
    match raw.chars().find(char::is_ascii_control) {
        Some(c) => Err(format!("{what} {} holds the non-printable character {c:?}", quoted(raw))),
        None => Ok(()),
    }
}

/// Parses one non-blank line (without its line ending) into `out`; when `raw_keys` is given,
/// it gets each update's field key as written (escapes unresolved), in the order of the
/// updates. A line that starts with `#` is a comment [`lines`] did not skip: refused.
pub(crate) fn parse_line<'a>(
    line: &'a str,
    precision: Precision,
    now_ms: i64,
    out: &mut Vec<Update>,
    mut raw_keys: Option<&mut Vec<&'a str>>,
) -> Result<(), String> {
    if let Some(c) = line.chars().find(char::is_ascii_control).filter(|_| line.starts_with('#')) {
        return Err(format!("a comment holds the non-printable character {c:?}"));
    }
    let mut cur = Cursor { s: line, pos: 0 };

    let (raw_measurement, _) = cur.escaped_token(b", ");
    printable("measurement", raw_measurement)?;
    let measurement = unescape(raw_measurement, MEASUREMENT_ESCAPABLE);
    if measurement.is_empty() {
        return Err("the measurement name is empty".to_string());
    }

    let mut labels: Vec<(String, String)> = Vec::new();
    while cur.peek() == Some(b',') {
        cur.pos += 1;
        let (raw_key, stop) = cur.escaped_token(b",= ");
        printable("tag key", raw_key)?;
        let key = unescape(raw_key, ESCAPABLE);
        if key.is_empty() {
            return Err("a tag key is empty".to_string());
        }
        if stop != Some(b'=') {
            return Err(format!("tag {} has no '=' and value", quoted(&key)));
        }
        cur.pos += 1;
        let (raw_value, stop) = cur.escaped_token(b",= ");
        printable(&format!("tag {}: the value", quoted(&key)), raw_value)?;
        if raw_value.is_empty() {
            return Err(format!("tag {} has an empty value", quoted(&key)));
        }
        if stop == Some(b'=') {
            return Err(format!(
                "tag {} has an unescaped '=' in its value (write it as \\=)",
                quoted(&key)
            ));
        }
        labels.push((sanitize_label_name(&key), unescape(raw_value, ESCAPABLE)));
    }

    cur.skip_spaces();
    if cur.at_end() {
        return Err(format!("measurement {} has no fields", quoted(&measurement)));
    }

    // Fields in order of first appearance, keyed by series name: a repeated field (or two
    // fields whose names sanitize alike) keeps its place and takes the last value.
    let mut fields: Vec<(String, &'a str, String, f64)> = Vec::new();
    let mut by_metric: HashMap<String, usize> = HashMap::new();
    let mut first_string: Option<String> = None;
    loop {
        let (raw_key, stop) = cur.escaped_token(b",= ");
        printable("field key", raw_key)?;
        let key = unescape(raw_key, ESCAPABLE);
        if key.is_empty() {
            return Err("a field key is empty".to_string());
        }
        if stop != Some(b'=') {
            return Err(format!("field {} has no '=' and value", quoted(&key)));
        }
        cur.pos += 1;
        if cur.peek() == Some(b'"') {
            if !cur.skip_string() {
                return Err(format!("field {} has an unterminated string value", quoted(&key)));
            }
            if let Some(c) = cur.rest().chars().next().filter(|c| !matches!(c, ',' | ' ')) {
                return Err(format!(
                    "field {}: unexpected {c:?} after the string value",
                    quoted(&key)
                ));
            }
            // Strings are refused only once the whole line has been read, so that a syntax
            // error later in the line is reported as such.
            first_string.get_or_insert(key);
        } else {
            let raw = cur.raw_token(b", ");
            let value = parse_field_value(&key, raw)?;
            let metric = sanitize_metric_name(&format!("{measurement}_{key}"));
            match by_metric.get(&metric) {
                Some(&i) => {
                    if let Some(slot) = fields.get_mut(i) {
                        *slot = (key, raw_key, metric, value);
                    }
                }
                None => {
                    by_metric.insert(metric.clone(), fields.len());
                    fields.push((key, raw_key, metric, value));
                }
            }
        }
        if cur.peek() == Some(b',') {
            cur.pos += 1;
        } else {
            break;
        }
    }

    cur.skip_spaces();
    let timestamp = if cur.at_end() {
        precision.default_time(now_ms)
    } else {
        let ms = parse_timestamp(cur.raw_token(b" "), precision)?;
        cur.skip_spaces();
        if !cur.at_end() {
            return Err(format!("unexpected text {} after the timestamp", quoted(cur.rest())));
        }
        ms
    };

    if let Some(key) = first_string {
        return Err(format!(
            "field {} is a string; only float, integer, unsigned and boolean fields are accepted",
            quoted(&key)
        ));
    }

    for (key, raw_key, metric, value) in fields {
        if let Some(raw) = raw_keys.as_deref_mut() {
            raw.push(raw_key);
        }
        let series = SeriesKey::new(&metric, labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .map_err(|e| format!("field {}: {e}", quoted(&key)))?;
        let update = Update::new(series, Timestamp(timestamp), Op::GaugeSet(value))
            .map_err(|e| format!("field {}: {e}", quoted(&key)))?;
        out.push(update);
    }
    Ok(())
}

/// Reads a timestamp (an optional `-` and decimal digits) in `precision`, to milliseconds.
pub(crate) fn parse_timestamp(raw: &str, precision: Precision) -> Result<i64, String> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    let t = (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| raw.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| {
            format!(
                "invalid timestamp {}: expected an integer number of {}",
                quoted(raw),
                precision.unit()
            )
        })?;
    precision
        .to_millis(t)
        .ok_or_else(|| format!("timestamp {} is out of range in {}", quoted(raw), precision.unit()))
}

/// Whether `digits` is an optional `-` (when `signed`) then one or more decimal digits.
fn integer_syntax(digits: &str, signed: bool) -> bool {
    let unsigned = if signed { digits.strip_prefix('-').unwrap_or(digits) } else { digits };
    !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit())
}

/// Reads a field value that is not a string: a float, `3i`, `3u` or a boolean.
pub(crate) fn parse_field_value(key: &str, raw: &str) -> Result<f64, String> {
    if raw.is_empty() {
        return Err(format!("field {} has no value", quoted(key)));
    }
    match raw {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(1.0),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(0.0),
        _ => {}
    }
    if let Some(digits) = raw.strip_suffix('i') {
        return integer_syntax(digits, true)
            .then(|| digits.parse::<i64>().ok())
            .flatten()
            .map(|v| v as f64)
            .ok_or_else(|| {
                format!("field {} has an invalid integer value {}", quoted(key), quoted(raw))
            });
    }
    if let Some(digits) = raw.strip_suffix('u') {
        return integer_syntax(digits, false)
            .then(|| digits.parse::<u64>().ok())
            .flatten()
            .map(|v| v as f64)
            .ok_or_else(|| {
                format!("field {} has an invalid unsigned value {}", quoted(key), quoted(raw))
            });
    }
    // The grammar's floats have no leading `+` (StatsD's do: [`parse_decimal`] takes it).
    parse_decimal(raw).filter(|_| !raw.starts_with('+')).ok_or_else(|| {
        format!(
            "field {} has an invalid value {}: expected a float, an integer (3i), an unsigned \
             integer (3u) or a boolean",
            quoted(key),
            quoted(raw)
        )
    })
}

/// Parses a decimal number such as `-1.5e3`, refusing the words Rust's parser also accepts
/// (`inf`, `NaN`, `infinity`): they are not numbers in line protocol or StatsD. A number too
/// large for an `f64` comes back infinite, for the data model to refuse by name.
pub fn parse_decimal(raw: &str) -> Option<f64> {
    let numeric =
        raw.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !numeric || !raw.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// Makes a valid Prometheus metric name: every character outside `[a-zA-Z0-9_:]` becomes `_`,
/// and a leading digit gets a `_` before it. An empty name stays empty (and invalid).
pub fn sanitize_metric_name(name: &str) -> String {
    sanitize(name, true)
}

/// Makes a label name: every character outside `[a-zA-Z0-9_]` becomes `_`, and a leading
/// digit gets a `_` before it. The result may still be invalid (empty, or starting with `__`).
pub fn sanitize_label_name(name: &str) -> String {
    sanitize(name, false)
}

fn sanitize(name: &str, allow_colon: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || (allow_colon && c == ':') { c } else { '_' }
    }));
    out
}

/// A piece of input for an error message: debug-quoted, and cut after 64 characters so that
/// one enormous token cannot make an enormous message.
pub fn quoted(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

/// Resolves the escapes of a token read by [`Cursor::escaped_token`]: a backslash before a
/// byte of `escapable` is dropped, any other backslash kept.
fn unescape(raw: &str, escapable: &[u8]) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1).is_some_and(|next| escapable.contains(next)) {
            out.push_str(&raw[start..i]);
            // The escaped character begins the next piece.
            start = i + 1;
            i += 2;
        } else {
            i += 1;
        }
    }
    out.push_str(&raw[start..]);
    out
}

/// A position in one line. Every index it slices at is that of an ASCII byte or the end,
/// so slicing never splits a character.
pub(crate) struct Cursor<'a> {
    pub(crate) s: &'a str,
    pub(crate) pos: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(crate) fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    pub(crate) fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// Reads up to the first unescaped byte of `stops` (left unread) or the end, and returns
    /// the text as written (escapes unresolved) and the byte it stopped at. A backslash
    /// before a byte of [`ESCAPABLE`] (`,`, `=`, space) escapes it; before anything else,
    /// another backslash included, it is a plain byte, and the byte after it is read as
    /// usual. Every stop byte is in [`ESCAPABLE`], so the same scan serves the measurement
    /// (where only `\,` and `\ ` are escapes: a `\=` there is skipped whole, but `=` stops
    /// nothing there either), tags and field keys.
    pub(crate) fn escaped_token(&mut self, stops: &[u8]) -> (&'a str, Option<u8>) {
        let bytes = self.s.as_bytes();
        let start = self.pos;
        while let Some(&b) = bytes.get(self.pos) {
            if b == b'\\' {
                let escapes = bytes.get(self.pos + 1).is_some_and(|next| ESCAPABLE.contains(next));
                self.pos += if escapes { 2 } else { 1 };
                continue;
            }
            if stops.contains(&b) {
                return (&self.s[start..self.pos], Some(b));
            }
            self.pos += 1;
        }
        (&self.s[start..], None)
    }

    /// Reads up to the first byte of `stops` (left unread) or the end, without escapes.
    pub(crate) fn raw_token(&mut self, stops: &[u8]) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|b| !stops.contains(&b)) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// Skips a string value that starts at the cursor's `"`, through its closing quote;
    /// `false` if there is none. A backslash escapes the byte after it (`\"` and `\\` are the
    /// escapes; before anything else the backslash is literal, which skips the same way).
    fn skip_string(&mut self) -> bool {
        let bytes = self.s.as_bytes();
        self.pos += 1;
        while let Some(&b) = bytes.get(self.pos) {
            match b {
                b'\\' => self.pos += 2,
                b'"' => {
                    self.pos += 1;
                    return true;
                }
                _ => self.pos += 1,
            }
        }
        self.pos = self.s.len();
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn parse(body: &str) -> Result<Vec<Update>, LineError> {
        parse_body(body, Precision::Ns, NOW)
    }

    fn err(body: &str) -> String {
        match parse(body) {
            Ok(updates) => panic!("{body:?} parsed: {updates:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// One line, one field: its series (in Prometheus notation), timestamp and value.
    fn one(body: &str) -> (String, i64, f64) {
        let updates = parse(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
        assert_eq!(updates.len(), 1, "{body:?}: {updates:?}");
        let u = &updates[0];
        let Op::GaugeSet(v) = u.op else { panic!("{:?}", u.op) };
        (u.key.to_string(), u.timestamp.0, v)
    }

    fn value(body: &str) -> f64 {
        one(body).2
    }

    fn series(body: &str) -> String {
        one(body).0
    }

    #[test]
    fn each_field_is_a_gauge_named_after_measurement_and_field() {
        let body = "cpu,host=a,region=eu usage=1.5,idle=3i 1700000000123456789";
        let updates = parse(body).unwrap();
        let got: Vec<(String, i64, Op)> =
            updates.iter().map(|u| (u.key.to_string(), u.timestamp.0, u.op.clone())).collect();
        assert_eq!(
            got,
            [
                (
                    r#"cpu_usage{host="a",region="eu"}"#.to_string(),
                    1_700_000_000_123,
                    Op::GaugeSet(1.5)
                ),
                (
                    r#"cpu_idle{host="a",region="eu"}"#.to_string(),
                    1_700_000_000_123,
                    Op::GaugeSet(3.0)
                ),
            ]
        );
    }

    #[test]
    fn tags_are_sorted_into_canonical_order() {
        assert_eq!(series("m,z=1,a=2 v=1"), r#"m_v{a="2",z="1"}"#);
        assert_eq!(series("m v=1"), "m_v");
    }

    #[test]
    fn numeric_field_values() {
        for (raw, want) in [
            ("1", 1.0),
            ("-1.5", -1.5),
            ("1e3", 1000.0),
            ("1E-3", 0.001),
            ("1.", 1.0),
            (".5", 0.5),
            ("-0", 0.0),
            ("-.5", -0.5),
            ("1.e2", 100.0),
            ("007", 7.0),
            ("1e-999", 0.0),
            ("3i", 3.0),
            ("-3i", -3.0),
            ("9223372036854775807i", 9_223_372_036_854_775_807.0),
            ("3u", 3.0),
            ("0u", 0.0),
            ("18446744073709551615u", 18_446_744_073_709_551_615.0),
        ] {
            assert_eq!(value(&format!("m v={raw}")), want, "{raw}");
        }
        // The grammar has no leading `+` (the reference refuses it: "unrecognized type").
        assert!(err("m v=+2").contains(r#"invalid value "+2""#));
        assert!(err("m v=+2i").contains(r#"invalid integer value "+2i""#));
        assert!(err("m v=+2u").contains(r#"invalid unsigned value "+2u""#));
        assert!(err("m v=-i").contains(r#"invalid integer value "-i""#));
        assert!(err("m v=u").contains(r#"invalid unsigned value "u""#));
    }

    #[test]
    fn booleans_are_one_and_zero() {
        for raw in ["t", "T", "true", "True", "TRUE"] {
            assert_eq!(value(&format!("m v={raw}")), 1.0, "{raw}");
        }
        for raw in ["f", "F", "false", "False", "FALSE"] {
            assert_eq!(value(&format!("m v={raw}")), 0.0, "{raw}");
        }
        assert!(err("m v=tRUE").contains("invalid value \"tRUE\""));
    }

    #[test]
    fn precisions() {
        assert_eq!(Precision::parse("ns"), Some(Precision::Ns));
        assert_eq!(Precision::parse("n"), Some(Precision::Ns));
        assert_eq!(Precision::parse("us"), Some(Precision::Us));
        assert_eq!(Precision::parse("u"), Some(Precision::Us));
        assert_eq!(Precision::parse("ms"), Some(Precision::Ms));
        assert_eq!(Precision::parse("s"), Some(Precision::S));
        for bad in ["", "m", "h", "NS", "sec", "µs"] {
            assert_eq!(Precision::parse(bad), None, "{bad}");
        }
        let ts = |body: &str, p| parse_body(body, p, NOW).unwrap()[0].timestamp.0;
        assert_eq!(ts("m v=1 1500000000999999999", Precision::Ns), 1_500_000_000_999);
        assert_eq!(ts("m v=1 1500000000999999", Precision::Us), 1_500_000_000_999);
        assert_eq!(ts("m v=1 1500000000999", Precision::Ms), 1_500_000_000_999);
        assert_eq!(ts("m v=1 1500000000", Precision::S), 1_500_000_000_000);
        // Before the epoch, conversion rounds down, not toward zero.
        assert_eq!(ts("m v=1 -1", Precision::Ns), -1);
        assert_eq!(ts("m v=1 -1000001", Precision::Ns), -2);
        assert_eq!(ts("m v=1 -1", Precision::S), -1_000);
        assert_eq!(ts("m v=1 9223372036854775807", Precision::Ns), i64::MAX / 1_000_000);
    }

    #[test]
    fn missing_timestamp_means_now() {
        assert_eq!(one("m v=1"), ("m_v".to_string(), NOW, 1.0));
        assert_eq!(one("m v=1   ").1, NOW);
        assert_eq!(one("m v=1 0").1, 0);
    }

    /// The labels of a one-update line, as (name, value) pairs.
    fn labels(body: &str) -> Vec<(String, String)> {
        let updates = parse(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
        assert_eq!(updates.len(), 1, "{body:?}: {updates:?}");
        updates[0].key.labels().iter().map(|l| (l.name().into(), l.value().into())).collect()
    }

    fn label(body: &str) -> String {
        let mut all = labels(body);
        assert_eq!(all.len(), 1, "{body:?}: {all:?}");
        all.remove(0).1
    }

    #[test]
    fn escapes_in_names_and_tag_values() {
        // Measurement: `\,` and `\ `.
        assert_eq!(series(r"my\ meas\,ure v=1"), "my_meas_ure_v");
        // Tag keys and values: `\,`, `\=` and `\ `; `\\` is two backslashes.
        assert_eq!(
            labels(r"m,k\ e\=y=v\,a\ l\=u\\e v=1"),
            [("k_e_y".to_string(), r"v,a l=u\\e".to_string())]
        );
        // A backslash before any other character is literal.
        assert_eq!(label(r"m,path=C:\dir v=1"), r"C:\dir");
        // An escaped space does not end the tags: this line has no fields.
        assert_eq!(err(r"m,t=a\ v"), r#"line 1: measurement "m" has no fields"#);
    }

    #[test]
    fn a_backslash_escapes_only_comma_equals_and_space() {
        // The reference decoder's rule: `\\` is not an escape, so the second backslash
        // escapes what follows it.
        assert_eq!(label(r"cpu,host=two\\\ words value=42"), r"two\\ words");
        assert_eq!(label(r"cpu,regions=\\ east value=1.0"), r"\ east");
        assert_eq!(label(r"cpu,regions=eas\\ t value=1.0"), r"eas\ t");
        assert_eq!(label(r"cpu,regions=\\,\,\=east value=1.0"), r"\,,=east");
        assert_eq!(label(r"m,t=a\\b v=1"), r"a\\b");
        assert_eq!(label(r"m,t=\\\\x v=1"), r"\\\\x");
        // However many backslashes come before a space, the last escapes it.
        assert_eq!(label(r"m,t=a\\\\ b v=1"), r"a\\\ b");
        // In the measurement only `\,` and `\ ` are escapes: `\=` is two characters.
        assert_eq!(series(r"a\=b v=1"), "a__b_v");
        assert_eq!(series(r"a=b v=1"), "a_b_v");
        // Before a comma too, the last of the backslashes escapes it: no tags here.
        assert_eq!(series(r"a\\,t=x v=1"), "a__t_x_v");
        // A backslash before a character it does not escape is plain, even last in a line.
        assert_eq!(err(r"m,t=a\"), r#"line 1: measurement "m" has no fields"#);
        assert_eq!(series(r"m a\b=1"), "m_a_b");
    }

    #[test]
    fn escapes_in_field_keys() {
        assert_eq!(series(r"m f\ o\,o\=x=1"), "m_f_o_o_x");
        // `\\=` is a backslash then an escaped `=`: the key goes on, and has no `=`.
        assert_eq!(err(r"m f\\=1"), r#"line 1: field "f\\=1" has no '=' and value"#);
        assert_eq!(series(r"m f\\\==1"), "m_f___");
        assert_eq!(series(r"u \e\\\ =4"), "u__e___");
    }

    #[test]
    fn escaped_tag_value_may_end_the_line_section() {
        // The escaped space belongs to the value; the next space starts the fields.
        assert_eq!(label(r"m,t=a\  v=1"), "a ");
        assert_eq!(label(r"m,t=a\\  v=1"), r"a\ ");
        // `a\\ v=1`: the backslash is plain, the space escaped, and the `=` unescaped.
        assert_eq!(
            err(r"m,t=a\\ v=1"),
            r#"line 1: tag "t" has an unescaped '=' in its value (write it as \=)"#
        );
    }

    #[test]
    fn string_fields_are_refused_by_name_after_a_full_parse() {
        assert_eq!(
            err(r#"m s="hi""#),
            r#"line 1: field "s" is a string; only float, integer, unsigned and boolean fields are accepted"#
        );
        // Escaped quotes, commas, spaces and `=` inside the string do not end it.
        assert_eq!(
            err(r#"m v=1,s="a \"b\", c=d \\",x=2 123"#),
            r#"line 1: field "s" is a string; only float, integer, unsigned and boolean fields are accepted"#
        );
        // A syntax error after the string is reported first.
        assert_eq!(
            err(r#"m s="a",x=oops"#),
            r#"line 1: field "x" has an invalid value "oops": expected a float, an integer (3i), an unsigned integer (3u) or a boolean"#
        );
        assert_eq!(err(r#"m s="abc"#), r#"line 1: field "s" has an unterminated string value"#);
        assert_eq!(err(r#"m s="abc\""#), r#"line 1: field "s" has an unterminated string value"#);
        assert_eq!(err(r#"m s="abc\"#), r#"line 1: field "s" has an unterminated string value"#);
        assert_eq!(
            err(r#"m s="abc"x"#),
            r#"line 1: field "s": unexpected 'x' after the string value"#
        );
        assert_eq!(err("m s=\"é"), r#"line 1: field "s" has an unterminated string value"#);
    }

    #[test]
    fn comments_blank_lines_and_crlf() {
        let body = "# a comment\r\n\r\n   \n  # indented comment\ncpu v=1\r\n  mem v=2 5000000\r\n";
        let updates = parse(body).unwrap();
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].key.to_string(), "cpu_v");
        assert_eq!(updates[1].key.to_string(), "mem_v");
        assert_eq!(updates[1].timestamp.0, 5);
        assert_eq!(parse("").unwrap(), []);
        assert_eq!(parse("\n\r\n# only comments").unwrap(), []);
        // Blank and comment lines count in line numbers.
        assert_eq!(err("# c\n\ncpu v=1\r\ncpu v=x\r\n"), {
            let reason = r#"field "v" has an invalid value "x": expected a float, an integer (3i), an unsigned integer (3u) or a boolean"#;
            format!("line 4: {reason}")
        });
    }

    #[test]
    fn non_printable_ascii_is_refused_outside_string_values() {
        let cases = [
            ("\tm v=1", r#"measurement "\tm" holds the non-printable character '\t'"#),
            ("x\u{1}y v=1", r#"measurement "x\u{1}y" holds the non-printable character '\u{1}'"#),
            ("m\u{7f} v=1", r#"measurement "m\u{7f}" holds the non-printable character '\u{7f}'"#),
            ("m,k\u{b}=x v=1", r#"tag key "k\u{b}" holds the non-printable character '\u{b}'"#),
            (
                "m,k=x\u{1}y v=1",
                r#"tag "k": the value "x\u{1}y" holds the non-printable character '\u{1}'"#,
            ),
            ("m x\u{0}y=1", r#"field key "x\0y" holds the non-printable character '\0'"#),
            ("m \tv=1", r#"field key "\tv" holds the non-printable character '\t'"#),
            ("# a\tcomment", r"a comment holds the non-printable character '\t'"),
            ("  #\u{15}", r"a comment holds the non-printable character '\u{15}'"),
            // A `\r` is a line ending only right before `\n` or at the end of the body.
            ("\rm v=1", r#"measurement "\rm" holds the non-printable character '\r'"#),
            ("m,t=a\r v=1", r#"tag "t": the value "a\r" holds the non-printable character '\r'"#),
        ];
        for (line, reason) in cases {
            assert_eq!(err(line), format!("line 1: {reason}"), "{line:?}");
        }
        for line in ["m v=1\t", "m v=1 5\t", "m v=1\r 5", "m v=1 \r5", "m v=1 5\r\r", "m v=1\u{b}"]
        {
            let got = err(line);
            assert!(got.contains("invalid"), "{line:?}: {got}");
        }
        // A backslash does not make a non-printable character printable.
        assert!(err("m\\\u{b} v=1").contains("non-printable"));
        // Inside a string value anything goes (the string is refused as a string).
        assert!(err("m s=\"a\tb\u{1}\"").contains("is a string"));
        // A line of spaces is blank; a line holding a tab is not.
        assert_eq!(parse("   \n m v=1").unwrap().len(), 1);
        assert!(err("m v=1\n\t\n").starts_with("line 2: "));
    }

    #[test]
    fn carriage_returns_end_lines_only_before_a_newline_or_at_the_end() {
        assert_eq!(parse("m v=1\r\nm v=2 5000000\r").unwrap().len(), 2);
        assert_eq!(parse("m v=1 \r\n\r\n").unwrap().len(), 1);
        assert!(err("m v=1\r\r\n").contains("invalid value"));
        assert!(err("m v=1 5\r\r\n").contains("invalid timestamp"));
    }

    #[test]
    fn timestamps_follow_the_grammar() {
        assert_eq!(one("m v=1 -5000000").1, -5);
        assert_eq!(one("m v=1 -0").1, 0);
        assert_eq!(one("m v=1 007000000").1, 7);
        for bad in ["+5", "-", "--5", "5-", "1e9", "0x10", " 5 5"] {
            let got = err(&format!("m v=1 {bad}"));
            assert!(
                got.contains("timestamp") || got.contains("after the timestamp"),
                "{bad}: {got}"
            );
        }
        // Out of range: beyond an i64 of nanoseconds, as in InfluxDB.
        let at = |body: &str, p| parse_body(body, p, NOW).map(|u| u[0].timestamp.0);
        assert_eq!(at("m v=1 9223372036", Precision::S), Ok(9_223_372_036_000));
        assert_eq!(
            at("m v=1 9223372037", Precision::S).unwrap_err().reason,
            r#"timestamp "9223372037" is out of range in seconds"#
        );
        assert_eq!(at("m v=1 -9223372036854", Precision::Ms), Ok(-9_223_372_036_854));
        assert!(at("m v=1 -9223372036855", Precision::Ms).is_err());
        assert!(at("m v=1 9223372036854776", Precision::Us).is_err());
        assert_eq!(at("m v=1 -9223372036854775808", Precision::Ns), Ok(-9_223_372_036_855));
        // A line without a timestamp is stamped now, cut to the precision.
        let now = 1_700_000_000_789;
        let stamp = |p| parse_body("m v=1", p, now).unwrap()[0].timestamp.0;
        assert_eq!(stamp(Precision::S), 1_700_000_000_000);
        assert_eq!(stamp(Precision::Ms), now);
        assert_eq!(stamp(Precision::Ns), now);
        assert_eq!(parse_body("m v=1", Precision::S, -1).unwrap()[0].timestamp.0, -1_000);
    }

    #[test]
    fn a_tag_value_holds_no_unescaped_equals_sign() {
        assert_eq!(
            err("m,t=a=b v=1"),
            r#"line 1: tag "t" has an unescaped '=' in its value (write it as \=)"#
        );
        assert_eq!(label(r"m,t=a\=b v=1"), "a=b");
        // In the measurement `=` needs no escape.
        assert_eq!(series("m=x v=1"), "m_x_v");
    }

    #[test]
    fn hexadecimal_floats_are_refused() {
        // A deliberate deviation: the reference takes them through Go's ParseFloat.
        for raw in ["0x1p4", "-0x1p-2", "0x10"] {
            assert!(err(&format!("m v={raw}")).contains("invalid value"), "{raw}");
        }
    }

    #[test]
    fn spaces_between_sections() {
        assert_eq!(one("m,t=a   v=1   7000000"), (r#"m_v{t="a"}"#.to_string(), 7, 1.0));
    }

    #[test]
    fn sanitizing_names() {
        assert_eq!(series("disk.io,dev-name=sda used%=3"), r#"disk_io_used_{dev_name="sda"}"#);
        assert_eq!(series("1m,2k=x v=1"), r#"_1m_v{_2k="x"}"#);
        assert_eq!(series("a:b,é=ü v=1"), r#"a:b_v{_="ü"}"#);
        assert_eq!(sanitize_metric_name("api.requests-total"), "api_requests_total");
        assert_eq!(sanitize_label_name("a:b"), "a_b");
        assert_eq!(sanitize_label_name("9"), "_9");
        assert_eq!(sanitize_metric_name(""), "");
    }

    #[test]
    fn invalid_names_after_sanitizing_are_errors() {
        assert_eq!(
            err("m,__name__=x v=1"),
            r#"line 1: field "v": label name "__name__" is invalid: names starting with '__' are reserved"#
        );
        assert_eq!(
            err("m,_.x=1 v=1"),
            r#"line 1: field "v": label name "__x" is invalid: names starting with '__' are reserved"#
        );
        assert_eq!(
            err("m,a.b=1,a_b=2 v=1"),
            r#"line 1: field "v": label "a_b" appears more than once"#
        );
        let long = "x".repeat(300);
        assert!(err(&format!("m {long}=1")).starts_with("line 1: field \"xxxx"));
    }

    #[test]
    fn empty_tag_values_are_refused() {
        // As the reference decoder refuses them ("expected tag value").
        assert_eq!(err("m,a=,b=x v=1"), r#"line 1: tag "a" has an empty value"#);
        assert_eq!(err("m,b=x,c= v=1"), r#"line 1: tag "c" has an empty value"#);
        assert_eq!(err("m,c=,d=1"), r#"line 1: tag "c" has an empty value"#);
    }

    #[test]
    fn repeated_fields_last_wins() {
        let updates = parse("m v=1,w=5,v=2").unwrap();
        let got: Vec<(String, Op)> =
            updates.iter().map(|u| (u.key.to_string(), u.op.clone())).collect();
        assert_eq!(
            got,
            [("m_v".to_string(), Op::GaugeSet(2.0)), ("m_w".to_string(), Op::GaugeSet(5.0))]
        );
        // Keys that sanitize alike name the same series.
        assert_eq!(value("m a.b=1,a-b=2"), 2.0);
    }

    #[test]
    fn syntax_errors_name_the_line_and_reason() {
        let cases = [
            ("m", r#"measurement "m" has no fields"#),
            ("m ", r#"measurement "m" has no fields"#),
            ("m,t=a", r#"measurement "m" has no fields"#),
            ("m,t=a   ", r#"measurement "m" has no fields"#),
            (",t=a v=1", "the measurement name is empty"),
            ("m,t v=1", r#"tag "t" has no '=' and value"#),
            ("m,t", r#"tag "t" has no '=' and value"#),
            ("m,t,u=1 v=1", r#"tag "t" has no '=' and value"#),
            ("m,=a v=1", "a tag key is empty"),
            ("m, v=1", "a tag key is empty"),
            ("m =1", "a field key is empty"),
            ("m v=1,", "a field key is empty"),
            ("m v=1,,w=2", "a field key is empty"),
            ("m v", r#"field "v" has no '=' and value"#),
            ("m v 1", r#"field "v" has no '=' and value"#),
            ("m v,w=1", r#"field "v" has no '=' and value"#),
            ("m v=", r#"field "v" has no value"#),
            ("m v= 1", r#"field "v" has no value"#),
            ("m v=,w=1", r#"field "v" has no value"#),
            ("m v=1.5i", r#"field "v" has an invalid integer value "1.5i""#),
            ("m v=i", r#"field "v" has an invalid integer value "i""#),
            (
                "m v=9223372036854775808i",
                r#"field "v" has an invalid integer value "9223372036854775808i""#,
            ),
            ("m v=-1u", r#"field "v" has an invalid unsigned value "-1u""#),
            (
                "m v=18446744073709551616u",
                r#"field "v" has an invalid unsigned value "18446744073709551616u""#,
            ),
            ("m v=1 12a", r#"invalid timestamp "12a": expected an integer number of nanoseconds"#),
            ("m v=1 1.5", r#"invalid timestamp "1.5": expected an integer number of nanoseconds"#),
            (
                "m v=1 9223372036854775808",
                r#"invalid timestamp "9223372036854775808": expected an integer number of nanoseconds"#,
            ),
            ("m v=1 123 456", r#"unexpected text "456" after the timestamp"#),
            ("m v=1 123 x y", r#"unexpected text "x y" after the timestamp"#),
            (
                "m v=1e999",
                r#"field "v": gauge_set value inf is invalid: values must be finite (no NaN or infinity)"#,
            ),
            (
                "m v=-1e999",
                r#"field "v": gauge_set value -inf is invalid: values must be finite (no NaN or infinity)"#,
            ),
        ];
        for (line, reason) in cases {
            assert_eq!(err(line), format!("line 1: {reason}"), "{line:?}");
        }
        for bad in [
            "abc", "1.2.3", "NaN", "nan", "inf", "+inf", "infinity", "1x", "1e", ".", "-", "0x10",
            "1_000", "\"x",
        ] {
            let got = err(&format!("m v={bad}"));
            if bad.starts_with('"') {
                assert!(got.contains("unterminated"), "{bad}: {got}");
            } else {
                assert_eq!(
                    got,
                    format!(
                        "line 1: field \"v\" has an invalid value {bad:?}: expected a float, an integer (3i), an unsigned integer (3u) or a boolean"
                    ),
                    "{bad}"
                );
            }
        }
        assert_eq!(
            parse_body("m v=1 9223372036854775807", Precision::S, NOW).unwrap_err().to_string(),
            r#"line 1: timestamp "9223372036854775807" is out of range in seconds"#
        );
        assert_eq!(
            parse_body("m v=1 x", Precision::Ms, NOW).unwrap_err().reason,
            r#"invalid timestamp "x": expected an integer number of milliseconds"#
        );
    }

    #[test]
    fn a_body_is_all_or_nothing() {
        let e = parse("a v=1\nb v=2\nc v=oops\nd v=4").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("\"oops\""), "{e}");
        assert_eq!(e, LineError { line: 3, reason: e.reason.clone() });
    }

    #[test]
    fn long_tokens_are_cut_in_messages() {
        let e = err(&format!("m v={}", "z".repeat(10_000)));
        assert!(e.len() < 300, "{e}");
        assert!(e.contains("zzz\"…"), "{e}");
    }

    /// A small deterministic generator (xorshift64*), so that failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Characters that matter to the syntax (non-printable ones included), plus some that
        // do not.
        let alphabet: Vec<char> =
            ",= \\\"\n\r#tfTiu0123456789.eE+-ab_é\t\u{b}\u{2}\u{0}\u{7f}x".chars().collect();
        for round in 0..30_000 {
            let len = rng.below(40);
            let body: String = if round % 2 == 0 {
                (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect()
            } else {
                let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            };
            for precision in [Precision::Ns, Precision::S] {
                match parse_body(&body, precision, NOW) {
                    Ok(updates) => {
                        for u in updates {
                            assert!(matches!(u.op, Op::GaugeSet(v) if v.is_finite()), "{body:?}");
                        }
                    }
                    Err(e) => {
                        assert!(e.line >= 1 && e.line <= body.split('\n').count(), "{body:?}: {e}");
                        assert!(!e.reason.is_empty());
                    }
                }
            }
        }
    }

    /// Escapes a name as the reference encoder does: a backslash before each character of
    /// `special` (`,` and space in the measurement; `,`, `=` and space elsewhere), and none
    /// before a backslash.
    fn escape(s: &str, special: &[char]) -> String {
        let mut out = String::new();
        for c in s.chars() {
            if special.contains(&c) {
                out.push('\\');
            }
            out.push(c);
        }
        out
    }

    #[test]
    fn random_escaped_names_round_trip() {
        let mut rng = Rng(42);
        let alphabet: Vec<char> = "ab_Z9:,= \\\"#é.".chars().collect();
        let word = |rng: &mut Rng| -> String {
            let len = 1 + rng.below(8);
            (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect()
        };
        for _ in 0..5_000 {
            let (m, tk, tv, f) = (word(&mut rng), word(&mut rng), word(&mut rng), word(&mut rng));
            // The encoder refuses a name that ends in a backslash: it cannot round-trip.
            if [&m, &tk, &tv, &f].iter().any(|w| w.ends_with('\\')) {
                continue;
            }
            let v = rng.next() as i64 as f64 / 7.0;
            let line = format!(
                "{},{}={} {}={v:e} 3000000",
                escape(&m, &[',', ' ']),
                escape(&tk, &[',', '=', ' ']),
                escape(&tv, &[',', '=', ' ']),
                escape(&f, &[',', '=', ' '])
            );
            let metric = sanitize_metric_name(&format!("{m}_{f}"));
            let label = sanitize_label_name(&tk);
            let want = SeriesKey::new(&metric, [(label.as_str(), tv.as_str())]);
            if m.starts_with('#') {
                // A line starting with `#` is a comment, whatever follows.
                assert_eq!(parse(&line), Ok(vec![]), "{line:?}");
                continue;
            }
            match (parse(&line), want) {
                (Ok(updates), Ok(key)) => {
                    assert_eq!(
                        updates,
                        [Update::new(key, Timestamp(3), Op::GaugeSet(v)).unwrap()],
                        "{line:?}"
                    );
                }
                (Err(e), Err(want)) => {
                    assert_eq!(e.reason, format!("field {}: {want}", quoted(&f)), "{line:?}")
                }
                (got, want) => panic!("{line:?}: got {got:?}, want {want:?}"),
            }
        }
    }
}

//! Prometheus instant-vector selectors (`http_requests{code=~"5..",path!="/health"}`), parsed
//! as PromQL parses them, and the label matchers they are made of.

use std::fmt;
use std::str::FromStr;

use regex::Regex;

/// The label that holds the metric name, as in Prometheus.
const METRIC_NAME_LABEL: &str = "__name__";

/// How a [`Matcher`] compares a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    /// `=`: the value equals the string.
    Equal,
    /// `!=`: the value differs from the string.
    NotEqual,
    /// `=~`: the whole value matches the regular expression.
    Regex,
    /// `!~`: the whole value does not match the regular expression.
    NotRegex,
}

impl MatchOp {
    /// The operator as written in a selector.
    #[must_use]
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Equal => "=",
            MatchOp::NotEqual => "!=",
            MatchOp::Regex => "=~",
            MatchOp::NotRegex => "!~",
        }
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A selector that cannot be parsed or built: the input, the byte offset of the problem in
/// it and what the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("selector {input:?}: {reason} at byte {offset}")]
pub struct SelectorError {
    /// The text refused: the selector as given to [`Selector::parse`], or the matcher (or
    /// selector) in selector notation when it was built with [`Matcher::new`] or
    /// [`Selector::new`].
    pub input: String,
    /// The byte offset in `input` where the problem is.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

/// One label matcher: a label name, an operator and a string (a regular expression for
/// [`MatchOp::Regex`] and [`MatchOp::NotRegex`]).
///
/// An absent label matches as the empty string, as in Prometheus: `a=""` selects series
/// without `a`, `a!=""` series with it. Regular expressions use the syntax of the `regex`
/// crate (close to Go's RE2, which Prometheus uses), are anchored at both ends (`a=~"b"` does
/// not match `abc`) and let `.` match a newline, as Prometheus does. Unlike RE2, `\d`, `\w`
/// and `\s` are Unicode-aware.
#[derive(Debug, Clone)]
pub struct Matcher {
    label: String,
    op: MatchOp,
    value: String,
    /// The anchored regular expression, for the two regex operators.
    regex: Option<Regex>,
}

impl Matcher {
    /// Builds a matcher; compiles the regular expression of a regex operator.
    ///
    /// # Errors
    /// A [`SelectorError`] (its `input` the matcher in selector notation) when `label` is not
    /// a label name (`[a-zA-Z_][a-zA-Z0-9_]*`) or `value` is not a valid regular expression.
    pub fn new(label: &str, op: MatchOp, value: &str) -> Result<Matcher, SelectorError> {
        let error = |offset: usize, reason: String| SelectorError {
            input: format!("{label}{op}{}", Quoted(value)),
            offset,
            reason,
        };
        if let Some(offset) = invalid_label_name_at(label) {
            return Err(error(offset, format!("invalid label name {label:?}")));
        }
        let regex = match op {
            MatchOp::Equal | MatchOp::NotEqual => None,
            MatchOp::Regex | MatchOp::NotRegex => Some(
                compile_anchored(value)
                    .map_err(|reason| error(label.len() + op.as_str().len(), reason))?,
            ),
        };
        Ok(Matcher { label: label.to_string(), op, value: value.to_string(), regex })
    }

    /// The label name.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The operator.
    #[must_use]
    pub fn op(&self) -> MatchOp {
        self.op
    }

    /// The string compared with, or the regular expression as written (not anchored).
    #[must_use]
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether a label value matches; `None`, an absent label, matches as `""`.
    #[must_use]
    pub fn matches(&self, value: Option<&str>) -> bool {
        let value = value.unwrap_or("");
        match (self.op, &self.regex) {
            (MatchOp::Equal, _) => value == self.value,
            (MatchOp::NotEqual, _) => value != self.value,
            (MatchOp::Regex, Some(re)) => re.is_match(value),
            (MatchOp::NotRegex, Some(re)) => !re.is_match(value),
            // `new` compiles a regex for both regex operators, and nothing else builds a
            // matcher; refusing to match is the safe answer should that ever change.
            (MatchOp::Regex | MatchOp::NotRegex, None) => false,
        }
    }

    /// Whether the matcher matches an absent label (that is, the empty string).
    #[must_use]
    pub fn matches_empty(&self) -> bool {
        self.matches(None)
    }

    fn is_metric_name_equal(&self) -> bool {
        self.label == METRIC_NAME_LABEL && self.op == MatchOp::Equal
    }
}

impl PartialEq for Matcher {
    /// Matchers are equal when label, operator and value are (the compiled regex follows).
    fn eq(&self, other: &Matcher) -> bool {
        self.label == other.label && self.op == other.op && self.value == other.value
    }
}

impl Eq for Matcher {}

impl fmt::Display for Matcher {
    /// Selector notation, for example `code=~"5.."`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.label, self.op, Quoted(&self.value))
    }
}

/// A Prometheus instant-vector selector: label matchers that a series must all satisfy. The
/// metric name is a matcher on the label `__name__`.
///
/// ```
/// use ingestor_memstore::{MatchOp, Selector};
///
/// let s = Selector::parse(r#"http_requests{code=~"5..", path!="/health"}"#)?;
/// assert_eq!(s.metric_name(), Some("http_requests"));
/// assert_eq!(s.matchers()[1].op(), MatchOp::Regex);
/// assert_eq!(s.to_string(), r#"http_requests{code=~"5..",path!="/health"}"#);
/// // A selector that would select every series is refused, as in Prometheus.
/// assert!(Selector::parse(r#"{path=~".*"}"#).is_err());
/// # Ok::<(), ingestor_memstore::SelectorError>(())
/// ```
///
/// Grammar: an optional metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`), then optionally
/// `{ matcher, ... }` (a trailing comma is allowed), where a matcher is a label name, one of
/// `=`, `!=`, `=~`, `!~`, and a string in double quotes, single quotes or backticks. Quoted
/// strings take Go's escapes (`\n`, `\t`, `\\`, the opening quote, `\xHH`, octal `\NNN`,
/// `\uHHHH`, `\UHHHHHHHH`, ...); backtick strings are raw. Spaces, tabs and newlines may
/// separate tokens. At least one matcher must not match the empty string, and a metric name
/// written before the braces may not be given again as `__name__` inside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Equality matchers on `__name__` first, then the rest in the order given.
    matchers: Vec<Matcher>,
}

impl Selector {
    /// Parses a selector.
    ///
    /// # Errors
    /// A [`SelectorError`] naming the byte offset and the reason: an unexpected character, an
    /// unterminated string, a missing operator, a bad escape or regular expression, an empty
    /// selector, one that matches the empty string only, or a metric name given twice.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        Parser { input: text, pos: 0 }.selector()
    }

    /// Builds a selector from matchers, under the rule [`Selector::parse`] applies: at least
    /// one matcher must not match the empty string. Equality matchers on `__name__` move to
    /// the front (otherwise the order is kept), so that the metric name is written first.
    ///
    /// # Errors
    /// A [`SelectorError`] (its `input` the selector in selector notation) when every
    /// matcher matches the empty string, or there is none.
    pub fn new(matchers: Vec<Matcher>) -> Result<Selector, SelectorError> {
        let (mut ordered, rest): (Vec<Matcher>, Vec<Matcher>) =
            matchers.into_iter().partition(Matcher::is_metric_name_equal);
        ordered.extend(rest);
        let selector = Selector { matchers: ordered };
        if selector.matchers.iter().all(Matcher::matches_empty) {
            return Err(SelectorError {
                input: selector.to_string(),
                offset: 0,
                reason: "vector selector must contain at least one non-empty matcher".into(),
            });
        }
        Ok(selector)
    }

    /// The matchers, equality matchers on `__name__` first.
    #[must_use]
    pub fn matchers(&self) -> &[Matcher] {
        &self.matchers
    }

    /// The metric name: the value of the (first) equality matcher on `__name__`, if any.
    #[must_use]
    pub fn metric_name(&self) -> Option<&str> {
        self.matchers.iter().find(|m| m.is_metric_name_equal()).map(Matcher::value)
    }

    /// The index of the matcher that `Display` writes as a bare metric name before the
    /// braces: the only matcher on `__name__`, when it is an equality whose value is a metric
    /// name PromQL would not read as something else.
    fn bare_name(&self) -> Option<usize> {
        let mut on_name =
            self.matchers.iter().enumerate().filter(|(_, m)| m.label == METRIC_NAME_LABEL);
        let (index, m) = on_name.next()?;
        let writable = on_name.next().is_none()
            && m.op == MatchOp::Equal
            && is_metric_name(&m.value)
            && !is_promql_keyword(&m.value);
        writable.then_some(index)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Selector, SelectorError> {
        Selector::parse(text)
    }
}

impl fmt::Display for Selector {
    /// Canonical text that [`Selector::parse`] reads back to an equal selector:
    /// `name{label="value",...}` (the braces left out when only the name is left), values in
    /// double quotes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bare = self.bare_name();
        if let Some(i) = bare {
            f.write_str(&self.matchers[i].value)?;
        }
        let mut rest =
            self.matchers.iter().enumerate().filter(|(i, _)| Some(*i) != bare).peekable();
        if bare.is_some() && rest.peek().is_none() {
            return Ok(());
        }
        f.write_str("{")?;
        for (n, (_, m)) in rest.enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("}")
    }
}

/// A string in double quotes, escaped so that the selector parser reads it back unchanged.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '\\' => f.write_str("\\\\")?,
                '"' => f.write_str("\\\"")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_ascii_control() => write!(f, "\\x{:02x}", u32::from(c))?,
                c if c.is_control() => write!(f, "\\u{:04x}", u32::from(c))?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("\"")
    }
}

/// Compiles `pattern` anchored at both ends, `.` matching a newline, as Prometheus does
/// (`^(?s:pattern)$`). The pattern is first compiled alone, so that one such as `a)|(b` cannot
/// escape the anchoring group.
fn compile_anchored(pattern: &str) -> Result<Regex, String> {
    let describe = |e: regex::Error| -> String {
        let text = e.to_string();
        // Syntax errors span several lines (the pattern, a caret, the message); keep the
        // message, since the offset already says where the pattern starts.
        let message = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .map_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "), str::to_string);
        format!("invalid regular expression: {message}")
    };
    Regex::new(pattern).map_err(describe)?;
    Regex::new(&format!("^(?s:{pattern})$")).map_err(describe)
}

/// The byte offset of the first character that makes `name` an invalid label name (0 for an
/// empty one), or `None` when it is valid.
fn invalid_label_name_at(name: &str) -> Option<usize> {
    match name.bytes().next() {
        None => Some(0),
        Some(b) if !is_label_start(b) => Some(0),
        Some(_) => name.bytes().position(|b| !is_label_char(b)),
    }
}

fn is_label_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_metric_start(b: u8) -> bool {
    is_label_start(b) || b == b':'
}

fn is_metric_char(b: u8) -> bool {
    is_label_char(b) || b == b':'
}

fn is_metric_name(s: &str) -> bool {
    s.bytes().next().is_some_and(is_metric_start) && s.bytes().all(is_metric_char)
}

/// Words PromQL reads as something other than a metric name (operators, aggregations,
/// modifiers, number literals), so `Display` writes such a name as `{__name__="..."}` and the
/// text stays valid PromQL.
fn is_promql_keyword(s: &str) -> bool {
    const KEYWORDS: &str = "and or unless atan2 by without on ignoring group_left group_right \
        bool offset start end sum avg count min max group stddev stdvar topk bottomk \
        count_values quantile limitk limit_ratio inf nan";
    KEYWORDS.split_ascii_whitespace().any(|k| k.eq_ignore_ascii_case(s))
}

/// A hand-written scanner and parser over the selector text; positions are byte offsets.
struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn error(&self, offset: usize, reason: impl Into<String>) -> SelectorError {
        SelectorError { input: self.input.to_string(), offset, reason: reason.into() }
    }

    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    /// Skips whitespace as PromQL's lexer defines it.
    fn skip_space(&mut self) {
        while let Some(c @ (' ' | '\t' | '\n' | '\r')) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    /// An error for the character at the current position (or the end of the input).
    fn unexpected(&self, expected: &str) -> SelectorError {
        match self.peek() {
            Some(c) => {
                self.error(self.pos, format!("unexpected character {c:?}, expected {expected}"))
            }
            None => self.error(self.pos, format!("unexpected end of input, expected {expected}")),
        }
    }

    /// Scans `[start][rest]*` from the current position.
    fn identifier(&mut self, start: fn(u8) -> bool, rest: fn(u8) -> bool) -> Option<&'a str> {
        let input: &'a str = self.input;
        let bytes = input.as_bytes();
        if !bytes.get(self.pos).is_some_and(|&b| start(b)) {
            return None;
        }
        let begin = self.pos;
        self.pos += 1;
        while bytes.get(self.pos).is_some_and(|&b| rest(b)) {
            self.pos += 1;
        }
        // Only ASCII bytes were taken, so both ends are character boundaries.
        input.get(begin..self.pos)
    }

    fn selector(mut self) -> Result<Selector, SelectorError> {
        self.skip_space();
        if self.pos == self.input.len() {
            return Err(self.error(self.pos, "empty selector"));
        }
        let mut matchers = Vec::new();
        let name = self.identifier(is_metric_start, is_metric_char);
        if let Some(name) = name {
            matchers.push(Matcher {
                label: METRIC_NAME_LABEL.to_string(),
                op: MatchOp::Equal,
                value: name.to_string(),
                regex: None,
            });
        }
        self.skip_space();
        if self.peek() == Some('{') {
            self.pos += 1;
            self.matchers(name, &mut matchers)?;
        } else if name.is_none() {
            return Err(self.unexpected("a metric name or '{'"));
        }
        self.skip_space();
        if self.pos < self.input.len() {
            return Err(self.unexpected("the end of the selector"));
        }
        Selector::new(matchers).map_err(|e| self.error(0, e.reason))
    }

    /// The matchers after `{`, up to and including `}`.
    fn matchers(
        &mut self,
        name: Option<&str>,
        out: &mut Vec<Matcher>,
    ) -> Result<(), SelectorError> {
        self.skip_space();
        if self.peek() == Some('}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_space();
            let label_at = self.pos;
            let label = self
                .identifier(is_label_start, is_label_char)
                .ok_or_else(|| self.unexpected("a label name"))?;
            if let (Some(name), METRIC_NAME_LABEL) = (name, label) {
                return Err(self.error(
                    label_at,
                    format!("metric name must not be set twice: {name:?} and __name__ in braces"),
                ));
            }
            self.skip_space();
            let op = self.operator()?;
            self.skip_space();
            let value_at = self.pos;
            let value = self.string()?;
            let matcher =
                Matcher::new(label, op, &value).map_err(|e| self.error(value_at, e.reason))?;
            out.push(matcher);
            self.skip_space();
            match self.peek() {
                Some(',') => {
                    self.pos += 1;
                    self.skip_space();
                    if self.peek() == Some('}') {
                        self.pos += 1;
                        return Ok(());
                    }
                }
                Some('}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
    }

    fn operator(&mut self) -> Result<MatchOp, SelectorError> {
        let rest = &self.input.as_bytes()[self.pos..];
        let (op, len) = match rest {
            [b'=', b'~', ..] => (MatchOp::Regex, 2),
            [b'=', b'=', ..] => {
                return Err(self.error(self.pos, "'==' is not a matching operator (use '=')"));
            }
            [b'=', ..] => (MatchOp::Equal, 1),
            [b'!', b'=', ..] => (MatchOp::NotEqual, 2),
            [b'!', b'~', ..] => (MatchOp::NotRegex, 2),
            _ => {
                let found = match self.peek() {
                    Some(c) => format!("found {c:?}"),
                    None => "found the end of input".to_string(),
                };
                return Err(self.error(
                    self.pos,
                    format!("missing matching operator (=, !=, =~, !~), {found}"),
                ));
            }
        };
        self.pos += len;
        Ok(op)
    }

    /// A string literal at the current position, unquoted.
    fn string(&mut self) -> Result<String, SelectorError> {
        let open_at = self.pos;
        let quote = match self.peek() {
            Some(q @ ('"' | '\'' | '`')) => q,
            _ => return Err(self.unexpected("a quoted string")),
        };
        self.pos += 1;
        if quote == '`' {
            let body = &self.input[self.pos..];
            let Some(len) = body.find('`') else {
                return Err(self.error(open_at, "unterminated raw string"));
            };
            self.pos += len + 1;
            return Ok(body[..len].to_string());
        }
        // Escapes such as `\xff` produce bytes, as in Go, so the value is built as bytes and
        // checked to be UTF-8 at the end.
        let mut bytes = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(self.error(open_at, "unterminated quoted string"));
            };
            let char_at = self.pos;
            self.pos += c.len_utf8();
            match c {
                '\n' => {
                    return Err(self.error(
                        open_at,
                        "unterminated quoted string (a newline must be written \\n)",
                    ));
                }
                c if c == quote => break,
                '\\' => self.escape(quote, char_at, &mut bytes)?,
                c => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        String::from_utf8(bytes).map_err(|_| {
            self.error(open_at, "string is not valid UTF-8 (check its \\x and octal escapes)")
        })
    }

    /// The escape after a backslash at `backslash_at`, as Go's `strconv.Unquote` reads it.
    fn escape(
        &mut self,
        quote: char,
        backslash_at: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), SelectorError> {
        let Some(c) = self.peek() else {
            return Err(self.error(backslash_at, "unterminated escape sequence"));
        };
        self.pos += c.len_utf8();
        let simple = match c {
            'a' => Some(0x07),
            'b' => Some(0x08),
            'f' => Some(0x0c),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(0x0b),
            '\\' => Some(b'\\'),
            c if c == quote => Some(c as u8),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(());
        }
        let (digits, radix, what) = match c {
            '0'..='7' => {
                self.pos -= 1; // The first digit is part of the number.
                (3, 8, "an octal escape needs 3 octal digits")
            }
            'x' => (2, 16, "\\x needs 2 hex digits"),
            'u' => (4, 16, "\\u needs 4 hex digits"),
            'U' => (8, 16, "\\U needs 8 hex digits"),
            c => {
                let shown =
                    if c.is_control() { c.escape_debug().to_string() } else { c.to_string() };
                return Err(self.error(backslash_at, format!("unknown escape sequence \\{shown}")));
            }
        };
        let text = self.input.get(self.pos..self.pos + digits).unwrap_or("");
        let value = (text.len() == digits && text.bytes().all(|b| (b as char).is_digit(radix)))
            .then(|| u32::from_str_radix(text, radix).ok())
            .flatten()
            .ok_or_else(|| self.error(backslash_at, what))?;
        self.pos += digits;
        match c {
            'u' | 'U' => {
                let c = char::from_u32(value).ok_or_else(|| {
                    self.error(
                        backslash_at,
                        format!("escape sequence is an invalid Unicode code point ({value:#x})"),
                    )
                })?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            }
            _ => {
                let b = u8::try_from(value).map_err(|_| {
                    self.error(backslash_at, format!("octal escape value {value} is above 255"))
                })?;
                out.push(b);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(label: &str, op: MatchOp, value: &str) -> Matcher {
        Matcher::new(label, op, value).unwrap()
    }

    fn parse(text: &str) -> Selector {
        Selector::parse(text).unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    fn parse_err(text: &str) -> SelectorError {
        match Selector::parse(text) {
            Ok(s) => panic!("{text:?} should not parse, got {s}"),
            Err(e) => e,
        }
    }

    /// A matcher as `(label, op, value)`, for compact assertions.
    type Triple<'a> = (&'a str, MatchOp, &'a str);

    fn triples(s: &Selector) -> Vec<Triple<'_>> {
        s.matchers().iter().map(|m| (m.label(), m.op(), m.value())).collect()
    }

    use MatchOp::{Equal, NotEqual, NotRegex, Regex as Re};
    use ingestor_testkit::Rng;

    #[test]
    fn parses_valid_selectors() {
        let cases: Vec<(&str, Vec<Triple<'_>>)> = vec![
            ("foo", vec![("__name__", Equal, "foo")]),
            ("  foo  ", vec![("__name__", Equal, "foo")]),
            ("foo{}", vec![("__name__", Equal, "foo")]),
            ("foo { }", vec![("__name__", Equal, "foo")]),
            ("ns:rule:rate5m", vec![("__name__", Equal, "ns:rule:rate5m")]),
            ("_x", vec![("__name__", Equal, "_x")]),
            (":x", vec![("__name__", Equal, ":x")]),
            (r#"foo{a="b"}"#, vec![("__name__", Equal, "foo"), ("a", Equal, "b")]),
            (
                "foo{a=\"1\", b!='2',c=~`3.*`,\n\td !~ \"4\" ,}",
                vec![
                    ("__name__", Equal, "foo"),
                    ("a", Equal, "1"),
                    ("b", NotEqual, "2"),
                    ("c", Re, "3.*"),
                    ("d", NotRegex, "4"),
                ],
            ),
            (r#"{a="b"}"#, vec![("a", Equal, "b")]),
            (r#"{a="b",}"#, vec![("a", Equal, "b")]),
            (r#"{__name__="foo"}"#, vec![("__name__", Equal, "foo")]),
            (r#"{__name__=~"foo|bar"}"#, vec![("__name__", Re, "foo|bar")]),
            (r#"{a="b", __name__="foo"}"#, vec![("__name__", Equal, "foo"), ("a", Equal, "b")]),
            // Prometheus allows several matchers on one label, even contradictory ones.
            (r#"{a="1",a="2"}"#, vec![("a", Equal, "1"), ("a", Equal, "2")]),
            (
                r#"{__name__="a",__name__="b"}"#,
                vec![("__name__", Equal, "a"), ("__name__", Equal, "b")],
            ),
            // An empty matcher is fine next to a non-empty one.
            (r#"{a="", b="x"}"#, vec![("a", Equal, ""), ("b", Equal, "x")]),
            (r#"foo{a=~".*"}"#, vec![("__name__", Equal, "foo"), ("a", Re, ".*")]),
            (r#"{a!=""}"#, vec![("a", NotEqual, "")]),
            (r#"{a=~".+"}"#, vec![("a", Re, ".+")]),
            (r#"{a!~".*"}"#, vec![("a", NotRegex, ".*")]),
            // Keywords are fine as label names.
            (r#"{by="1", on="2"}"#, vec![("by", Equal, "1"), ("on", Equal, "2")]),
            // Escapes.
            (r#"{a="x\"y\\z\n\t\r"}"#, vec![("a", Equal, "x\"y\\z\n\t\r")]),
            (r"{a='it\'s'}", vec![("a", Equal, "it's")]),
            (r#"{a='say "hi"'}"#, vec![("a", Equal, "say \"hi\"")]),
            (r#"{a="\a\b\f\v"}"#, vec![("a", Equal, "\x07\x08\x0c\x0b")]),
            (r#"{a="\x41\101\u00e9\U0001F600"}"#, vec![("a", Equal, "AAé😀")]),
            (r#"{a="\xe2\x82\xac"}"#, vec![("a", Equal, "€")]),
            (r#"{a="é€😀"}"#, vec![("a", Equal, "é€😀")]),
            // Raw strings keep backslashes and newlines.
            ("{a=`\\d+\\n\nx`}", vec![("a", Equal, "\\d+\\n\nx")]),
        ];
        for (text, want) in cases {
            assert_eq!(triples(&parse(text)), want, "{text:?}");
        }
    }

    #[test]
    fn refuses_invalid_selectors() {
        // (input, byte offset, a piece of the reason)
        let cases: &[(&str, usize, &str)] = &[
            ("", 0, "empty selector"),
            ("   ", 3, "empty selector"),
            ("{}", 0, "non-empty matcher"),
            (" { } ", 0, "non-empty matcher"),
            (r#"{a=""}"#, 0, "non-empty matcher"),
            (r#"{a=~".*"}"#, 0, "non-empty matcher"),
            (r#"{a=~"|x"}"#, 0, "non-empty matcher"),
            (r#"{a="",b!~"x"}"#, 0, "non-empty matcher"),
            (r#"foo{__name__="bar"}"#, 4, "set twice"),
            (r#"foo{__name__=~"bar"}"#, 4, "set twice"),
            ("9foo", 0, "unexpected character '9'"),
            ("foo-bar", 3, "unexpected character '-'"),
            ("foo bar", 4, "unexpected character 'b'"),
            ("foo[5m]", 3, "unexpected character '['"),
            (r#"foo{a="b"} x"#, 11, "unexpected character 'x'"),
            (r#"foo{a="b"}}"#, 10, "unexpected character '}'"),
            ("é", 0, "unexpected character 'é'"),
            ("foo{", 4, "end of input, expected a label name"),
            (r#"foo{a="b""#, 9, "end of input, expected ',' or '}'"),
            (r#"foo{a="b" c="d"}"#, 10, "expected ',' or '}'"),
            (r#"{,}"#, 1, "expected a label name"),
            (r#"{a="b",,}"#, 7, "expected a label name"),
            (r#"{1a="b"}"#, 1, "expected a label name"),
            (r#"{a:b="c"}"#, 2, "missing matching operator (=, !=, =~, !~), found ':'"),
            (r#"{a-b="c"}"#, 2, "matching operator"),
            (r#"{a "b"}"#, 3, "missing"),
            (r#"{a}"#, 2, "missing matching operator"),
            (r#"{a"#, 2, "found the end of input"),
            (r#"{a=="b"}"#, 2, "'=='"),
            (r#"{a!"b"}"#, 2, "matching operator"),
            (r#"{a=b}"#, 3, "expected a quoted string"),
            (r#"{a=}"#, 3, "expected a quoted string"),
            (r#"{a="b}"#, 3, "unterminated quoted string"),
            (r#"{a='b}"#, 3, "unterminated quoted string"),
            ("{a=`b}", 3, "unterminated raw string"),
            ("{a=\"b\nc\"}", 3, "newline"),
            (r#"{a="\q"}"#, 4, "unknown escape sequence \\q"),
            // Only the opening quote can be escaped, as in Go.
            (r#"{a="\'"}"#, 4, "unknown escape sequence \\'"),
            (r#"{a='\"'}"#, 4, "unknown escape sequence \\\""),
            (r#"{a="\x4"}"#, 4, "2 hex digits"),
            (r#"{a="\xZZ"}"#, 4, "2 hex digits"),
            (r#"{a="\u12"}"#, 4, "4 hex digits"),
            (r#"{a="\ud800"}"#, 4, "invalid Unicode code point"),
            (r#"{a="\U00110000"}"#, 4, "invalid Unicode code point"),
            (r#"{a="\8"}"#, 4, "unknown escape"),
            (r#"{a="\12"}"#, 4, "3 octal digits"),
            (r#"{a="\400"}"#, 4, "above 255"),
            (r#"{a="\xff"}"#, 3, "not valid UTF-8"),
            (r#"{a="\"#, 4, "unterminated escape sequence"),
            (r#"{a=~"("}"#, 4, "invalid regular expression: unclosed group"),
            (r#"{a=~"a)|(b"}"#, 4, "invalid regular expression"),
            (r#"x{a!~"[z-a]"}"#, 5, "invalid regular expression"),
        ];
        for &(text, offset, reason) in cases {
            let err = parse_err(text);
            assert_eq!(err.input, text);
            assert!(err.reason.contains(reason), "{text:?}: {err}");
            assert_eq!(err.offset, offset, "{text:?}: {err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn error_message_names_input_offset_and_reason() {
        let err = parse_err(r#"foo{a="b" c="d"}"#);
        assert_eq!(
            err.to_string(),
            r#"selector "foo{a=\"b\" c=\"d\"}": unexpected character 'c', expected ',' or '}' at byte 10"#
        );
    }

    #[test]
    fn matching_semantics() {
        let eq = m("a", Equal, "b");
        assert!(eq.matches(Some("b")) && !eq.matches(Some("bc")) && !eq.matches(None));
        let ne = m("a", NotEqual, "b");
        assert!(!ne.matches(Some("b")) && ne.matches(Some("c")) && ne.matches(None));
        // Absent labels are the empty string.
        assert!(m("a", Equal, "").matches(None));
        assert!(!m("a", Equal, "").matches(Some("x")));
        assert!(!m("a", NotEqual, "").matches(None));
        assert!(m("a", NotEqual, "").matches(Some("x")));
        // Regexes are anchored at both ends.
        let re = m("a", Re, "b");
        assert!(re.matches(Some("b")));
        for v in ["abc", "ab", "bc", "xbx", ""] {
            assert!(!re.matches(Some(v)), "{v}");
        }
        assert!(!re.matches(None));
        let alt = m("a", Re, "foo|bar");
        assert!(
            alt.matches(Some("foo")) && alt.matches(Some("bar")) && !alt.matches(Some("foobar"))
        );
        let nre = m("a", NotRegex, "b.*");
        assert!(!nre.matches(Some("bcd")) && nre.matches(Some("abc")) && nre.matches(None));
        // `.` matches a newline, as in Prometheus.
        assert!(m("a", Re, "x.y").matches(Some("x\ny")));
        assert!(m("a", Re, "(?i)ABC").matches(Some("abc")));
        assert!(m("a", Re, "").matches(None) && !m("a", Re, "").matches(Some("x")));
        // matches_empty
        assert!(m("a", Re, ".*").matches_empty());
        assert!(m("a", Re, "x|").matches_empty());
        assert!(!m("a", Re, ".+").matches_empty());
        assert!(m("a", NotRegex, ".+").matches_empty());
        assert!(!m("a", NotEqual, "").matches_empty());
        assert!(m("a", NotEqual, "x").matches_empty());
    }

    #[test]
    fn matcher_new_validates() {
        let err = Matcher::new("a", Re, "(").unwrap_err();
        assert_eq!(err.input, r#"a=~"(""#);
        assert_eq!(err.offset, 3);
        assert!(err.reason.contains("unclosed group"), "{err}");
        for bad in ["", "1a", "a-b", "a:b", "é"] {
            assert!(Matcher::new(bad, Equal, "x").is_err(), "{bad:?}");
        }
        assert_eq!(Matcher::new("ab-c", Equal, "x").unwrap_err().offset, 2);
        // Values are not checked for equality matchers: any string is a fine value.
        assert_eq!(m("__name__", Equal, "(").value(), "(");
        assert_eq!(m("a", NotRegex, "x").to_string(), r#"a!~"x""#);
    }

    #[test]
    fn new_applies_the_non_empty_rule_and_orders_the_name_first() {
        let err = Selector::new(vec![]).unwrap_err();
        assert!(err.reason.contains("non-empty matcher"), "{err}");
        let err = Selector::new(vec![m("a", Equal, ""), m("b", Re, "x*")]).unwrap_err();
        assert_eq!(err.input, r#"{a="",b=~"x*"}"#);
        let s =
            Selector::new(vec![m("a", Equal, "1"), m("__name__", Equal, "x"), m("b", Equal, "2")])
                .unwrap();
        assert_eq!(triples(&s)[0], ("__name__", Equal, "x"));
        assert_eq!(s.metric_name(), Some("x"));
        assert_eq!(s.to_string(), r#"x{a="1",b="2"}"#);
        assert_eq!(Selector::new(vec![m("__name__", Re, "x")]).unwrap().metric_name(), None);
        assert_eq!(parse(r#"{a="1"}"#).metric_name(), None);
        assert_eq!("foo".parse::<Selector>().unwrap().metric_name(), Some("foo"));
    }

    #[test]
    fn display_is_canonical() {
        let cases = [
            ("foo", "foo"),
            ("foo{}", "foo"),
            (" foo { a = 'x' , } ", r#"foo{a="x"}"#),
            (r#"{__name__="foo", b=~`\d`}"#, r#"foo{b=~"\\d"}"#),
            (r#"{__name__="foo-bar"}"#, r#"{__name__="foo-bar"}"#),
            (r#"{__name__="sum"}"#, r#"{__name__="sum"}"#),
            (r#"{__name__="NaN"}"#, r#"{__name__="NaN"}"#),
            (r#"{__name__="a",__name__="b"}"#, r#"{__name__="a",__name__="b"}"#),
            (r#"{__name__="a",__name__!="b"}"#, r#"{__name__="a",__name__!="b"}"#),
            (r#"{__name__=~"a.*"}"#, r#"{__name__=~"a.*"}"#),
            ("{a=\"\\x01\\u0085\\n\\t\\r\\\"\\\\é\"}", r#"{a="\x01\u0085\n\t\r\"\\é"}"#),
        ];
        for (text, want) in cases {
            let s = parse(text);
            assert_eq!(s.to_string(), want, "{text:?}");
            assert_eq!(parse(want), s, "{want:?}");
        }
    }

    #[test]
    fn display_round_trips_generated_selectors() {
        let labels = ["a", "b", "__name__", "_x", "le"];
        let values = [
            "",
            "x",
            "foo",
            "a.*",
            "\\d+",
            "é\n\"'`\\",
            "\u{1}\u{7f}\u{85}",
            "\t\r",
            "sum",
            "a:b",
            "x|",
        ];
        let ops = [Equal, NotEqual, Re, NotRegex];
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        for _ in 0..2000 {
            let n = 1 + rng.index(4);
            let matchers: Vec<Matcher> = (0..n)
                .filter_map(|_| {
                    Matcher::new(rng.pick(&labels), ops[rng.index(4)], rng.pick(&values)).ok()
                })
                .collect();
            let Ok(s) = Selector::new(matchers) else { continue };
            let text = s.to_string();
            let back = Selector::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(back, s, "{text:?}");
            assert_eq!(back.to_string(), text);
            checked += 1;
        }
        assert!(checked > 1000, "{checked}");
    }

    #[test]
    fn arbitrary_input_never_panics() {
        let pieces = [
            "foo", "{", "}", ",", "=", "!", "~", "=~", "!=", "\"", "'", "`", "\\", "\\x", "\\u",
            "\\U00", "a", "__name__", " ", "\n", "é", "😀", "(", ")", ".*", "0", "7", "ff", ":",
        ];
        let mut rng = Rng::new(42);
        for _ in 0..20_000 {
            let n = rng.index(12);
            let text: String = (0..n).map(|_| rng.pick(&pieces)).collect();
            match Selector::parse(&text) {
                Ok(s) => assert_eq!(parse(&s.to_string()), s, "{text:?}"),
                Err(e) => assert!(
                    e.offset <= text.len() && text.is_char_boundary(e.offset),
                    "{text:?}: {e}"
                ),
            }
        }
    }
}

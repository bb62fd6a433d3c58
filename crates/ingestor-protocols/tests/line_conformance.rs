//! Line protocol as the reference decoder reads it: a conformance table.
//!
//! Each row is an input and what InfluxData's reference decoder (`lineprotocol` in
//! `github.com/influxdata/line-protocol/v2`, the decoder InfluxDB, Telegraf and the client
//! libraries follow) makes of it, from its grammar (`line-protocol.ebnf`) and its documented
//! behaviour: the points it reads, or a refusal. Ingestor must give the same points (mapped
//! to series as the crate docs say: `m_f{tags}`, names sanitized) or refuse with a reason
//! holding the row's key words. Rows marked `Deviates` are the deliberate deviations the
//! crate docs list: the reference accepts them, ingestor refuses them, for the reason given.

use ingestor_codec::Op;
use ingestor_protocols::line::{Precision, parse_body};

/// The time a body arrives, in ms: not a whole second, so that the cut to seconds shows.
const NOW: i64 = 1_700_000_000_789;

/// A point ingestor makes of an accepted line: series name, labels, value, time in ms.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    metric: &'static str,
    labels: Vec<(&'static str, String)>,
    value: f64,
    ms: i64,
}

#[derive(Debug)]
enum Want {
    /// The reference accepts; ingestor gives these points (in order).
    Accept(Vec<Point>),
    /// The reference refuses; so does ingestor, with a reason holding every key word.
    Refuse(&'static [&'static str]),
    /// A deliberate deviation: the reference accepts (`reference` says how), ingestor
    /// refuses, with a reason holding every key word.
    Deviates { reference: &'static str, refuse: &'static [&'static str] },
}

struct Row {
    input: String,
    precision: Precision,
    want: Want,
}

fn p(metric: &'static str, labels: &[(&'static str, &str)], value: f64) -> Point {
    pt(metric, labels, value, NOW)
}

fn pt(metric: &'static str, labels: &[(&'static str, &str)], value: f64, ms: i64) -> Point {
    Point { metric, labels: labels.iter().map(|&(k, v)| (k, v.to_string())).collect(), value, ms }
}

fn table() -> Vec<Row> {
    use Want::{Accept, Deviates, Refuse};
    let ns =
        |input: &str, want: Want| Row { input: input.to_string(), precision: Precision::Ns, want };
    let at = |input: &str, precision, want: Want| Row { input: input.to_string(), precision, want };
    let one =
        |metric, labels: &[(&'static str, &str)], value| Accept(vec![p(metric, labels, value)]);
    let v = |value| Accept(vec![p("m_v", &[], value)]);
    let invalid_value = Refuse(&["field \"v\"", "invalid value"]);
    let string = Deviates { reference: "a string field", refuse: &["is a string"] };

    let many_tags = |n: usize| -> String {
        let tags: Vec<String> = (0..n).map(|i| format!("t{i:02}=x")).collect();
        format!("m,{} v=1", tags.join(","))
    };

    let mut rows = vec![
        // --- The measurement.
        ns("cpu value=1", one("cpu_value", &[], 1.0)),
        ns("cpu,host=a value=1", one("cpu_value", &[("host", "a")], 1.0)),
        ns(r"my\ cpu value=1", one("my_cpu_value", &[], 1.0)),
        ns(r"my\,cpu value=1", one("my_cpu_value", &[], 1.0)),
        // `=` needs no escape in the measurement, and `\=` there is two characters.
        ns("cpu=x value=1", one("cpu_x_value", &[], 1.0)),
        ns(r"cpu\=x value=1", one("cpu__x_value", &[], 1.0)),
        // A backslash before what it does not escape is plain; the next one escapes.
        ns(r"cpu\x value=1", one("cpu_x_value", &[], 1.0)),
        ns(r"cpu\\,host=a value=1", one("cpu__host_a_value", &[], 1.0)),
        ns(r"cpu\\ value=1", Refuse(&["measurement", "has no fields"])),
        ns(r"cpu\ value=1", Refuse(&["has no fields"])),
        ns("a#b v=1", one("a_b_v", &[], 1.0)),
        ns("é v=1", one("__v", &[], 1.0)),
        ns("1cpu v=1", one("_1cpu_v", &[], 1.0)),
        ns(",host=a value=1", Refuse(&["measurement name is empty"])),
        ns("cpu", Refuse(&["\"cpu\" has no fields"])),
        ns("cpu ", Refuse(&["has no fields"])),
        ns("cpu,host=a", Refuse(&["has no fields"])),
        ns("cpu,", Refuse(&["tag key is empty"])),
        // --- Non-printable ASCII in names.
        ns("cpu\u{b} value=1", Refuse(&["measurement", "non-printable", "'\\u{b}'"])),
        ns("x\u{2}y value=1", Refuse(&["non-printable", "'\\u{2}'"])),
        ns("\u{7f}x value=1", Refuse(&["non-printable", "'\\u{7f}'"])),
        ns("m\u{0} v=1", Refuse(&["non-printable"])),
        ns("cpu\\\u{b} value=1", Refuse(&["non-printable"])),
        ns("m\u{b}2=\" 2=5 \r\n5\u{b}2=\" 6=5 \r", Refuse(&["line 1", "non-printable"])),
        ns("\" U=True\n\u{2} U=True\n", Refuse(&["line 2", "non-printable", "'\\u{2}'"])),
        ns("cpu,t\u{b}=a v=1", Refuse(&["tag key", "non-printable"])),
        ns("cpu,t=a\u{1}b v=1", Refuse(&["tag \"t\"", "non-printable", "'\\u{1}'"])),
        ns("m x\u{1}y=1", Refuse(&["field key", "non-printable"])),
        ns("m \u{8}=0", Refuse(&["field key", "non-printable", "'\\u{8}'"])),
        ns("m \u{f}=2", Refuse(&["field key", "non-printable"])),
        // --- Spaces, tabs and line endings.
        ns("   cpu value=1", one("cpu_value", &[], 1.0)),
        ns(
            "cpu,host=a   value=1   5000000   ",
            Accept(vec![pt("cpu_value", &[("host", "a")], 1.0, 5)]),
        ),
        ns("\tcpu value=1", Refuse(&["measurement", "non-printable", "'\\t'"])),
        ns("\t\n\n\t", Refuse(&["line 1", "non-printable", "'\\t'"])),
        ns("m v=1\n\tm v=2", Refuse(&["line 2", "non-printable"])),
        ns("m \tv=1", Refuse(&["field key", "non-printable", "'\\t'"])),
        ns("m v=1\t", Refuse(&["invalid value"])),
        ns("m v=1 5\t", Refuse(&["invalid timestamp"])),
        ns("m v=1\r\n", v(1.0)),
        ns("m v=1\r", v(1.0)),
        ns("m v=1 \r\n\r\n", v(1.0)),
        ns("m v=1\r\r\n", Refuse(&["invalid value"])),
        ns("m v=1 5\r\r\n", Refuse(&["invalid timestamp"])),
        // A lone `\r` before a timestamp, or anywhere but before `\n` or at the very end.
        ns("m v=1\r5", Refuse(&["invalid value"])),
        ns("m v=1 \r5", Refuse(&["invalid timestamp"])),
        ns("m v=1 \r 5", Refuse(&["invalid timestamp"])),
        ns("\rm v=1", Refuse(&["non-printable", "'\\r'"])),
        ns("m,t=a\r v=1", Refuse(&["non-printable", "'\\r'"])),
        ns("", Accept(vec![])),
        ns("\n\n\r\n", Accept(vec![])),
        ns("   ", Accept(vec![])),
        ns("\r", Accept(vec![])),
        ns("m v=1\n\n  m v=2\n", Accept(vec![p("m_v", &[], 1.0), p("m_v", &[], 2.0)])),
        // --- Comments.
        ns("# a comment", Accept(vec![])),
        ns("  # an indented comment\nm v=1", v(1.0)),
        ns("#cpu value=1", Accept(vec![])),
        ns("# \u{15}", Refuse(&["comment", "non-printable", "'\\u{15}'"])),
        ns("#\n#\u{15}\"\u{b}f=#", Refuse(&["line 2", "comment", "non-printable"])),
        ns("# a\ttab", Refuse(&["comment", "non-printable", "'\\t'"])),
        // --- Tag keys and values: `\,`, `\=` and `\ ` are the only escapes.
        ns("cpu,b=2,a=1 v=1", one("cpu_v", &[("a", "1"), ("b", "2")], 1.0)),
        ns(r"cpu,ho\ st=a v=1", one("cpu_v", &[("ho_st", "a")], 1.0)),
        ns(r"cpu,ho\,st=a v=1", one("cpu_v", &[("ho_st", "a")], 1.0)),
        ns(r"cpu,ho\=st=a v=1", one("cpu_v", &[("ho_st", "a")], 1.0)),
        ns(r"cpu,host=a\ b v=1", one("cpu_v", &[("host", "a b")], 1.0)),
        ns(r"cpu,host=a\,b v=1", one("cpu_v", &[("host", "a,b")], 1.0)),
        ns(r"cpu,host=a\=b v=1", one("cpu_v", &[("host", "a=b")], 1.0)),
        ns(r"cpu,host=two\\\ words value=42", one("cpu_value", &[("host", r"two\\ words")], 42.0)),
        ns(r"cpu,host=two\\ words value=42", one("cpu_value", &[("host", r"two\ words")], 42.0)),
        ns(r"cpu,regions=\\ east value=1.0", one("cpu_value", &[("regions", r"\ east")], 1.0)),
        ns(r"cpu,regions=eas\\ t value=1.0", one("cpu_value", &[("regions", r"eas\ t")], 1.0)),
        ns(r"cpu,regions=east\\  value=1.0", one("cpu_value", &[("regions", r"east\ ")], 1.0)),
        ns(
            r"cpu,regions=\\,\,\=east value=1.0",
            one("cpu_value", &[("regions", r"\,,=east")], 1.0),
        ),
        ns(r"cpu,reg\\=ion=east value=1.0", one("cpu_value", &[("reg__ion", "east")], 1.0)),
        ns(r"u,t=\\\  e=4", one("u_e", &[("t", r"\\ ")], 4.0)),
        ns(r"u,s=t\\  e=1.", one("u_e", &[("s", r"t\ ")], 1.0)),
        ns(r#"u,t0=\\",t=k e=1"#, one("u_e", &[("t", "k"), ("t0", r#"\\""#)], 1.0)),
        ns(r"u,s=\\,\,\t e=1", one("u_e", &[("s", r"\,,\t")], 1.0)),
        ns(r"m,path=C:\dir v=1", one("m_v", &[("path", r"C:\dir")], 1.0)),
        ns(r"m,t=\\ v=1", Refuse(&["unescaped '='"])),
        ns(r"m,t=a\ v", Refuse(&["has no fields"])),
        ns("m,t=é v=1", one("m_v", &[("t", "é")], 1.0)),
        ns("cpu,host= value=1", Refuse(&["tag \"host\" has an empty value"])),
        ns(
            "cpu,host=serverA,region=,zone=us-west value=1i",
            Refuse(&["tag \"region\" has an empty value"]),
        ),
        ns("cpu,something= value=42", Refuse(&["empty value"])),
        ns("cpu,t=a=b v=1", Refuse(&["tag \"t\"", "unescaped '='"])),
        ns("cpu,=a v=1", Refuse(&["tag key is empty"])),
        ns("cpu, v=1", Refuse(&["tag key is empty"])),
        ns("cpu,t=a, v=1", Refuse(&["tag key is empty"])),
        ns("cpu,host v=1", Refuse(&["tag \"host\" has no '='"])),
        ns("cpu,host=serverA,region value=1i", Refuse(&["tag \"region\" has no '='"])),
        ns("m,a=1,a=2 v=1", Refuse(&["label \"a\" appears more than once"])),
        // --- Field keys.
        ns(r"m f\ o\,o\=x=1", one("m_f_o_o_x", &[], 1.0)),
        ns(r"m f\\=1", Refuse(&["field", "has no '='"])),
        ns("\" \\\\=F\n\" \\\\=F\n1 \\\\=F", Refuse(&["line 1", "has no '='"])),
        ns(r"m f\\\==1", one("m_f___", &[], 1.0)),
        ns(r"u \e\\\ =4", one("u__e___", &[], 4.0)),
        ns(r"m a\b=1", one("m_a_b", &[], 1.0)),
        ns("m v", Refuse(&["field \"v\" has no '='"])),
        ns("m v 1", Refuse(&["has no '='"])),
        ns("m =1", Refuse(&["field key is empty"])),
        ns("m v=1,", Refuse(&["field key is empty"])),
        ns("m v=1,,w=2", Refuse(&["field key is empty"])),
        ns("m v=1,w=2", Accept(vec![p("m_v", &[], 1.0), p("m_w", &[], 2.0)])),
        // --- Field values: floats.
        ns("m v=1.5", v(1.5)),
        ns("m v=-1.5", v(-1.5)),
        ns("m v=1.", v(1.0)),
        ns("m v=.5", v(0.5)),
        ns("m v=-.5", v(-0.5)),
        ns("m v=1e3", v(1000.0)),
        ns("m v=1E-3", v(0.001)),
        ns("m v=1e+3", v(1000.0)),
        ns("m v=1.e2", v(100.0)),
        ns("m v=007", v(7.0)),
        ns("m v=-0", v(0.0)),
        ns("m v=1e-999", v(0.0)),
        ns("m v=+1", invalid_value),
        ns("m v=.", Refuse(&["invalid value"])),
        ns("m v=-", Refuse(&["invalid value"])),
        ns("m v=1e", Refuse(&["invalid value"])),
        ns("m v=1.2.3", Refuse(&["invalid value"])),
        ns("m v=1_000", Refuse(&["invalid value"])),
        ns("m v=NaN", Refuse(&["invalid value"])),
        ns("m v=inf", Refuse(&["invalid value"])),
        ns("m v=-inf", Refuse(&["invalid value"])),
        ns("m v=1e999", Refuse(&["must be finite"])),
        ns("m v=-1e999", Refuse(&["must be finite"])),
        ns("m v=1\u{b}", Refuse(&["invalid value"])),
        ns("m v=", Refuse(&["field \"v\" has no value"])),
        ns("m v= 1", Refuse(&["has no value"])),
        ns("m v=,w=1", Refuse(&["has no value"])),
        ns("m v=1=2", Refuse(&["invalid value"])),
        ns(
            "m v=0x1p4",
            Deviates { reference: "the float 16 (Go's ParseFloat)", refuse: &["invalid value"] },
        ),
        ns("m v=-0x1p-2", Deviates { reference: "the float -0.25", refuse: &["invalid value"] }),
        ns("m v=0x10", Refuse(&["invalid value"])),
        // --- Integers and unsigned integers.
        ns("m v=3i", v(3.0)),
        ns("m v=-3i", v(-3.0)),
        ns("m v=-0i", v(0.0)),
        ns("m v=9223372036854775807i", v(9_223_372_036_854_775_807.0)),
        ns("m v=-9223372036854775808i", v(-9_223_372_036_854_775_808.0)),
        ns("m v=9223372036854775808i", Refuse(&["invalid integer value"])),
        ns("m v=+3i", Refuse(&["invalid integer value"])),
        ns("m v=3.5i", Refuse(&["invalid integer value"])),
        ns("m v=1e5i", Refuse(&["invalid integer value"])),
        ns("m v=i", Refuse(&["invalid integer value"])),
        ns("m v=-i", Refuse(&["invalid integer value"])),
        ns("m v=3u", v(3.0)),
        ns("m v=18446744073709551615u", v(18_446_744_073_709_551_615.0)),
        ns("m v=18446744073709551616u", Refuse(&["invalid unsigned value"])),
        ns("m v=-3u", Refuse(&["invalid unsigned value"])),
        ns("m v=+3u", Refuse(&["invalid unsigned value"])),
        ns("m v=1.5u", Refuse(&["invalid unsigned value"])),
        // --- Booleans.
        ns("m v=t", v(1.0)),
        ns("m v=T", v(1.0)),
        ns("m v=true", v(1.0)),
        ns("m v=True", v(1.0)),
        ns("m v=TRUE", v(1.0)),
        ns("m v=f", v(0.0)),
        ns("m v=F", v(0.0)),
        ns("m v=false", v(0.0)),
        ns("m v=False", v(0.0)),
        ns("m v=FALSE", v(0.0)),
        ns("m v=tRUE", Refuse(&["invalid value"])),
        ns("m v=truE", Refuse(&["invalid value"])),
        ns("m v=yes", Refuse(&["invalid value"])),
        // --- Strings: read by the reference, refused here.
        ns(r#"m v="a""#, string),
        ns(
            r#"m v="a",w=1"#,
            Deviates { reference: "a string and a float", refuse: &["is a string"] },
        ),
        ns(
            r#"m v="a \"b\", c=d \\" 5"#,
            Deviates { reference: "a string", refuse: &["is a string"] },
        ),
        ns("m v=\"a\tb\u{1}\"", Deviates { reference: "a string", refuse: &["is a string"] }),
        ns(
            "m v=\"a\nb\"",
            Deviates { reference: "a string holding a newline", refuse: &["unterminated"] },
        ),
        ns(r#"m v="a"#, Refuse(&["unterminated string"])),
        ns(r#"m v="a\""#, Refuse(&["unterminated string"])),
        ns(r#"m v="a"x"#, Refuse(&["unexpected 'x' after the string"])),
        ns(r#"m v="a",w=oops"#, Refuse(&["field \"w\"", "invalid value"])),
        // --- Timestamps (nanoseconds unless said).
        ns("m v=1 1700000000123456789", Accept(vec![pt("m_v", &[], 1.0, 1_700_000_000_123)])),
        ns("m v=1 -1", Accept(vec![pt("m_v", &[], 1.0, -1)])),
        ns("m v=1 -0", Accept(vec![pt("m_v", &[], 1.0, 0)])),
        ns("m v=1 9223372036854775807", Accept(vec![pt("m_v", &[], 1.0, 9_223_372_036_854)])),
        ns("m v=1 -9223372036854775808", Accept(vec![pt("m_v", &[], 1.0, -9_223_372_036_855)])),
        ns("m v=1 9223372036854775808", Refuse(&["invalid timestamp"])),
        ns("m v=1 +5", Refuse(&["invalid timestamp \"+5\""])),
        ns("m v=1 5x", Refuse(&["invalid timestamp"])),
        ns("m v=1 1.5", Refuse(&["invalid timestamp"])),
        ns("m v=1 -", Refuse(&["invalid timestamp"])),
        ns("m v=1 --5", Refuse(&["invalid timestamp"])),
        ns("m v=1 1e9", Refuse(&["invalid timestamp"])),
        ns("m v=1 5 6", Refuse(&["unexpected text \"6\" after the timestamp"])),
        at("m v=1 1700000000", Precision::S, Accept(vec![pt("m_v", &[], 1.0, 1_700_000_000_000)])),
        at("m v=1 9223372036", Precision::S, Accept(vec![pt("m_v", &[], 1.0, 9_223_372_036_000)])),
        at("m v=1 9223372037", Precision::S, Refuse(&["out of range in seconds"])),
        at("m v=1 -9223372037", Precision::S, Refuse(&["out of range in seconds"])),
        at(
            "m v=1 1700000000123",
            Precision::Ms,
            Accept(vec![pt("m_v", &[], 1.0, 1_700_000_000_123)]),
        ),
        at("m v=1 9223372036855", Precision::Ms, Refuse(&["out of range in milliseconds"])),
        at(
            "m v=1 1700000000123456",
            Precision::Us,
            Accept(vec![pt("m_v", &[], 1.0, 1_700_000_000_123)]),
        ),
        at("m v=1 9223372036854776", Precision::Us, Refuse(&["out of range in microseconds"])),
        // No timestamp: the time of arrival, cut to the precision.
        at("m v=1", Precision::S, Accept(vec![pt("m_v", &[], 1.0, 1_700_000_000_000)])),
        at("m v=1", Precision::Ms, Accept(vec![pt("m_v", &[], 1.0, NOW)])),
        at("m v=1", Precision::Us, Accept(vec![pt("m_v", &[], 1.0, NOW)])),
        // --- Deliberate deviations from the mapping to Prometheus series.
        ns(
            "m,a.b=1,a_b=2 v=1",
            Deviates { reference: "two tags", refuse: &["label \"a_b\" appears more than once"] },
        ),
        ns("m,__name__=x v=1", Deviates { reference: "the tag __name__", refuse: &["reserved"] }),
        ns("m,_.x=1 v=1", Deviates { reference: "the tag _.x", refuse: &["\"__x\"", "reserved"] }),
        ns(
            r"u,\\n=t e=1",
            Deviates { reference: r"the tag \\n", refuse: &["\"__n\"", "reserved"] },
        ),
        // The reference returns both fields; one series, the last value wins.
        ns("m v=1,v=2", v(2.0)),
        ns("m a.b=1,a-b=2", one("m_a_b", &[], 2.0)),
    ];
    // Tags: at most 64 (the data model's limit); the reference has none.
    let mut labels64: Vec<(&'static str, String)> = Vec::new();
    for i in 0..64 {
        labels64.push((Box::leak(format!("t{i:02}").into_boxed_str()), "x".to_string()));
    }
    rows.push(ns(
        &many_tags(64),
        Accept(vec![Point { metric: "m_v", labels: labels64, value: 1.0, ms: NOW }]),
    ));
    rows.push(ns(
        &many_tags(65),
        Deviates { reference: "65 tags", refuse: &["more than 64 labels"] },
    ));
    rows.push(ns(
        &format!("m,t={} v=1", "x".repeat(4097)),
        Deviates { reference: "a tag value of 4,097 bytes", refuse: &["label \"t\"", "invalid"] },
    ));
    let long = "x".repeat(4096);
    rows.push(ns(&format!("m,t={long} v=1"), one("m_v", &[("t", &long)], 1.0)));
    rows
}

/// The points ingestor makes of a row's input, or its refusal as displayed.
fn run(row: &Row) -> Result<Vec<Point>, String> {
    let updates = parse_body(&row.input, row.precision, NOW).map_err(|e| e.to_string())?;
    Ok(updates
        .iter()
        .map(|u| {
            let Op::GaugeSet(value) = u.op else { panic!("{:?}", u.op) };
            Point {
                metric: Box::leak(u.key.name().to_string().into_boxed_str()),
                labels: u
                    .key
                    .labels()
                    .iter()
                    .map(|l| -> (&'static str, String) {
                        (Box::leak(l.name().to_string().into_boxed_str()), l.value().to_string())
                    })
                    .collect(),
                value,
                ms: u.timestamp.0,
            }
        })
        .collect())
}

#[test]
fn ingestor_reads_line_protocol_as_the_reference_decoder_does() {
    let rows = table();
    let mut failures = Vec::new();
    for row in &rows {
        let got = run(row);
        let ok = match (&row.want, &got) {
            (Want::Accept(want), Ok(points)) => want == points,
            (Want::Refuse(words) | Want::Deviates { refuse: words, .. }, Err(reason)) => {
                words.iter().all(|w| reason.contains(w))
            }
            _ => false,
        };
        if !ok {
            let shown: String = row.input.chars().take(80).collect();
            failures
                .push(format!("{shown:?} ({:?}): want {:?}, got {got:?}", row.precision, row.want));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows differ:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn the_table_covers_acceptance_refusal_and_each_deviation() {
    let rows = table();
    let count = |f: fn(&Want) -> bool| rows.iter().filter(|r| f(&r.want)).count();
    let accepted = count(|w| matches!(w, Want::Accept(_)));
    let refused = count(|w| matches!(w, Want::Refuse(_)));
    let deviations = count(|w| matches!(w, Want::Deviates { .. }));
    println!(
        "{} rows: {accepted} accepted, {refused} refused, {deviations} deviations",
        rows.len()
    );
    assert!(
        accepted >= 80 && refused >= 80 && deviations >= 10,
        "{accepted} {refused} {deviations}"
    );
    // Every deviation says what the reference does instead.
    for row in &rows {
        if let Want::Deviates { reference, .. } = &row.want {
            assert!(!reference.is_empty(), "{:?}", row.input);
        }
    }
}

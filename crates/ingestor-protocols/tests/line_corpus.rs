//! Line protocol against the reference decoder's public corpus of answers.
//!
//! InfluxData's `line-protocol` repository keeps, in `lineprotocol/testdata/corpus.json`, the
//! reference decoder's answer to each of 6,615 inputs (points, or an error). This test reads
//! that file (it is not kept here) and checks that ingestor gives the same points, mapped to
//! series as the crate docs say, or refuses where the reference refuses; the deliberate
//! deviations (string fields, and series the data model refuses) are counted apart. Run it
//! with the file's path:
//!
//! ```sh
//! LP_CORPUS=/path/to/corpus.json cargo test -p ingestor-protocols --test line_corpus -- --ignored --nocapture
//! ```

use std::collections::BTreeMap;

use base64::Engine as _;
use ingestor_codec::{Op, SeriesKey};
use ingestor_protocols::line::{Precision, parse_body, sanitize_label_name, sanitize_metric_name};
use serde_json::Value;

/// A string of the corpus: text, or `{"binary": base64}` for bytes that are not.
fn bytes(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        other => base64::engine::general_purpose::STANDARD
            .decode(other["binary"].as_str().expect("binary"))
            .expect("base64"),
    }
}

fn text(v: &Value) -> String {
    String::from_utf8_lossy(&bytes(v)).into_owned()
}

/// What ingestor should make of the reference's points: the updates as (series, ms, value),
/// or the kind of deliberate deviation that makes it refuse them.
fn expected(points: &[Value]) -> Result<Vec<(String, i64, f64)>, &'static str> {
    let mut out = Vec::new();
    for p in points {
        let name = text(&p["name"]);
        let labels: Vec<(String, String)> = p["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|t| (sanitize_label_name(&text(&t["key"])), text(&t["value"])))
            .collect();
        let ms = p["time"].as_i64().expect("time").div_euclid(1_000_000);
        // Fields by series, the last value winning, in order of first appearance.
        let mut fields: Vec<(String, f64)> = Vec::new();
        for f in p["fields"].as_array().expect("fields") {
            let (kind, v) = f["value"].as_object().expect("value").iter().next().expect("kind");
            let value = match kind.as_str() {
                "string" => return Err("string field"),
                "bool" => f64::from(u8::from(v.as_bool().expect("bool"))),
                "int" => v.as_i64().expect("int") as f64,
                "uint" => v.as_u64().expect("uint") as f64,
                _ => v.as_f64().expect("float"),
            };
            let metric = sanitize_metric_name(&format!("{name}_{}", text(&f["key"])));
            match fields.iter_mut().find(|(m, _)| *m == metric) {
                Some(slot) => slot.1 = value,
                None => fields.push((metric, value)),
            }
        }
        for (metric, value) in fields {
            let key = SeriesKey::new(&metric, labels.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map_err(|_| "series the data model refuses")?;
            out.push((key.to_string(), ms, value));
        }
    }
    Ok(out)
}

/// Whether two floats are equal but for serde_json's reading of the corpus, which (without its
/// `float_roundtrip` feature) may land one unit in the last place off on long numbers.
fn same(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
}

#[test]
#[ignore = "needs LP_CORPUS, the path of the reference's corpus.json"]
fn ingestor_agrees_with_the_reference_corpus() {
    let path = std::env::var("LP_CORPUS").expect("LP_CORPUS: the path of corpus.json");
    let corpus: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut differ = Vec::new();
    for (key, case) in corpus["decode"].as_object().expect("decode") {
        let input = &case["input"];
        let precision = match input["precision"].as_str().expect("precision") {
            "1s" => Precision::S,
            "1ms" => Precision::Ms,
            "1µs" => Precision::Us,
            _ => Precision::Ns,
        };
        let now = input["defaultTime"].as_i64().expect("defaultTime").div_euclid(1_000_000);
        let body = bytes(&input["text"]);
        // Ingestor reads UTF-8 text only (a deliberate deviation: see the crate docs).
        let got = std::str::from_utf8(&body)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|b| parse_body(b, precision, now).map_err(|e| e.to_string()))
            .map(|updates| {
                let mut v: Vec<(String, i64, f64)> = updates
                    .iter()
                    .map(|u| {
                        let Op::GaugeSet(x) = u.op else { panic!("{:?}", u.op) };
                        (u.key.to_string(), u.timestamp.0, x)
                    })
                    .collect();
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                v
            });
        let want = match case["output"].get("result") {
            None => Err("the reference refuses"),
            Some(points) => expected(points.as_array().expect("result")).map(|mut v| {
                v.sort_by(|a, b| a.partial_cmp(b).unwrap());
                v
            }),
        };
        let agree = match (&want, &got) {
            (Ok(w), Ok(g)) => {
                w.len() == g.len()
                    && w.iter().zip(g).all(|(a, b)| a.0 == b.0 && a.1 == b.1 && same(a.2, b.2))
            }
            (Err(_), Err(_)) => true,
            _ => false,
        };
        let class = match (&want, agree) {
            (_, false) => "differ",
            (Ok(_), true) => "agree: accepted",
            (Err("the reference refuses"), true) => "agree: refused",
            (Err("string field"), true) => "deviation: string field refused",
            (Err(_), true) => "deviation: series the data model refuses",
        };
        *counts.entry(class).or_default() += 1;
        if !agree {
            differ.push(format!("{key}: {:?}: want {want:?}, got {got:?}", text(&input["text"])));
        }
    }
    let total: usize = counts.values().sum();
    println!("{total} inputs:");
    for (class, n) in &counts {
        println!("{n:>6} {class}");
    }
    assert!(total > 6_000, "{total} inputs: not the corpus?");
    assert!(differ.is_empty(), "{} differ:\n{}", differ.len(), differ.join("\n"));
}

//! OTLP/JSON's value encodings, as the OTLP specification's JSON mapping (proto3's) writes
//! them: 64-bit integers as decimal strings (numbers accepted too), doubles as numbers or
//! `"NaN"`, `"Infinity"`, `"-Infinity"`, enums as integers (their names accepted too),
//! bytes as base64, `null` as the field's default.

use serde::de::{Deserialize, Deserializer, Error};

/// A JSON number or a string holding one.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
    S(String),
}

fn num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Num>, D::Error> {
    Option::<Num>::deserialize(d)
}

pub(super) fn seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

pub(super) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or_default())
}

pub(super) fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match num(d)? {
        None => Ok(0),
        Some(Num::U(v)) => Ok(v),
        Some(Num::S(s)) => s
            .trim()
            .parse()
            .map_err(|_| D::Error::custom(format!("{s:?} is not an unsigned 64-bit integer"))),
        Some(_) => Err(D::Error::custom("expected an unsigned 64-bit integer")),
    }
}

pub(super) fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u64(d)?;
    u32::try_from(v).map_err(|_| D::Error::custom(format!("{v} is not a 32-bit integer")))
}

fn to_i64(n: Num) -> Result<i64, String> {
    match n {
        Num::U(v) => i64::try_from(v).map_err(|_| format!("{v} is not a 64-bit integer")),
        Num::I(v) => Ok(v),
        Num::S(s) => s.trim().parse().map_err(|_| format!("{s:?} is not a 64-bit integer")),
        Num::F(_) => Err("expected a 64-bit integer".into()),
    }
}

pub(super) fn f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(opt_f64(d)?.unwrap_or(0.0))
}

pub(super) fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match num(d)? {
        None => None,
        Some(n) => Some(to_f64(n).map_err(D::Error::custom)?),
    })
}

fn to_f64(n: Num) -> Result<f64, String> {
    match n {
        Num::U(v) => Ok(v as f64),
        Num::I(v) => Ok(v as f64),
        Num::F(v) => Ok(v),
        Num::S(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other.trim().parse().map_err(|_| format!("{s:?} is not a number")),
        },
    }
}

pub(super) fn vec_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    let raw = Option::<Vec<Num>>::deserialize(d)?.unwrap_or_default();
    raw.into_iter()
        .map(|n| match n {
            Num::U(v) => Ok(v),
            Num::S(s) => s
                .trim()
                .parse()
                .map_err(|_| D::Error::custom(format!("{s:?} is not an unsigned 64-bit integer"))),
            _ => Err(D::Error::custom("expected an unsigned 64-bit integer")),
        })
        .collect()
}

pub(super) fn vec_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let raw = Option::<Vec<Num>>::deserialize(d)?.unwrap_or_default();
    raw.into_iter().map(|n| to_f64(n).map_err(D::Error::custom)).collect()
}

/// `AggregationTemporality`: its number, or its name.
pub(super) fn temporality<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    match num(d)? {
        None => Ok(0),
        Some(Num::U(v)) => {
            i32::try_from(v).map_err(|_| D::Error::custom("temporality out of range"))
        }
        Some(Num::I(v)) => {
            i32::try_from(v).map_err(|_| D::Error::custom("temporality out of range"))
        }
        Some(Num::S(s)) => match s.as_str() {
            "AGGREGATION_TEMPORALITY_UNSPECIFIED" => Ok(0),
            "AGGREGATION_TEMPORALITY_DELTA" => Ok(1),
            "AGGREGATION_TEMPORALITY_CUMULATIVE" => Ok(2),
            _ => Err(D::Error::custom(format!("{s:?} is not an aggregation temporality"))),
        },
        Some(Num::F(_)) => Err(D::Error::custom("expected an aggregation temporality")),
    }
}

fn base64(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s.as_bytes())
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(s.as_bytes()))
        .map_err(|_| format!("bytesValue {s:?} is not base64"))
}

fn opt<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<T>::deserialize(d)
}

fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match num(d)? {
        None => None,
        Some(n) => Some(to_i64(n).map_err(D::Error::custom)?),
    })
}

fn opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    Ok(match Option::<String>::deserialize(d)? {
        None => None,
        Some(s) => Some(base64(&s).map_err(D::Error::custom)?),
    })
}

/// `Metric` as OTLP/JSON writes it: its data under the name of its kind, at most one.
#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct Metric {
    #[serde(deserialize_with = "string")]
    name: String,
    #[serde(deserialize_with = "string")]
    unit: String,
    #[serde(deserialize_with = "opt")]
    gauge: Option<super::proto::Gauge>,
    #[serde(deserialize_with = "opt")]
    sum: Option<super::proto::Sum>,
    #[serde(deserialize_with = "opt")]
    histogram: Option<super::proto::Histogram>,
    #[serde(deserialize_with = "opt")]
    exponential_histogram: Option<super::proto::ExponentialHistogram>,
    #[serde(deserialize_with = "opt")]
    summary: Option<super::proto::Summary>,
}

impl TryFrom<Metric> for super::proto::Metric {
    type Error = String;

    fn try_from(m: Metric) -> Result<Self, String> {
        use super::proto::Data;
        let mut data = [
            m.gauge.map(Data::Gauge),
            m.sum.map(Data::Sum),
            m.histogram.map(Data::Histogram),
            m.exponential_histogram.map(Data::ExponentialHistogram),
            m.summary.map(Data::Summary),
        ]
        .into_iter()
        .flatten();
        let first = data.next();
        if data.next().is_some() {
            return Err(format!("metric {:?} holds more than one kind of data", m.name));
        }
        Ok(super::proto::Metric { name: m.name, unit: m.unit, data: first })
    }
}

/// `NumberDataPoint` as OTLP/JSON writes it: `asDouble` or `asInt`.
#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct NumberDataPoint {
    #[serde(deserialize_with = "seq")]
    attributes: Vec<super::proto::KeyValue>,
    #[serde(deserialize_with = "u64")]
    time_unix_nano: u64,
    #[serde(deserialize_with = "opt_f64")]
    as_double: Option<f64>,
    #[serde(deserialize_with = "opt_i64")]
    as_int: Option<i64>,
    #[serde(deserialize_with = "u32")]
    flags: u32,
}

impl TryFrom<NumberDataPoint> for super::proto::NumberDataPoint {
    type Error = String;

    fn try_from(p: NumberDataPoint) -> Result<Self, String> {
        use super::proto::Value;
        let value = match (p.as_double, p.as_int) {
            (Some(_), Some(_)) => return Err("a data point holds both asDouble and asInt".into()),
            (Some(d), None) => Some(Value::AsDouble(d)),
            (None, Some(i)) => Some(Value::AsInt(i)),
            (None, None) => None,
        };
        Ok(super::proto::NumberDataPoint {
            attributes: p.attributes,
            time_unix_nano: p.time_unix_nano,
            value,
            flags: p.flags,
        })
    }
}

/// `AnyValue` as OTLP/JSON writes it: one of its fields.
#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
pub(super) struct AnyValue {
    #[serde(deserialize_with = "opt")]
    string_value: Option<String>,
    #[serde(deserialize_with = "opt")]
    bool_value: Option<bool>,
    #[serde(deserialize_with = "opt_i64")]
    int_value: Option<i64>,
    #[serde(deserialize_with = "opt_f64")]
    double_value: Option<f64>,
    #[serde(deserialize_with = "opt")]
    array_value: Option<super::proto::ArrayValue>,
    #[serde(deserialize_with = "opt")]
    kvlist_value: Option<super::proto::KeyValueList>,
    #[serde(deserialize_with = "opt_bytes")]
    bytes_value: Option<Vec<u8>>,
}

impl TryFrom<AnyValue> for super::proto::AnyValue {
    type Error = String;

    fn try_from(v: AnyValue) -> Result<Self, String> {
        use super::proto::Any;
        let mut all = [
            v.string_value.map(Any::StringValue),
            v.bool_value.map(Any::BoolValue),
            v.int_value.map(Any::IntValue),
            v.double_value.map(Any::DoubleValue),
            v.array_value.map(Any::ArrayValue),
            v.kvlist_value.map(Any::KvlistValue),
            v.bytes_value.map(Any::BytesValue),
        ]
        .into_iter()
        .flatten();
        let first = all.next();
        if all.next().is_some() {
            return Err("an attribute value holds more than one value".into());
        }
        Ok(super::proto::AnyValue { value: first })
    }
}

//! OTLP metrics (`ExportMetricsServiceRequest`) in protobuf and in OTLP/JSON, decoded into
//! one shape ([`proto`]: the same types for both encodings), then mapped to updates by
//! [`translate`] as Prometheus' own OTLP translation maps them.
//!
//! The protobuf types are written here with `prost`'s derive (no `protoc` at build time) from
//! the field numbers of opentelemetry-proto's `.proto` files; the same types derive `serde`'s
//! `Deserialize` for OTLP/JSON (lowerCamelCase keys, 64-bit integers as decimal strings or
//! numbers, enums as integers, bytes as base64, as the OTLP specification's JSON mapping
//! says). Only what ingestor uses is declared; the rest is skipped by both decoders.
//!
//! ```
//! use ingestor_codec::Op;
//! use ingestor_protocols::otlp::{self, Encoding};
//!
//! let body = r#"{"resourceMetrics":[{
//!   "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},
//!   "scopeMetrics":[{"metrics":[{
//!     "name":"http.server.requests","unit":"{request}",
//!     "sum":{"isMonotonic":true,"aggregationTemporality":2,"dataPoints":[
//!       {"attributes":[{"key":"http.route","value":{"stringValue":"/cart"}}],
//!        "timeUnixNano":"1700000000000000000","asInt":"42"}]}}]}]}]}"#;
//! let request = otlp::decode(body.as_bytes(), Encoding::Json)?;
//! let t = otlp::translate(&request, 0);
//! assert_eq!(t.updates[0].key.to_string(),
//!            r#"http_server_requests_total{http_route="/cart",job="shop"}"#);
//! assert_eq!(t.updates[0].op, Op::CounterSet(42.0));
//! assert_eq!(t.updates[0].timestamp.0, 1_700_000_000_000);
//! // The same request in protobuf decodes to the same value.
//! assert_eq!(otlp::decode(&otlp::encode_request(&request), Encoding::Protobuf)?, request);
//! # Ok::<(), otlp::DecodeError>(())
//! ```
//!
//! # The translation
//!
//! | OTLP | ingestor |
//! |---|---|
//! | Sum, monotonic, cumulative | counter `name_total`, `CounterSet` (the absolute total) |
//! | Sum, monotonic, delta | counter `name_total`, `CounterAdd` (the increment) |
//! | Sum, non-monotonic, cumulative | gauge `name`, `GaugeSet` |
//! | Sum, non-monotonic, delta | gauge `name`, `GaugeAdd` |
//! | Gauge | gauge `name` (`name_ratio` for unit `1`), `GaugeSet` |
//! | Histogram (explicit buckets), cumulative | gauges `name_bucket{le}` (cumulative counts, `le="+Inf"` the count), `name_sum`, `name_count`: `GaugeSet` |
//! | Histogram (explicit buckets), delta | the same gauges, `GaugeAdd` of the point's values |
//! | Summary | gauges `name{quantile}`, `name_sum`, `name_count`: `GaugeSet` |
//! | Exponential histogram | refused: counted in `partial_success.rejected_data_points`, with a message |
//! | Sum or Histogram of unspecified temporality | refused, counted |
//! | Data point flagged "no recorded value" | skipped (Prometheus writes a stale marker; ingestor keeps the last value) |
//! | Resource `service.name` (with `service.namespace`) | label `job` = `name` (`namespace/name`) |
//! | Resource `service.instance.id` | label `instance` |
//! | Other resource attributes | labels of `target_info` (a gauge of 1, with `job` and `instance`) |
//! | Data point attributes | labels (see [`label_name`]); attributes that collide are joined with `;` |
//! | Metric name and unit | see [`metric_name`]: `http.server.duration` in `ms` is `http_server_duration_milliseconds` |
//! | `time_unix_nano` | the timestamp, in milliseconds (the time of arrival if 0) |
//!
//! Names: every character other than `[a-zA-Z0-9:]` splits the name into words joined by
//! `_` (so `.`, `-`, `/` and runs of `_` become one `_`); the unit's words are appended
//! (`s` -> `seconds`, `ms` -> `milliseconds`, `By` -> `bytes`, `By/s` -> `bytes_per_second`,
//! `%` -> `percent`, `1` -> nothing; an annotation such as `{request}` -> nothing) unless
//! the name holds them already; a monotonic sum ends in `_total`, a gauge of unit `1` in
//! `_ratio`. Label names: characters other than `[a-zA-Z0-9_]` to `_`, runs of `_` to one,
//! `key_` before a leading digit. Attribute values: strings as they are, numbers and
//! booleans written out, arrays and maps as JSON, bytes as base64; an empty value is no
//! label (as Prometheus reads it).
//!
//! # Deviations
//!
//! - **Explicit-bucket histograms are stored as their component series, not as a histogram
//!   with its own bounds** (which the issue asked for). The engine's histograms observe
//!   values into fixed bounds; setting a histogram to a sender's own bounds and counts
//!   needs a new operation in the log's on-disk format, a change this work does not make.
//!   The component series are what Prometheus' classic histograms become when they arrive
//!   by remote write, so queries written for Prometheus (`histogram_quantile` over
//!   `_bucket`) read them the same; they are gauges (their `# TYPE` says so), set to the
//!   cumulative values, or increased by a delta point's values.
//! - Scope attributes (`otel_scope_*`) and exemplars are not kept; metadata (description,
//!   unit) is not kept beyond the name.
//! - A data point whose series or value the data model refuses (a non-finite value, a
//!   negative counter increment, over 64 labels...) is refused and counted, all of its
//!   series with it; the others are written.

use std::fmt;

use prost::Message;

mod json;
pub mod proto;
mod translate;

pub use translate::{
    NO_DATA_POINT, NameKind, Rejected, Translation, label_name, metric_name, translate,
    value_string,
};

/// How a body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json`.
    Json,
}

impl Encoding {
    /// Reads a `Content-Type` header. `Err` says what is taken (a receiver answers 415).
    ///
    /// # Errors
    /// A media type other than `application/x-protobuf` and `application/json`, or none.
    pub fn from_content_type(header: Option<&str>) -> Result<Encoding, String> {
        let media = header.and_then(|h| h.split(';').next()).map(str::trim).unwrap_or("");
        if media.eq_ignore_ascii_case("application/x-protobuf") {
            Ok(Encoding::Protobuf)
        } else if media.eq_ignore_ascii_case("application/json") {
            Ok(Encoding::Json)
        } else {
            Err(format!(
                "Content-Type {:?}: OTLP/HTTP takes application/x-protobuf or application/json",
                header.unwrap_or("")
            ))
        }
    }

    /// The `Content-Type` of an answer in this encoding.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// A body that does not decode (a receiver answers 400, nothing applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Decodes an `ExportMetricsServiceRequest` (already inflated if it was gzipped).
///
/// # Errors
/// [`DecodeError`] for a body that is not the message in `encoding`.
pub fn decode(
    body: &[u8],
    encoding: Encoding,
) -> Result<proto::ExportMetricsServiceRequest, DecodeError> {
    match encoding {
        Encoding::Protobuf => proto::ExportMetricsServiceRequest::decode(body)
            .map_err(|e| DecodeError(format!("the protobuf message does not decode: {e}"))),
        Encoding::Json => serde_json::from_slice(body)
            .map_err(|e| DecodeError(format!("the OTLP/JSON body does not decode: {e}"))),
    }
}

/// A request in protobuf: for senders, tests and benchmarks.
#[must_use]
pub fn encode_request(request: &proto::ExportMetricsServiceRequest) -> Vec<u8> {
    request.encode_to_vec()
}

/// The `ExportMetricsServiceResponse` body of a 200 in `encoding`: with `partial_success`
/// when data points were refused (`rejected` of them, `message` saying why).
#[must_use]
pub fn encode_response(encoding: Encoding, rejected: usize, message: &str) -> Vec<u8> {
    let partial = (rejected > 0).then(|| proto::ExportMetricsPartialSuccess {
        rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
        error_message: message.to_string(),
    });
    match encoding {
        Encoding::Protobuf => {
            proto::ExportMetricsServiceResponse { partial_success: partial }.encode_to_vec()
        }
        Encoding::Json => {
            let body = match partial {
                None => serde_json::json!({}),
                Some(p) => serde_json::json!({ "partialSuccess": {
                    "rejectedDataPoints": p.rejected_data_points.to_string(),
                    "errorMessage": p.error_message,
                }}),
            };
            body.to_string().into_bytes()
        }
    }
}

/// Reads an `ExportMetricsServiceResponse` (for senders and tests).
///
/// # Errors
/// [`DecodeError`] for a body that is not one.
pub fn decode_response(
    body: &[u8],
    encoding: Encoding,
) -> Result<proto::ExportMetricsServiceResponse, DecodeError> {
    match encoding {
        Encoding::Protobuf => proto::ExportMetricsServiceResponse::decode(body)
            .map_err(|e| DecodeError(format!("not an ExportMetricsServiceResponse: {e}"))),
        Encoding::Json => {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| DecodeError(format!("not JSON: {e}")))?;
            let partial = v.get("partialSuccess").map(|p| proto::ExportMetricsPartialSuccess {
                rejected_data_points: match &p["rejectedDataPoints"] {
                    serde_json::Value::String(s) => s.parse().unwrap_or(-1),
                    other => other.as_i64().unwrap_or(0),
                },
                error_message: p["errorMessage"].as_str().unwrap_or("").to_string(),
            });
            Ok(proto::ExportMetricsServiceResponse { partial_success: partial })
        }
    }
}

/// Reads a `google.rpc.Status` error body (for senders and tests).
///
/// # Errors
/// [`DecodeError`] for a body that is not one.
pub fn decode_status(body: &[u8], encoding: Encoding) -> Result<proto::Status, DecodeError> {
    match encoding {
        Encoding::Protobuf => proto::Status::decode(body)
            .map_err(|e| DecodeError(format!("not a google.rpc.Status: {e}"))),
        Encoding::Json => {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| DecodeError(format!("not JSON: {e}")))?;
            Ok(proto::Status {
                code: v["code"].as_i64().and_then(|c| i32::try_from(c).ok()).unwrap_or(0),
                message: v["message"].as_str().unwrap_or("").to_string(),
            })
        }
    }
}

/// The `google.rpc.Status` body of an error answer in `encoding`, for an HTTP status.
#[must_use]
pub fn encode_status(encoding: Encoding, http_status: u16, message: &str) -> Vec<u8> {
    // The gRPC code an HTTP status stands for.
    let code = match http_status {
        400 | 413 | 415 => 3,
        401 => 16,
        403 => 7,
        404 => 5,
        408 | 504 => 4,
        429 => 8,
        502 | 503 => 14,
        _ => 13,
    };
    match encoding {
        Encoding::Protobuf => proto::Status { code, message: message.to_string() }.encode_to_vec(),
        Encoding::Json => {
            serde_json::json!({ "code": code, "message": message }).to_string().into_bytes()
        }
    }
}

#[cfg(test)]
mod tests;

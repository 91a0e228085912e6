//! CloudWatch Embedded Metric Format (EMF): a metric is a JSON log line with an `_aws` member
//! that tells CloudWatch Logs which top-level members are metrics and which are dimensions.
//! Writing one is a `write` to stdout in Lambda: no API call, no extra latency or cost per
//! metric beyond the log bytes.
//!
//! ```json
//! {"_aws":{"Timestamp":1700000000000,"CloudWatchMetrics":[{"Namespace":"KsefRelay",
//!   "Dimensions":[["Endpoint"]],"Metrics":[{"Name":"KsefCallLatency","Unit":"Milliseconds"}]}]},
//!  "Endpoint":"send_invoice","KsefCallLatency":84.0}
//! ```
//!
//! [`MetricLine`] builds one such line from groups (one directive each: a dimension set and its
//! metrics) and refuses lines CloudWatch would drop or misread: more than 100 metrics in a
//! directive, more than 30 dimensions in a set, a member claimed twice with different values,
//! a name that is empty or reserved (`_aws`).

use std::io::Write;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

/// CloudWatch's limits for one directive.
pub const MAX_METRICS_PER_DIRECTIVE: usize = 100;
pub const MAX_DIMENSIONS_PER_SET: usize = 30;

/// The units the relay uses (CloudWatch's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
    Bytes,
    None,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
            Unit::Bytes => "Bytes",
            Unit::None => "None",
        }
    }
}

/// Why a line was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmfError {
    #[error("directive with {0} metrics: CloudWatch takes at most {MAX_METRICS_PER_DIRECTIVE}")]
    TooManyMetrics(usize),
    #[error("dimension set with {0} dimensions: CloudWatch takes at most {MAX_DIMENSIONS_PER_SET}")]
    TooManyDimensions(usize),
    #[error("member {0:?} is claimed twice with different values")]
    MemberClash(String),
    #[error("member name {0:?} is empty or reserved")]
    BadName(String),
    #[error("metric {0:?} has a value that is not a finite number")]
    NotFinite(String),
    #[error("a directive needs at least one metric")]
    NoMetrics,
}

/// One EMF log line under construction.
#[derive(Debug, Clone)]
pub struct MetricLine {
    namespace: String,
    timestamp: DateTime<Utc>,
    directives: Vec<Value>,
    members: Map<String, Value>,
    error: Option<EmfError>,
}

impl MetricLine {
    pub fn new(namespace: &str, timestamp: DateTime<Utc>) -> Self {
        MetricLine {
            namespace: namespace.to_owned(),
            timestamp,
            directives: Vec::new(),
            members: Map::new(),
            error: None,
        }
    }

    fn claim(&mut self, name: &str, value: Value) {
        if self.error.is_some() {
            return;
        }
        if name.is_empty() || name == "_aws" {
            self.error = Some(EmfError::BadName(name.to_owned()));
            return;
        }
        match self.members.get(name) {
            Some(existing) if *existing != value => self.error = Some(EmfError::MemberClash(name.to_owned())),
            _ => {
                self.members.insert(name.to_owned(), value);
            }
        }
    }

    /// One directive: `metrics` aggregated by the one dimension set `dimensions` (name, value).
    /// An empty `dimensions` gives metrics without dimensions.
    pub fn group(mut self, dimensions: &[(&str, &str)], metrics: &[(&str, Unit, f64)]) -> Self {
        if self.error.is_some() {
            return self;
        }
        if metrics.is_empty() {
            self.error = Some(EmfError::NoMetrics);
            return self;
        }
        if metrics.len() > MAX_METRICS_PER_DIRECTIVE {
            self.error = Some(EmfError::TooManyMetrics(metrics.len()));
            return self;
        }
        if dimensions.len() > MAX_DIMENSIONS_PER_SET {
            self.error = Some(EmfError::TooManyDimensions(dimensions.len()));
            return self;
        }
        for (name, value) in dimensions {
            self.claim(name, Value::String((*value).to_owned()));
        }
        for (name, _, value) in metrics {
            if !value.is_finite() {
                self.error = Some(EmfError::NotFinite((*name).to_owned()));
                return self;
            }
            self.claim(name, json!(value));
        }
        let dims: Vec<&str> = dimensions.iter().map(|(n, _)| *n).collect();
        let declared: Vec<Value> = metrics.iter().map(|(n, u, _)| json!({"Name": n, "Unit": u.name()})).collect();
        self.directives.push(json!({
            "Namespace": self.namespace,
            "Dimensions": [dims],
            "Metrics": declared,
        }));
        self
    }

    /// A member that is neither metric nor dimension: searchable in Logs Insights, not aggregated
    /// (for example the HTTP status of a call).
    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claim(name, value.into());
        self
    }

    /// The JSON line (without the newline), or why CloudWatch would not take it.
    pub fn to_line(&self) -> Result<String, EmfError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.directives.is_empty() {
            return Err(EmfError::NoMetrics);
        }
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": self.timestamp.timestamp_millis(),
                "CloudWatchMetrics": self.directives,
            }),
        );
        for (k, v) in &self.members {
            root.insert(k.clone(), v.clone());
        }
        Ok(Value::Object(root).to_string())
    }

    /// Writes the line to the metrics sink chosen with [`set_sink`] (nowhere until one is chosen:
    /// the Lambda functions choose stdout in `logging::init_lambda`, the local runner a file). A line
    /// that would be invalid is not written: it is logged as a warning instead, since a broken
    /// metric must not break the work it measures.
    pub fn emit(&self) {
        match self.to_line() {
            Ok(line) => write_line(&line),
            Err(e) => tracing::warn!(error = %e, "EMF line refused"),
        }
    }
}

type Sink = Box<dyn Write + Send>;

/// Stdout, where CloudWatch Logs picks EMF lines up in Lambda. Each line is one `write_all` on
/// the locked stdout, so it never interleaves with a log line.
pub struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().lock().write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        std::io::stdout().lock().write_all(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);

/// Sends EMF lines to `sink` from now on (stdout in Lambda, a file in the local runner).
pub fn set_sink(sink: Sink) {
    *SINK.lock().unwrap_or_else(|p| p.into_inner()) = Some(sink);
}

fn write_line(line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    let mut sink = SINK.lock().unwrap_or_else(|p| p.into_inner());
    // One write_all per line, so lines from concurrent tasks never interleave.
    if let Some(w) = sink.as_mut() {
        let _ = w.write_all(&buf).and_then(|()| w.flush());
    }
}

/// Checks that `line` is a valid EMF line: the structure CloudWatch expects, every declared
/// metric a number and every declared dimension a string among the top-level members, and the
/// limits. Returns the declared metric names with their units. Used by the tests and usable on
/// captured logs.
pub fn check_line(line: &str) -> Result<Vec<(String, String)>, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let root = v.as_object().ok_or("not a JSON object")?;
    let aws = root.get("_aws").and_then(Value::as_object).ok_or("no _aws object")?;
    let ts = aws.get("Timestamp").ok_or("no _aws.Timestamp")?;
    if !ts.is_i64() && !ts.is_u64() {
        return Err("_aws.Timestamp is not an integer of epoch milliseconds".into());
    }
    let directives = aws
        .get("CloudWatchMetrics")
        .and_then(Value::as_array)
        .ok_or("no _aws.CloudWatchMetrics array")?;
    if directives.is_empty() {
        return Err("empty CloudWatchMetrics".into());
    }
    let mut declared = Vec::new();
    for d in directives {
        let ns = d
            .get("Namespace")
            .and_then(Value::as_str)
            .ok_or("directive without a Namespace string")?;
        if ns.is_empty() {
            return Err("empty Namespace".into());
        }
        let sets = d
            .get("Dimensions")
            .and_then(Value::as_array)
            .ok_or("directive without a Dimensions array")?;
        for set in sets {
            let set = set.as_array().ok_or("a dimension set is not an array")?;
            if set.len() > MAX_DIMENSIONS_PER_SET {
                return Err(format!("{} dimensions in one set", set.len()));
            }
            for dim in set {
                let name = dim.as_str().ok_or("a dimension name is not a string")?;
                match root.get(name) {
                    Some(Value::String(_)) => {}
                    Some(_) => return Err(format!("dimension {name} is not a string member")),
                    None => return Err(format!("dimension {name} has no top-level member")),
                }
            }
        }
        let metrics = d
            .get("Metrics")
            .and_then(Value::as_array)
            .ok_or("directive without a Metrics array")?;
        if metrics.is_empty() || metrics.len() > MAX_METRICS_PER_DIRECTIVE {
            return Err(format!("{} metrics in one directive", metrics.len()));
        }
        for m in metrics {
            let name = m.get("Name").and_then(Value::as_str).ok_or("a metric without a Name")?;
            let unit = m.get("Unit").and_then(Value::as_str).unwrap_or("None");
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(a)) if a.iter().all(Value::is_number) && !a.is_empty() && a.len() <= 100 => {}
                Some(_) => return Err(format!("metric {name} is not a number")),
                None => return Err(format!("metric {name} has no top-level member")),
            }
            declared.push((name.to_owned(), unit.to_owned()));
        }
    }
    Ok(declared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts() -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_700_000_000_123).unwrap()
    }

    #[test]
    fn a_line_has_the_structure_cloudwatch_reads() {
        let line = MetricLine::new("KsefRelay", ts())
            .group(&[("Endpoint", "send_invoice")], &[("KsefCallLatency", Unit::Milliseconds, 84.5)])
            .group(&[], &[("DocumentsOverdue", Unit::Count, 3.0)])
            .property("HttpStatus", 202)
            .to_line()
            .unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_123i64);
        let d = &v["_aws"]["CloudWatchMetrics"];
        assert_eq!(d[0]["Namespace"], "KsefRelay");
        assert_eq!(d[0]["Dimensions"], json!([["Endpoint"]]));
        assert_eq!(d[0]["Metrics"], json!([{"Name": "KsefCallLatency", "Unit": "Milliseconds"}]));
        assert_eq!(d[1]["Dimensions"], json!([[]]));
        assert_eq!(v["Endpoint"], "send_invoice");
        assert_eq!(v["KsefCallLatency"], 84.5);
        assert_eq!(v["DocumentsOverdue"], 3.0);
        assert_eq!(v["HttpStatus"], 202);
        assert_eq!(
            check_line(&line).unwrap(),
            vec![
                ("KsefCallLatency".to_owned(), "Milliseconds".to_owned()),
                ("DocumentsOverdue".to_owned(), "Count".to_owned())
            ]
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn lines_cloudwatch_would_drop_are_refused() {
        let many: Vec<(String, Unit, f64)> = (0..101).map(|i| (format!("M{i}"), Unit::Count, 1.0)).collect();
        let many: Vec<(&str, Unit, f64)> = many.iter().map(|(n, u, v)| (n.as_str(), *u, *v)).collect();
        assert_eq!(
            MetricLine::new("N", ts()).group(&[], &many).to_line(),
            Err(EmfError::TooManyMetrics(101))
        );
        assert!(MetricLine::new("N", ts()).group(&[], &many[..100]).to_line().is_ok());

        let names: Vec<String> = (0..31).map(|i| format!("D{i}")).collect();
        let dims: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "x")).collect();
        let m = [("M", Unit::Count, 1.0)];
        assert_eq!(
            MetricLine::new("N", ts()).group(&dims, &m).to_line(),
            Err(EmfError::TooManyDimensions(31))
        );
        assert!(MetricLine::new("N", ts()).group(&dims[..30], &m).to_line().is_ok());

        assert_eq!(
            MetricLine::new("N", ts())
                .group(&[("State", "QUEUED")], &m)
                .group(&[("State", "SENT")], &[("X", Unit::Count, 1.0)])
                .to_line(),
            Err(EmfError::MemberClash("State".into()))
        );
        assert_eq!(
            MetricLine::new("N", ts()).group(&[], &[("M", Unit::Count, f64::NAN)]).to_line(),
            Err(EmfError::NotFinite("M".into()))
        );
        assert_eq!(
            MetricLine::new("N", ts()).group(&[("_aws", "x")], &m).to_line(),
            Err(EmfError::BadName("_aws".into()))
        );
        assert_eq!(MetricLine::new("N", ts()).to_line(), Err(EmfError::NoMetrics));
    }

    #[test]
    fn the_checker_catches_broken_lines() {
        assert!(check_line("not json").is_err());
        assert!(check_line(r#"{"_aws":{"CloudWatchMetrics":[]}}"#).is_err());
        let missing_dim = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[["State"]],"Metrics":[{"Name":"M","Unit":"Count"}]}]},"M":1}"#;
        assert!(check_line(missing_dim).unwrap_err().contains("State"));
        let string_metric = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"N","Dimensions":[[]],"Metrics":[{"Name":"M","Unit":"Count"}]}]},"M":"1"}"#;
        assert!(check_line(string_metric).unwrap_err().contains("not a number"));
    }
}

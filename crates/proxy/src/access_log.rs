//! The access log (routing.md §13): one JSON line per request on stdout, with the request fields captured before
//! any filter ran. 5xx responses are always logged, other responses are sampled, 101 upgrades and aborted
//! requests are not logged.

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use http::request::Parts;
use rand::Rng as _;

use crate::settings::AccessLogSettings;
use crate::state::rfc3339_millis;

/// Request fields captured at intake.
pub struct AccessRecord {
    method: String,
    host: String,
    path: String,
    query: String,
    user_agent: String,
    sampling_rate: f64,
    /// Trace and span id of the server span, when the request is traced.
    trace: Option<(opentelemetry::TraceId, opentelemetry::SpanId)>,
}

impl AccessRecord {
    pub fn capture(parts: &Parts, host: &str, settings: &AccessLogSettings) -> Box<Self> {
        let query = if settings.strip_query {
            String::new()
        } else {
            parts.uri.query().unwrap_or("").to_owned()
        };
        Box::new(Self {
            method: parts.method.as_str().to_owned(),
            host: host.to_owned(),
            path: parts.uri.path().to_owned(),
            query,
            user_agent: parts
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned(),
            sampling_rate: settings.sampling_rate,
            trace: None,
        })
    }

    /// Links the line to the request's server span.
    pub fn traced(&mut self, trace_id: opentelemetry::TraceId, span_id: opentelemetry::SpanId) {
        self.trace = Some((trace_id, span_id));
    }

    pub fn emit(&self, status: u16, bytes_written: u64, elapsed: Duration) {
        if status == 101 {
            return;
        }
        if status < 500 && self.sampling_rate < 1.0 && rand::rng().random::<f64>() >= self.sampling_rate {
            return;
        }
        let line = self.line(status, bytes_written, elapsed);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }

    fn line(&self, status: u16, bytes_written: u64, elapsed: Duration) -> serde_json::Value {
        let mut line = serde_json::json!({
            "time": rfc3339_millis(SystemTime::now()),
            "level": "info",
            "msg": "access",
            "method": self.method,
            "host": self.host,
            "path": self.path,
            "query": self.query,
            "status": status,
            "bytes_written": bytes_written,
            "duration_ms": elapsed.as_secs_f64() * 1000.0,
            "user_agent": self.user_agent,
        });
        if let (Some((trace_id, span_id)), Some(fields)) = (self.trace, line.as_object_mut()) {
            fields.insert("trace_id".into(), trace_id.to_string().into());
            fields.insert("span_id".into(), span_id.to_string().into());
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Box<AccessRecord> {
        let (parts, ()) = http::Request::get("/a?b=1").body(()).unwrap().into_parts();
        AccessRecord::capture(&parts, "h.example", &AccessLogSettings::default())
    }

    #[test]
    fn trace_fields_appear_only_when_traced() {
        let plain = record().line(200, 5, Duration::from_millis(3));
        assert!(plain.get("trace_id").is_none() && plain.get("span_id").is_none());
        let mut traced = record();
        traced.traced(
            opentelemetry::TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            opentelemetry::SpanId::from_hex("b7ad6b7169203331").unwrap(),
        );
        let line = traced.line(200, 5, Duration::from_millis(3));
        assert_eq!(line["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(line["span_id"], "b7ad6b7169203331");
        assert_eq!(line["path"], "/a");
    }
}

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
        })
    }

    pub fn emit(&self, status: u16, bytes_written: u64, elapsed: Duration) {
        if status == 101 {
            return;
        }
        if status < 500 && self.sampling_rate < 1.0 && rand::rng().random::<f64>() >= self.sampling_rate {
            return;
        }
        let line = serde_json::json!({
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
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
    }
}

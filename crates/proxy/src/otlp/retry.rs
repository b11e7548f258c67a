//! Sending an export request again when the collector's answer says it may succeed later, as the OTLP/HTTP
//! specification asks of exporters: 429, 502, 503 and 504, and failures without any response (refused connection,
//! timeout), are retryable, with exponential backoff and jitter, or after the `Retry-After` the collector gave;
//! every other answer is final.
//!
//! The retry happens below the OTLP exporter, on the encoded request: the batch is encoded once and never copied.
//! The exporter's own retry is switched off, because it cannot be cut short at shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use opentelemetry_http::{HttpClient, HttpError, ResponseBodyTooLarge};
use rand::Rng as _;

use super::export::SpanQueue;

/// How a failed export request is sent again. The defaults bound a batch to 5 attempts within 30 s: waits of
/// about 1, 2, 4 and 5 s, each between half and all of its nominal value (jitter keeps proxies that lost the same
/// collector from coming back in step).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExportRetry {
    /// Attempts per batch, the first one included.
    pub max_attempts: u32,
    /// No attempt starts later than this after the first one.
    pub budget: Duration,
    /// The nominal wait after the first failure; it doubles after each further one.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// A longer `Retry-After` is cut to this.
    pub max_retry_after: Duration,
}

/// The exporter's HTTP client: sends each request through `inner`, again while the answer is retryable and the
/// policy allows it.
#[derive(Debug)]
pub(crate) struct RetryingClient<C> {
    inner: C,
    policy: ExportRetry,
    /// Its close signal cuts a wait short; the attempt count of the last request is left there for the log.
    queue: Arc<SpanQueue>,
}

/// What one attempt's outcome allows.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Success, or a failure that would fail again.
    Final,
    /// Retryable; `Some` when the collector said how long to wait.
    Retry(Option<Duration>),
}

impl Default for ExportRetry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            budget: Duration::from_secs(30),
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
        }
    }
}

impl ExportRetry {
    /// The nominal wait after failed attempt `attempt` (1-based), before jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        self.first_backoff
            .saturating_mul(1 << doublings)
            .min(self.max_backoff)
    }

    /// The wait after failed attempt `attempt`: the collector's `Retry-After` (capped) when it gave one, else the
    /// backoff with jitter.
    fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_retry_after);
        }
        let nominal = self.backoff(attempt);
        let half = nominal / 2;
        let span = u64::try_from((nominal - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=span))
    }
}

impl<C: HttpClient> RetryingClient<C> {
    pub(crate) fn new(inner: C, policy: ExportRetry, queue: Arc<SpanQueue>) -> Self {
        Self { inner, policy, queue }
    }

    async fn send_with_retry(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.queue.last_attempts.store(attempt, Ordering::Relaxed);
            // Once shutdown began, a failure is final: the flush is bounded and the rest of the queue waits.
            let closing = self.queue.is_closed();
            let mut request = Request::new(body.clone());
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() = parts.uri.clone();
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();
            let outcome = self.inner.send_bytes(request).await;
            let Verdict::Retry(retry_after) = verdict(&outcome) else {
                return outcome;
            };
            if closing || attempt >= self.policy.max_attempts {
                return outcome;
            }
            let wait = self.policy.wait(attempt, retry_after);
            if started.elapsed() + wait > self.policy.budget {
                return outcome;
            }
            let failure = describe(&outcome);
            if attempt == 1 {
                tracing::warn!(failure = %failure, ?wait, "OTLP trace export failed; retrying");
            } else {
                tracing::debug!(failure = %failure, attempt, ?wait, "OTLP trace export failed again; retrying");
            }
            self.queue.wait_unless_closed(wait).await;
        }
    }
}

impl<C: HttpClient> HttpClient for RetryingClient<C> {
    // The trait is an `async_trait`; this is its expansion.
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.send_with_retry(request))
    }
}

/// The OTLP/HTTP rules: a response body too large to read is the collector's doing and would be so again; any
/// other failure without a response (refused, reset, timed out) is retryable.
fn verdict(outcome: &Result<Response<Bytes>, HttpError>) -> Verdict {
    match outcome {
        Err(e) if e.downcast_ref::<ResponseBodyTooLarge>().is_some() => Verdict::Final,
        Err(_) => Verdict::Retry(None),
        Ok(response) => match response.status() {
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Verdict::Retry(
                response
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, SystemTime::now())),
            ),
            _ => Verdict::Final,
        },
    }
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date; a date in the past means now.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn describe(outcome: &Result<Response<Bytes>, HttpError>) -> String {
    match outcome {
        Ok(response) => format!("HTTP {}", response.status().as_u16()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, retry_after: Option<&str>) -> Result<Response<Bytes>, HttpError> {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(v) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, v.parse().unwrap());
        }
        Ok(response)
    }

    #[test]
    fn only_the_otlp_retryable_answers_are_retried() {
        for status in [429, 502, 503, 504] {
            assert_eq!(verdict(&answer(status, None)), Verdict::Retry(None), "{status}");
        }
        for status in [200, 400, 401, 403, 404, 413, 500, 501] {
            assert_eq!(verdict(&answer(status, None)), Verdict::Final, "{status}");
        }
        let refused: HttpError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(verdict(&Err(refused)), Verdict::Retry(None));
        let too_large: HttpError = Box::new(ResponseBodyTooLarge::new());
        assert_eq!(verdict(&Err(too_large)), Verdict::Final);
        assert_eq!(
            verdict(&answer(503, Some("7"))),
            Verdict::Retry(Some(Duration::from_secs(7)))
        );
        assert_eq!(
            verdict(&answer(429, Some("soon"))),
            Verdict::Retry(None),
            "an unreadable Retry-After falls back to the backoff"
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Fri, 27 Nov 2026 16:00:00 GMT").unwrap();
        assert_eq!(retry_after(" 3 ", now), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Fri, 27 Nov 2026 16:00:12 GMT", now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            retry_after("Fri, 27 Nov 2026 15:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("-1", now), None);
        assert_eq!(retry_after("", now), None);
    }

    #[test]
    fn waits_double_up_to_the_cap_with_jitter_and_retry_after_is_capped() {
        let policy = ExportRetry::default();
        let nominal: Vec<_> = (1..=5).map(|a| policy.backoff(a).as_secs()).collect();
        assert_eq!(nominal, [1, 2, 4, 5, 5]);
        assert_eq!(policy.backoff(u32::MAX), policy.max_backoff);
        for attempt in 1..=5 {
            let wait = policy.wait(attempt, None);
            let nominal = policy.backoff(attempt);
            assert!(wait >= nominal / 2 && wait <= nominal, "{attempt}: {wait:?}");
        }
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.wait(1, Some(Duration::from_secs(3600))),
            policy.max_retry_after
        );
    }
}

//! The export side of tracing: an OTLP HTTP/protobuf exporter fed by a span queue that a task on the runtime drains
//! in batches.
//!
//! Why not the SDK's batch processors: both hand every ended span to their worker through a channel whose receiver
//! is woken per span. From the proxy's data workers that is a cross-thread wake-up (a futex call and a context
//! switch) per span, two per request, and it dominated the cost of tracing in a loopback load test. Here an ended
//! span is pushed under an uncontended mutex and the export task is woken only when a batch is full, on its
//! schedule, or at shutdown.
//!
//! A failed export request is sent again while the collector's answer allows it (`retry`); meanwhile new spans keep
//! going into the bounded queue.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    Sampler, SdkTracerProvider, Span, SpanData, SpanExporter as _, SpanProcessor,
};
use tokio::sync::Notify;

use super::retry::{ExportRetry, RetryingClient};
use super::{TracingError, traces_url};
use crate::settings::TracingSettings;

/// Time one export request may take (each attempt of it).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Spans per export request.
const BATCH: usize = 512;
/// Spans held while the collector is slow or away; more are dropped.
const MAX_QUEUE: usize = 8192;
/// Default export schedule (the SDK's, and `OTEL_BSP_SCHEDULE_DELAY` in milliseconds when set).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);

/// A tracer provider and its export task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TracerPipeline {
    provider: SdkTracerProvider,
    queue: Arc<SpanQueue>,
}

/// Ended spans waiting for export.
#[derive(Debug)]
pub(super) struct SpanQueue {
    spans: Mutex<Vec<SpanData>>,
    /// Wakes the export task: a full batch, or shutdown.
    wake: Notify,
    closed: AtomicBool,
    /// Wakes every wait for a retry at shutdown.
    closing: Notify,
    /// Attempts the last export request took, for the log line about it.
    pub(super) last_attempts: AtomicU32,
    /// Set by the export task when it has exported the last batch after shutdown.
    finished: AtomicBool,
    finished_wake: Notify,
    dropped: AtomicU64,
}

/// The provider's span processor: queues sampled spans.
#[derive(Debug)]
struct QueueProcessor(Arc<SpanQueue>);

impl TracerPipeline {
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports what is queued and stops the export task, waiting at most `limit`. A failed export is not retried
    /// any more, and a wait for a retry ends with one last attempt at once. Returns whether the export task finished
    /// in time.
    pub async fn shutdown(&self, limit: Duration) -> bool {
        // Non-blocking: only marks the queue closed and wakes the task.
        let _ = self.provider.shutdown();
        let queue = self.queue.clone();
        let finished = async move {
            loop {
                let notified = queue.finished_wake.notified();
                if queue.finished.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        let in_time = tokio::time::timeout(limit, finished).await.is_ok();
        if !in_time {
            tracing::warn!(?limit, "OTLP trace export did not finish in time; spans dropped");
        }
        let dropped = self.queue.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "OTLP trace export: spans dropped because the queue was full"
            );
        }
        in_time
    }
}

/// An OTLP HTTP/protobuf tracer provider, sampling parent-based with `settings.sample_rate` for new traces, whose
/// export task runs on the current tokio runtime. `service_name` applies unless `OTEL_SERVICE_NAME` is set. Call
/// [`TracerPipeline::shutdown`] before that runtime stops, or the spans still queued are lost.
pub fn tracer_pipeline(
    settings: &TracingSettings,
    service_name: &'static str,
) -> Result<TracerPipeline, TracingError> {
    pipeline_with_retry(settings, service_name, ExportRetry::default())
}

/// [`tracer_pipeline`] with its own retry policy (tests use short waits).
pub(super) fn pipeline_with_retry(
    settings: &TracingSettings,
    service_name: &'static str,
    retry: ExportRetry,
) -> Result<TracerPipeline, TracingError> {
    let queue = Arc::new(SpanQueue {
        spans: Mutex::new(Vec::with_capacity(BATCH)),
        wake: Notify::new(),
        closed: AtomicBool::new(false),
        closing: Notify::new(),
        last_attempts: AtomicU32::new(0),
        finished: AtomicBool::new(false),
        finished_wake: Notify::new(),
        dropped: AtomicU64::new(0),
    });
    let mut tls = crate::tls::client_config(None, false)?;
    // The connector sets ALPN itself and refuses a config that already has it.
    tls.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = RetryingClient::new(
        opentelemetry_http::hyper::HyperClient::new(connector, EXPORT_TIMEOUT, None),
        retry,
        queue.clone(),
    );
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        .with_retry_policy(RetryPolicy::disabled())
        .with_http_client(client);
    if let Some(endpoint) = settings.endpoint.as_deref().filter(|e| !e.trim().is_empty()) {
        builder = builder.with_endpoint(traces_url(endpoint)?);
    }
    let mut exporter = builder.build()?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service_name);
    }
    let resource = resource.build();
    exporter.set_resource(&resource);
    let interval = settings.export_interval.unwrap_or_else(|| {
        std::env::var("OTEL_BSP_SCHEDULE_DELAY")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(DEFAULT_INTERVAL, Duration::from_millis)
    });
    tokio::spawn(export_loop(queue.clone(), exporter, interval));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(QueueProcessor(queue.clone()))
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_rate.clamp(0.0, 1.0),
        ))))
        .with_resource(resource)
        .build();
    Ok(TracerPipeline { provider, queue })
}

/// Exports on schedule, when a batch is full, and once more at shutdown.
async fn export_loop(queue: Arc<SpanQueue>, exporter: opentelemetry_otlp::SpanExporter, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = queue.wake.notified() => {}
        }
        let closing = queue.closed.load(Ordering::Acquire);
        loop {
            let batch = {
                let mut spans = queue.lock();
                if spans.is_empty() {
                    break;
                }
                let n = spans.len().min(BATCH);
                spans.drain(..n).collect::<Vec<_>>()
            };
            // 0 stays when the batch could not even be encoded.
            queue.last_attempts.store(0, Ordering::Relaxed);
            let result = exporter.export(batch).await;
            let attempts = queue.last_attempts.load(Ordering::Relaxed);
            match result {
                Err(e) => tracing::warn!(error = %e, attempts, "OTLP trace export failed; batch dropped"),
                Ok(()) if attempts > 1 => {
                    tracing::info!(attempts, "OTLP trace export succeeded after retrying")
                }
                Ok(()) => {}
            }
        }
        if closing {
            let _ = exporter.shutdown();
            queue.finished.store(true, Ordering::Release);
            queue.finished_wake.notify_waiters();
            return;
        }
    }
}

impl SpanQueue {
    fn lock(&self) -> MutexGuard<'_, Vec<SpanData>> {
        self.spans.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sleeps for `wait`, or until shutdown begins.
    pub(super) async fn wait_unless_closed(&self, wait: Duration) {
        let closing = self.closing.notified();
        tokio::pin!(closing);
        // Registered before the flag is read, so that a close in between still wakes it.
        closing.as_mut().enable();
        if self.is_closed() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = closing => {}
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        let queue = &*self.0;
        if !span.span_context.is_sampled() || queue.closed.load(Ordering::Relaxed) {
            return;
        }
        let full = {
            let mut spans = queue.lock();
            if spans.len() >= MAX_QUEUE {
                queue.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            spans.push(span);
            spans.len() == BATCH
        };
        if full {
            queue.wake.notify_one();
        }
    }

    /// Asks for an export now; does not wait for it (the export runs on the runtime, which this must not block).
    fn force_flush(&self) -> OTelSdkResult {
        self.0.wake.notify_one();
        Ok(())
    }

    /// Closes the queue and wakes the export task, which exports the rest and stops. Does not wait: the provider
    /// may be dropped on a runtime thread. [`TracerPipeline::shutdown`] waits.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.0.closed.store(true, Ordering::Release);
        self.0.wake.notify_one();
        self.0.closing.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests;

//! The exporter against the loopback collector of `tunnelgate-testkit`, with waits short enough for tests.

use std::time::Duration;

use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use tunnelgate_testkit::otlp::OtlpCollector;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

fn quick_retry() -> ExportRetry {
    ExportRetry {
        max_attempts: 5,
        budget: Duration::from_secs(10),
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        max_retry_after: Duration::from_secs(10),
    }
}

/// A pipeline exporting to `collector` every 50 ms.
fn pipeline(collector: &OtlpCollector, retry: ExportRetry) -> TracerPipeline {
    let settings = TracingSettings {
        endpoint: Some(collector.endpoint()),
        sample_rate: 1.0,
        export_interval: Some(Duration::from_millis(50)),
    };
    pipeline_with_retry(&settings, "retry-test", retry).unwrap()
}

fn end_spans(pipeline: &TracerPipeline, n: usize) {
    let tracer = pipeline.provider().tracer("retry-test");
    for i in 0..n {
        tracer.in_span(format!("span-{i}"), |_| {});
    }
}

async fn shutdown(pipeline: &TracerPipeline) -> bool {
    tokio::time::timeout(WAIT, pipeline.shutdown(Duration::from_secs(5)))
        .await
        .expect("shutdown is bounded")
}

#[tokio::test]
async fn a_batch_refused_with_503_twice_arrives_on_the_third_attempt() {
    let collector = OtlpCollector::start().await;
    collector.refuse_next(2, 503, None);
    let pipeline = pipeline(&collector, quick_retry());
    end_spans(&pipeline, 3);
    collector.wait_posts(1).await;
    // Spans ended while a batch is retried wait in the queue for the next one.
    end_spans(&pipeline, 2);
    let spans = collector.wait_spans(5).await;
    assert_eq!(spans.len(), 5, "{spans:?}");
    assert!(shutdown(&pipeline).await);
    assert_eq!(collector.spans().len(), 5, "each span exported once");
    assert!(collector.posts().len() >= 4, "{:?}", collector.posts());
}

#[tokio::test]
async fn four_refusals_still_leave_the_fifth_attempt() {
    let collector = OtlpCollector::start().await;
    collector.refuse_next(4, 502, None);
    let pipeline = pipeline(&collector, quick_retry());
    end_spans(&pipeline, 1);
    assert_eq!(collector.wait_spans(1).await.len(), 1);
    assert_eq!(collector.posts().len(), 5);
    assert!(shutdown(&pipeline).await);
}

#[tokio::test]
async fn connections_closed_without_an_answer_are_retried() {
    let collector = OtlpCollector::start().await;
    collector.refuse_next(2, 0, None);
    let pipeline = pipeline(&collector, quick_retry());
    end_spans(&pipeline, 1);
    assert_eq!(collector.wait_spans(1).await.len(), 1);
    assert_eq!(collector.posts().len(), 3);
    assert!(shutdown(&pipeline).await);
}

#[tokio::test]
async fn a_400_drops_the_batch_without_a_retry() {
    let collector = OtlpCollector::start().await;
    collector.refuse_next(1, 400, None);
    let pipeline = pipeline(&collector, quick_retry());
    end_spans(&pipeline, 2);
    collector.wait_posts(1).await;
    // Many times the first backoff: a retry would have come.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(collector.posts().len(), 1);
    assert!(collector.spans().is_empty());
    // The next batch goes out as usual.
    end_spans(&pipeline, 1);
    assert_eq!(collector.wait_spans(1).await.len(), 1);
    assert_eq!(collector.posts().len(), 2);
    assert!(shutdown(&pipeline).await);
}

#[tokio::test]
async fn a_batch_is_given_up_after_the_last_attempt() {
    let collector = OtlpCollector::start().await;
    collector.refuse_next(usize::MAX, 503, None);
    let retry = ExportRetry {
        max_attempts: 3,
        ..quick_retry()
    };
    let pipeline = pipeline(&collector, retry);
    end_spans(&pipeline, 1);
    collector.wait_posts(3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(collector.posts().len(), 3);
    // The collector is back: the next batch arrives, the given-up one does not.
    collector.refuse_next(0, 503, None);
    end_spans(&pipeline, 1);
    let spans = collector.wait_spans(1).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].name, "span-0");
    assert_eq!(collector.posts().len(), 4);
    assert!(shutdown(&pipeline).await);
}

#[tokio::test]
async fn retry_after_replaces_the_backoff_up_to_its_cap() {
    let collector = OtlpCollector::start().await;
    collector.refuse_next(1, 429, Some("3600"));
    let retry = ExportRetry {
        max_retry_after: Duration::from_millis(600),
        ..quick_retry()
    };
    let pipeline = pipeline(&collector, retry);
    end_spans(&pipeline, 1);
    collector.wait_posts(1).await;
    // The backoff alone would have retried after at most 20 ms.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(collector.posts().len(), 1, "retried before the Retry-After");
    // An hour is cut to the cap.
    assert_eq!(collector.wait_spans(1).await.len(), 1);
    assert_eq!(collector.posts().len(), 2);
    assert!(shutdown(&pipeline).await);
}

#[tokio::test]
async fn shutdown_cuts_a_retry_wait_short_and_tries_each_batch_once_more() {
    let collector = OtlpCollector::start().await;
    collector.refuse_next(usize::MAX, 503, None);
    let retry = ExportRetry {
        max_attempts: 10,
        budget: Duration::from_secs(600),
        first_backoff: Duration::from_secs(60),
        max_backoff: Duration::from_secs(60),
        max_retry_after: Duration::from_secs(60),
    };
    let pipeline = pipeline(&collector, retry);
    end_spans(&pipeline, 1);
    collector.wait_posts(1).await;
    // Queued behind the batch that waits for its retry.
    end_spans(&pipeline, 1);
    assert!(
        shutdown(&pipeline).await,
        "the export task finished within the flush limit"
    );
    // The waiting batch's last attempt, then the queued batch's only one.
    assert_eq!(collector.posts().len(), 3);
    assert!(collector.spans().is_empty());
}

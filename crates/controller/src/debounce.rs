//! The single "sync" key (controller.md §1): every relevant change fires a [`Trigger`]; [`Debouncer`] turns bursts
//! of triggers into one sync.
//!
//! A change that arrives while the controller has been idle for at least the debounce window is synced at once
//! (leading edge), so a lone route edit reaches the proxies without waiting out the window. Changes that follow a
//! sync within the window are coalesced: the next sync waits until the triggers have been quiet for the window,
//! but never longer than the maximum delay after the first of them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Cheap handle that asks for a sync.
#[derive(Clone, Debug, Default)]
pub struct Trigger(pub(crate) Arc<Notify>);

impl Trigger {
    pub fn fire(&self) {
        self.0.notify_one();
    }
}

/// Waits for triggers and decides when the next sync starts.
#[derive(Debug)]
pub struct Debouncer {
    trigger: Trigger,
    quiet: Duration,
    max_delay: Duration,
    last_sync: Option<Instant>,
}

impl Debouncer {
    pub fn new(trigger: Trigger, quiet: Duration, max_delay: Duration) -> Self {
        Self {
            trigger,
            quiet,
            max_delay,
            last_sync: None,
        }
    }

    /// Returns when a sync should start; the caller then runs it and comes back.
    pub async fn next_sync(&mut self) {
        let notify = &self.trigger.0;
        notify.notified().await;
        let first = Instant::now();
        let recently_synced = self
            .last_sync
            .is_some_and(|t| first.duration_since(t) < self.quiet);
        if recently_synced {
            let deadline = first + self.max_delay;
            loop {
                let quiet_until = (Instant::now() + self.quiet).min(deadline);
                match tokio::time::timeout_at(quiet_until, notify.notified()).await {
                    Ok(()) if Instant::now() < deadline => continue,
                    _ => break,
                }
            }
        }
        self.last_sync = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn first_change_after_idle_syncs_immediately() {
        let trigger = Trigger::default();
        let mut d = Debouncer::new(
            trigger.clone(),
            Duration::from_millis(50),
            Duration::from_millis(250),
        );
        trigger.fire();
        let start = Instant::now();
        d.next_sync().await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_after_a_sync_is_coalesced_until_quiet() {
        let trigger = Trigger::default();
        let mut d = Debouncer::new(
            trigger.clone(),
            Duration::from_millis(50),
            Duration::from_millis(250),
        );
        trigger.fire();
        d.next_sync().await;
        let start = Instant::now();
        let t = trigger.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                t.fire();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        d.next_sync().await;
        // last trigger at 40 ms, then 50 ms of quiet
        assert_eq!(start.elapsed(), Duration::from_millis(90));
    }

    #[tokio::test(start_paused = true)]
    async fn a_continuous_stream_is_cut_at_the_max_delay() {
        let trigger = Trigger::default();
        let mut d = Debouncer::new(
            trigger.clone(),
            Duration::from_millis(50),
            Duration::from_millis(250),
        );
        trigger.fire();
        d.next_sync().await;
        let start = Instant::now();
        let t = trigger.clone();
        let feeder = tokio::spawn(async move {
            loop {
                t.fire();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        d.next_sync().await;
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        feeder.abort();
    }
}

//! Graceful shutdown of the data listener's connections: on drain every connection is told to finish its
//! in-flight request and close (hyper's `graceful_shutdown`), and the drain waits until all have closed.
//!
//! hyper-util's `GracefulShutdown` does the same through a `watch` channel whose change future is polled, and its
//! waiter list locked, on every wake-up of every connection. Here a connection registers its waker once, on its
//! first poll, and afterwards only reads an atomic flag per wake-up; the drain wakes the registered tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use rustc_hash::FxHashMap;
use tokio::sync::Notify;

/// The drain signal of one listener. Cheap to clone.
#[derive(Clone, Default)]
pub struct Drain {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    draining: AtomicBool,
    next_id: AtomicU64,
    /// Open connections; the waker once the connection has been polled.
    open: Mutex<FxHashMap<u64, Option<Waker>>>,
    all_closed: Notify,
}

/// A connection counted as open by a [`Drain`]; dropping it counts the connection as closed.
pub struct Ticket {
    shared: Arc<Shared>,
    id: u64,
}

/// A connection future watched by a [`Drain`].
pub struct Watched<C> {
    conn: Pin<Box<C>>,
    graceful_shutdown: fn(Pin<&mut C>),
    ticket: Ticket,
    registered: bool,
    shutting_down: bool,
}

impl Drain {
    /// Counts a connection as open from now on, before its future exists (so that a drain waits for a connection
    /// that was accepted but not yet polled).
    pub fn ticket(&self) -> Ticket {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.open).insert(id, None);
        Ticket {
            shared: self.shared.clone(),
            id,
        }
    }

    /// Tells every open connection to finish and close, and waits until all have.
    pub async fn shutdown(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = lock(&self.shared.open).values().flatten().cloned().collect();
        for waker in wakers {
            waker.wake();
        }
        loop {
            let closed = self.shared.all_closed.notified();
            if lock(&self.shared.open).is_empty() {
                return;
            }
            closed.await;
        }
    }
}

impl Ticket {
    /// Watches the connection's future; `graceful_shutdown` is called on it once when a drain starts.
    pub fn watch<C: Future>(self, conn: C, graceful_shutdown: fn(Pin<&mut C>)) -> Watched<C> {
        Watched {
            conn: Box::pin(conn),
            graceful_shutdown,
            ticket: self,
            registered: false,
            shutting_down: false,
        }
    }
}

impl<C: Future> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        let shared = &this.ticket.shared;
        if !this.shutting_down {
            if !this.registered {
                // A connection stays on its task, so the first waker stays valid for its whole life.
                if let Some(slot) = lock(&shared.open).get_mut(&this.ticket.id) {
                    *slot = Some(cx.waker().clone());
                }
                this.registered = true;
            }
            // Read after registering: a drain that started in between has either seen the waker or set the flag.
            if shared.draining.load(Ordering::SeqCst) {
                this.shutting_down = true;
                (this.graceful_shutdown)(this.conn.as_mut());
            }
        }
        this.conn.as_mut().poll(cx)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = lock(&self.shared.open);
        open.remove(&self.id);
        if open.is_empty() {
            drop(open);
            self.shared.all_closed.notify_waiters();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A connection that ends once told to shut down.
    struct Conn {
        told: bool,
    }

    impl Future for Conn {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
            if self.told { Poll::Ready(()) } else { Poll::Pending }
        }
    }

    fn tell(conn: Pin<&mut Conn>) {
        conn.get_mut().told = true;
    }

    #[tokio::test]
    async fn drain_tells_polled_and_unpolled_connections_and_waits_for_them() {
        let drain = Drain::default();
        let polled = tokio::spawn(drain.ticket().watch(Conn { told: false }, tell));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Created but not polled until after the drain started.
        let unpolled = drain.ticket().watch(Conn { told: false }, tell);
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.shutdown().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "the drain waits for the unpolled connection"
        );
        tokio::time::timeout(Duration::from_secs(5), unpolled)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), polled)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_ticket_without_a_connection_is_waited_for_until_dropped() {
        let drain = Drain::default();
        let ticket = drain.ticket();
        let waiting = tokio::spawn({
            let drain = drain.clone();
            async move { drain.shutdown().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(ticket);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_drain_without_connections_returns_at_once() {
        tokio::time::timeout(Duration::from_secs(1), Drain::default().shutdown())
            .await
            .unwrap();
    }
}

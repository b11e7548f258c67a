//! Data-plane worker threads: one single-threaded tokio runtime per worker, each on its own thread. The data
//! listener accepts on the caller's runtime and hands every new connection to the next worker; from then on the
//! connection, its requests, and the backend connections they use are polled on that worker's thread alone.
//!
//! Why: on tokio's work-stealing runtime an idle worker is woken (a futex wake and a context switch) whenever
//! another one has queued work, although every request here is served by one task from start to end. A
//! single-threaded runtime per core never wakes another thread on its own: it sleeps in `epoll_wait` and runs
//! what became ready, like the event loop of nginx or haproxy. Backend pools keep one idle list per worker
//! ([`slot`]) so that a backend connection stays on the thread whose reactor it is registered with.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    /// 1-based index of the worker running on this thread; 0 on every other thread.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// One more than the largest worker index started in this process.
static SLOTS: AtomicUsize = AtomicUsize::new(1);

/// The pool slot of the current thread: 0 outside the workers, `1..=n` on worker `n`.
pub fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// How many slots [`slot`] can return in this process so far: 1 + the most workers started at once.
pub fn slots() -> usize {
    SLOTS.load(Ordering::Relaxed)
}

/// Running worker threads. Dropping this stops them; tasks still running on them are cancelled.
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    next: AtomicUsize,
}

impl Workers {
    /// Starts `n` (at least 1) worker threads.
    pub fn start(n: usize) -> io::Result<Self> {
        let n = n.max(1);
        SLOTS.fetch_max(n + 1, Ordering::Relaxed);
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let (stop, stopped) = oneshot::channel::<()>();
            stops.push(stop);
            std::thread::Builder::new()
                .name(format!("tunnelgate-data-{i}"))
                .spawn(move || {
                    SLOT.with(|s| s.set(i + 1));
                    // Ends when the sender is dropped or used; the runtime (and what still runs on it) goes with it.
                    let _ = runtime.block_on(stopped);
                })?;
        }
        Ok(Self {
            handles,
            stops,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `task` on the next worker, round robin.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[i].spawn(task);
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

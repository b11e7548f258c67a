//! The HTTP/2 connection pool of one upstream (routing.md §11): requests multiplex on a connection while the
//! backend's `SETTINGS_MAX_CONCURRENT_STREAMS` leaves room, and another connection is opened when every connection
//! of the pool is at that limit, up to [`MAX_CONNECTIONS`].
//!
//! Each connection is a hyper `client::conn::http2` connection driven by a task of its own (HTTP/2 has to answer
//! PINGs and SETTINGS whether or not a request is waiting). The pool counts its own streams in flight per
//! connection: a stream is taken when a request is given a connection and given back when the response body ends
//! or is dropped. The peer's limit is read from hyper each time the driver task runs, which it does at least once
//! per request sent.
//!
//! A new connection starts with a send limit of 0, so that no stream is opened before the peer's first SETTINGS
//! have said how many it allows; until then the connection takes only the request that dialled it, and requests
//! arriving meanwhile wait for the SETTINGS (at most [`SETTINGS_WAIT`]) instead of piling onto a connection whose
//! limit is not known yet or dialling connections that are not needed.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::Notify;

use super::{BackendStream, Connector, SendError};
use crate::body::ProxyBody;

/// Connections one pool opens at most. With the limits backends usually advertise (100 to 250 streams) that is
/// thousands of concurrent requests per upstream; beyond it, requests queue on the least loaded connection for a
/// stream to become free, as they do on a single HTTP/2 connection.
pub const MAX_CONNECTIONS: usize = 64;
/// How long requests wait for a new connection's first SETTINGS before treating it as full.
pub const SETTINGS_WAIT: Duration = Duration::from_secs(2);
/// A PING goes out after this long without frames from the backend...
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ...and the connection closes if its answer takes longer than this.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(15);
/// Requests sent again on another connection when the one they were given closed before sending them.
const RETRIES: usize = 3;

/// The pool of one upstream. Shared by the requests using it and (weakly) by its connections' driver tasks.
pub struct Http2Pool {
    connector: Connector,
    builder: http2::Builder<TokioExecutor>,
    idle_timeout: Duration,
    state: Mutex<PoolState>,
    /// Woken when a dial ends, a connection learns its peer's limit, or a connection closes.
    changed: Notify,
    /// Origin of the connections' `last_used` stamps.
    epoch: Instant,
}

#[derive(Default)]
struct PoolState {
    conns: Vec<Arc<Http2Conn>>,
    dialing: usize,
}

/// One HTTP/2 connection of the pool.
struct Http2Conn {
    sender: http2::SendRequest<ProxyBody>,
    /// Streams the pool gave out on this connection and that have not ended; raised under the pool lock only.
    in_flight: AtomicUsize,
    /// The peer's `SETTINGS_MAX_CONCURRENT_STREAMS`; 0 until its first SETTINGS arrived.
    limit: AtomicUsize,
    opened: Instant,
    /// Milliseconds after the pool's epoch when the last stream ended.
    last_used: AtomicU64,
    closed: AtomicBool,
    /// Signalled when the pool is dropped (its upstream left the table): the connection closes once its last
    /// stream ended.
    orphaned: Notify,
}

/// A stream taken on a connection, given back on drop.
struct StreamSlot {
    conn: Arc<Http2Conn>,
    pool: Arc<Http2Pool>,
}

/// What a request does next, decided under the pool lock.
enum Choice {
    Use(Arc<Http2Conn>),
    Dial,
    /// Wait for a change, or until the instant when a new connection's SETTINGS are no longer awaited.
    Wait(Option<Instant>),
}

/// A backend response body that holds its stream on the connection until it ends or is dropped.
pub struct Http2Body {
    body: Incoming,
    slot: Option<StreamSlot>,
}

impl Http2Pool {
    pub fn new(connector: Connector, idle_timeout: Duration) -> Arc<Self> {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .initial_max_send_streams(0)
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        Arc::new(Self {
            connector,
            builder,
            idle_timeout,
            state: Mutex::new(PoolState::default()),
            changed: Notify::new(),
            epoch: Instant::now(),
        })
    }

    /// Open connections of the pool.
    #[cfg(test)]
    pub fn connections(&self) -> usize {
        self.lock().conns.len()
    }

    /// Sends `req` (absolute URI) on a connection with a free stream, on a new connection when every one is at
    /// its peer's limit, or on the least loaded one when the pool has [`MAX_CONNECTIONS`].
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<ProxyBody>,
    ) -> Result<Response<Http2Body>, SendError> {
        let mut retries = 0;
        loop {
            let slot = self.checkout().await?;
            let mut sender = slot.conn.sender.clone();
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    return Ok(resp.map(|body| Http2Body {
                        body,
                        slot: Some(slot),
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if retries < RETRIES => {
                        // The connection went away before the request left: it is of no more use.
                        slot.conn.closed.store(true, Ordering::Relaxed);
                        retries += 1;
                        req = unsent;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    async fn checkout(self: &Arc<Self>) -> Result<StreamSlot, SendError> {
        let mut waited_for_dial = false;
        loop {
            let mut changed = pin!(self.changed.notified());
            // Registered before the state is read, so that a change between the read and the wait is not missed.
            changed.as_mut().enable();
            match self.choose(&mut waited_for_dial) {
                Choice::Use(conn) => {
                    return Ok(StreamSlot {
                        conn,
                        pool: self.clone(),
                    });
                }
                Choice::Dial => return self.dial().await,
                Choice::Wait(None) => changed.await,
                Choice::Wait(Some(until)) => {
                    let _ = tokio::time::timeout_at(until.into(), changed).await;
                }
            }
        }
    }

    fn choose(&self, waited_for_dial: &mut bool) -> Choice {
        let now = Instant::now();
        let mut state = self.lock();
        state.conns.retain(|conn| conn.is_open());
        let mut settling = None;
        let mut best: Option<(&Arc<Http2Conn>, usize)> = None;
        let mut least_loaded: Option<(&Arc<Http2Conn>, usize)> = None;
        for conn in &state.conns {
            let in_flight = conn.in_flight.load(Ordering::Relaxed);
            let limit = match conn.limit.load(Ordering::Relaxed) {
                0 => {
                    // The peer's SETTINGS have not arrived: one stream (the dialler's), then wait for them.
                    let until = conn.opened + SETTINGS_WAIT;
                    if now >= until {
                        0
                    } else {
                        settling = Some(settling.map_or(until, |s: Instant| s.min(until)));
                        1
                    }
                }
                limit => limit,
            };
            if in_flight < limit && best.is_none_or(|(_, b)| in_flight < b) {
                best = Some((conn, in_flight));
            }
            if least_loaded.is_none_or(|(_, l)| in_flight < l) {
                least_loaded = Some((conn, in_flight));
            }
        }
        if let Some((conn, _)) = best {
            conn.in_flight.fetch_add(1, Ordering::Relaxed);
            return Choice::Use(conn.clone());
        }
        if settling.is_some() {
            return Choice::Wait(settling);
        }
        // A dial in progress is waited for once: if it fails, the waiters dial on their own rather than one after
        // another behind each other's connect timeouts.
        if state.dialing > 0 && !*waited_for_dial {
            *waited_for_dial = true;
            return Choice::Wait(None);
        }
        if state.conns.len() + state.dialing < MAX_CONNECTIONS {
            state.dialing += 1;
            return Choice::Dial;
        }
        match least_loaded {
            // At the bound: h2 queues the stream until the peer lets it open.
            Some((conn, _)) => {
                conn.in_flight.fetch_add(1, Ordering::Relaxed);
                Choice::Use(conn.clone())
            }
            None => Choice::Wait(None),
        }
    }

    /// Opens a connection (the caller counted it in `dialing`) and takes its first stream.
    async fn dial(self: &Arc<Self>) -> Result<StreamSlot, SendError> {
        let mut dialing = DialGuard {
            pool: self,
            done: false,
        };
        // Boxed: the connect future (TCP, TLS) is over a kilobyte.
        let opened = Box::pin(self.open()).await;
        let mut state = self.lock();
        dialing.done = true;
        state.dialing -= 1;
        let result = opened.map(|conn| {
            state.conns.push(conn.clone());
            StreamSlot {
                conn,
                pool: self.clone(),
            }
        });
        drop(state);
        self.changed.notify_waiters();
        result
    }

    async fn open(self: &Arc<Self>) -> Result<Arc<Http2Conn>, SendError> {
        let stream = self.connector.connect().await.map_err(SendError::Connect)?;
        let (sender, connection) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(SendError::Http)?;
        let conn = Arc::new(Http2Conn {
            sender,
            in_flight: AtomicUsize::new(1),
            limit: AtomicUsize::new(0),
            opened: Instant::now(),
            last_used: AtomicU64::new(self.now_ms()),
            closed: AtomicBool::new(false),
            orphaned: Notify::new(),
        });
        tokio::spawn(drive(connection, conn.clone(), Arc::downgrade(self)));
        Ok(conn)
    }

    /// Closes `conn` if no stream is in flight on it and none was for the idle timeout (or the pool is gone).
    fn retire_if_idle(&self, conn: &Arc<Http2Conn>) -> bool {
        let mut state = self.lock();
        let idle_ms = self
            .now_ms()
            .saturating_sub(conn.last_used.load(Ordering::Relaxed));
        if conn.in_flight.load(Ordering::Relaxed) > 0 || Duration::from_millis(idle_ms) < self.idle_timeout {
            return false;
        }
        state.conns.retain(|c| !Arc::ptr_eq(c, conn));
        true
    }

    fn remove(&self, conn: &Arc<Http2Conn>) {
        self.lock().conns.retain(|c| !Arc::ptr_eq(c, conn));
        self.changed.notify_waiters();
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Http2Pool {
    fn drop(&mut self) {
        for conn in &self.lock().conns {
            conn.orphaned.notify_one();
        }
    }
}

impl Http2Conn {
    fn is_open(&self) -> bool {
        !self.closed.load(Ordering::Relaxed) && !self.sender.is_closed()
    }
}

/// Gives the dial slot back when the request that dialled went away mid-dial.
struct DialGuard<'a> {
    pool: &'a Http2Pool,
    done: bool,
}

impl Drop for DialGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.pool.lock().dialing -= 1;
            self.pool.changed.notify_waiters();
        }
    }
}

/// Drives one connection until it fails, the backend closes it, or it has been idle for the pool's idle timeout;
/// publishes the peer's stream limit each time hyper ran.
async fn drive(
    mut connection: http2::Connection<TokioIo<BackendStream>, ProxyBody, TokioExecutor>,
    conn: Arc<Http2Conn>,
    pool: Weak<Http2Pool>,
) {
    let idle_timeout = pool.upgrade().map_or(Duration::ZERO, |p| p.idle_timeout);
    // A quarter of the timeout, as the HTTP/1.1 sweeper: idle connections close between 1 and 1.25 times the
    // timeout after their last stream.
    let mut idle_check = tokio::time::interval((idle_timeout / 4).max(Duration::from_millis(10)));
    idle_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    idle_check.reset();
    let mut orphaned = pin!(conn.orphaned.notified());
    let mut pool_gone = false;
    let ended = poll_fn(|cx| {
        let polled = Pin::new(&mut connection).poll(cx);
        let limit = connection.current_max_send_streams();
        if conn.limit.swap(limit, Ordering::Relaxed) != limit
            && let Some(pool) = pool.upgrade()
        {
            pool.changed.notify_waiters();
        }
        if let Poll::Ready(result) = polled {
            return Poll::Ready(result);
        }
        if !pool_gone && orphaned.as_mut().poll(cx).is_ready() {
            pool_gone = true;
        }
        if pool_gone && conn.in_flight.load(Ordering::Relaxed) == 0 {
            return Poll::Ready(Ok(()));
        }
        while idle_check.poll_tick(cx).is_ready() {
            let retired = match pool.upgrade() {
                Some(pool) => pool.retire_if_idle(&conn),
                // The upstream left the table: close once the last stream ended.
                None => conn.in_flight.load(Ordering::Relaxed) == 0,
            };
            if retired {
                return Poll::Ready(Ok(()));
            }
        }
        Poll::Pending
    })
    .await;
    if let Err(e) = ended {
        tracing::debug!(error = %e, "backend http2 connection failed");
    }
    conn.closed.store(true, Ordering::Relaxed);
    if let Some(pool) = pool.upgrade() {
        pool.remove(&conn);
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.conn.last_used.store(self.pool.now_ms(), Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Body for Http2Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => this.slot = None,
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.slot = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;

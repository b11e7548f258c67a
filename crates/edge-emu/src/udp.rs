//! A UDP socket wrapper with drop switches (tunnel.md §13.5): `drop_udp` blackholes all QUIC traffic,
//! `blackhole` drops one peer. Outgoing datagrams are silently discarded, so the client sees silence and
//! its idle or handshake timeout fires, as with a real network blackhole.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// Shared drop switches.
#[derive(Debug, Default)]
pub struct DropSwitch {
    all: AtomicBool,
    peers: Mutex<HashSet<SocketAddr>>,
}

impl DropSwitch {
    pub fn set_all(&self, on: bool) {
        self.all.store(on, Ordering::SeqCst);
    }

    pub fn blackhole(&self, peer: SocketAddr) {
        if let Ok(mut p) = self.peers.lock() {
            p.insert(peer);
        }
    }

    pub fn is_dropped(&self, peer: &SocketAddr) -> bool {
        self.all.load(Ordering::SeqCst) || self.peers.lock().is_ok_and(|p| p.contains(peer))
    }
}

/// The wrapped socket.
pub struct DroppingSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    switch: Arc<DropSwitch>,
}

impl DroppingSocket {
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, switch: Arc<DropSwitch>) -> Self {
        Self { inner, switch }
    }
}

impl fmt::Debug for DroppingSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DroppingSocket")
    }
}

impl AsyncUdpSocket for DroppingSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        if self.switch.is_dropped(&transmit.destination) {
            return Ok(());
        }
        self.inner.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

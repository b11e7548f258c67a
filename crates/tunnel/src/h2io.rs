//! Byte-stream adapters over HTTP/2 streams: the control stream runs capnp RPC over request/response
//! DATA (tunnel.md §7.3), and WebSocket streams splice raw bytes (§7.6). Flow-control capacity is
//! released as DATA is consumed and reserved before each write.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

fn io_err(e: h2::Error) -> std::io::Error {
    std::io::Error::other(e)
}

/// Reads the DATA of an h2 stream.
pub struct H2Read {
    recv: h2::RecvStream,
    pending: Bytes,
}

impl H2Read {
    pub fn new(recv: h2::RecvStream) -> Self {
        Self {
            recv,
            pending: Bytes::new(),
        }
    }
}

impl AsyncRead for H2Read {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

/// Writes DATA on an h2 stream; shutdown sends END_STREAM.
pub struct H2Write {
    send: h2::SendStream<Bytes>,
    ended: bool,
}

impl H2Write {
    pub fn new(send: h2::SendStream<Bytes>) -> Self {
        Self { send, ended: false }
    }
}

impl AsyncWrite for H2Write {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.send.reserve_capacity(buf.len());
        let n = loop {
            let cap = self.send.capacity();
            if cap > 0 {
                break cap;
            }
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(io_err(e))),
                None => return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            }
        };
        let n = n.min(buf.len());
        self.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(io_err)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.ended {
            self.ended = true;
            self.send.send_data(Bytes::new(), true).map_err(io_err)?;
        }
        Poll::Ready(Ok(()))
    }
}

/// Sends `data` respecting flow control.
pub async fn send_all(send: &mut h2::SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let cap = loop {
            let cap = send.capacity();
            if cap > 0 {
                break cap;
            }
            match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(h2::Error::from(h2::Reason::CANCEL)),
            }
        };
        let chunk = data.split_to(cap.min(data.len()));
        send.send_data(chunk, false)?;
    }
    Ok(())
}

/// A request or response body read from an h2 stream, releasing capacity as it goes, with trailers.
pub fn body(recv: h2::RecvStream) -> crate::origin::OriginBody {
    use http_body_util::BodyExt;
    let stream = futures::stream::unfold((recv, false), |(mut recv, done)| async move {
        if done {
            return None;
        }
        match std::future::poll_fn(|cx| recv.poll_data(cx)).await {
            Some(Ok(data)) => {
                let _ = recv.flow_control().release_capacity(data.len());
                Some((Ok(http_body::Frame::data(data)), (recv, false)))
            }
            Some(Err(e)) => Some((Err(Box::new(e) as crate::origin::BoxError), (recv, true))),
            None => match std::future::poll_fn(|cx| recv.poll_trailers(cx)).await {
                Ok(Some(t)) => Some((Ok(http_body::Frame::trailers(t)), (recv, true))),
                Ok(None) => None,
                Err(e) => Some((Err(Box::new(e) as crate::origin::BoxError), (recv, true))),
            },
        }
    });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}

/// Streams `body` to an h2 stream: DATA, then trailers or END_STREAM. An error resets the stream.
pub async fn send_body(
    send: &mut h2::SendStream<Bytes>,
    mut body: crate::origin::OriginBody,
) -> Result<(), h2::Error> {
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => match f.into_data() {
                Ok(data) => send_all(send, data).await?,
                Err(f) => {
                    if let Ok(t) = f.into_trailers() {
                        return send.send_trailers(t);
                    }
                }
            },
            Err(_) => {
                send.send_reset(h2::Reason::INTERNAL_ERROR);
                return Ok(());
            }
        }
    }
    send.send_data(Bytes::new(), true)
}

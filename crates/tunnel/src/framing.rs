//! Cap'n Proto stream framing (unpacked): `u32le(segments − 1)`, `u32le` word counts, padding to 8 bytes,
//! then the segments. Used for RPC messages on control/RPC streams and for `ConnectRequest`/`ConnectResponse`
//! at the head of data streams.
//!
//! The decoder never consumes bytes past the end of one message, so that the bytes after a
//! `ConnectRequest` (the request body) stay in the caller's buffer.

use bytes::{Buf, BytesMut};
use capnp::message::{Reader, ReaderOptions};
use capnp::serialize::OwnedSegments;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest framed message we accept. Registration and request-head messages are a few KiB; this bounds
/// memory use against a hostile peer.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
const MAX_SEGMENTS: usize = 512;

/// A framing or decoding failure.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("capnp message has too many segments ({0})")]
    TooManySegments(usize),
    #[error("capnp message of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("stream ended inside a capnp message")]
    Truncated,
    #[error("stream ended before a capnp message started")]
    Closed,
    #[error("capnp decode: {0}")]
    Capnp(#[from] capnp::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Total length of the first framed message in `buf`, or `None` if more bytes are needed to tell.
pub fn framed_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let segments = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize + 1;
    if segments > MAX_SEGMENTS {
        return Err(FrameError::TooManySegments(segments));
    }
    // Header: count word + one u32 per segment, padded to a multiple of 8 bytes.
    let header = (4 + 4 * segments).div_ceil(8) * 8;
    if buf.len() < 4 + 4 * segments {
        return Ok(None);
    }
    let mut words: usize = 0;
    for i in 0..segments {
        let at = 4 + 4 * i;
        words = words
            .saturating_add(u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize);
    }
    let total = header.saturating_add(words.saturating_mul(8));
    if total > MAX_MESSAGE_BYTES {
        return Err(FrameError::TooLarge(total));
    }
    Ok(Some(total))
}

/// Splits one complete message off the front of `buf`, if it holds one.
pub fn try_decode(buf: &mut BytesMut) -> Result<Option<Reader<OwnedSegments>>, FrameError> {
    let Some(len) = framed_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < len {
        return Ok(None);
    }
    let frame = buf.split_to(len);
    let reader = capnp::serialize::read_message(&mut frame.chunk(), ReaderOptions::new())?;
    Ok(Some(reader))
}

/// Reads one message from `io`, buffering in `buf`. Bytes after the message remain in `buf`.
pub async fn read_message<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
) -> Result<Reader<OwnedSegments>, FrameError> {
    loop {
        if let Some(msg) = try_decode(buf)? {
            return Ok(msg);
        }
        buf.reserve(4096);
        let n = io.read_buf(buf).await?;
        if n == 0 {
            return Err(if buf.is_empty() {
                FrameError::Closed
            } else {
                FrameError::Truncated
            });
        }
    }
}

/// Serialises a built message into its framed bytes.
pub fn encode<A: capnp::message::Allocator>(message: &capnp::message::Builder<A>) -> Vec<u8> {
    capnp::serialize::write_message_to_words(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tunnel_capnp::metadata;

    fn sample() -> Vec<u8> {
        let mut m = capnp::message::Builder::new_default();
        let mut md = m.init_root::<metadata::Builder>();
        md.set_key("HttpMethod");
        md.set_val("GET");
        encode(&m)
    }

    #[test]
    fn decodes_exactly_one_message_and_keeps_the_rest() {
        let mut bytes = sample();
        bytes.extend_from_slice(b"body bytes");
        let mut buf = BytesMut::from(&bytes[..]);
        let msg = try_decode(&mut buf).unwrap().unwrap();
        let md = msg.get_root::<metadata::Reader>().unwrap();
        assert_eq!(md.get_key().unwrap().to_str().unwrap(), "HttpMethod");
        assert_eq!(&buf[..], b"body bytes");
    }

    #[test]
    fn waits_for_more_bytes_on_every_prefix() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert!(try_decode(&mut buf).unwrap().is_none(), "prefix {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn rejects_absurd_headers() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0, 0][..]);
        assert!(matches!(
            try_decode(&mut buf),
            Err(FrameError::TooManySegments(_))
        ));
        let mut buf = BytesMut::from(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f][..]);
        assert!(matches!(try_decode(&mut buf), Err(FrameError::TooLarge(_))));
    }

    #[tokio::test]
    async fn read_message_reports_truncation() {
        let bytes = sample();
        let mut io = &bytes[..bytes.len() - 3];
        let mut buf = BytesMut::new();
        assert!(matches!(
            read_message(&mut io, &mut buf).await,
            Err(FrameError::Truncated)
        ));
        let mut empty: &[u8] = &[];
        assert!(matches!(
            read_message(&mut empty, &mut BytesMut::new()).await,
            Err(FrameError::Closed)
        ));
    }
}

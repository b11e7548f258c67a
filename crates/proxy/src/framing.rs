//! Request framing guard for the plain HTTP/1 listener: a request carrying both `Content-Length` and
//! `Transfer-Encoding` is answered 400 and its connection closed (issue 8; RFC 9112 §6.1 allows a server to
//! reject such a message, and rejecting is the only choice that leaves no room for request smuggling through a
//! front end that frames it the other way).
//!
//! hyper frames such a request by `Transfer-Encoding`, drops `Content-Length` from the header map and closes the
//! connection afterwards, so the service never learns that the message was ambiguous. The guard therefore sits
//! between the socket and hyper and follows the request byte stream: it finds the end of each request head,
//! looks at the framing headers, and then skips the body by the same rules hyper uses (`Content-Length`, or the
//! chunked coding including trailers) to reach the next head on a keep-alive connection.
//!
//! When a head has both headers, the guard replaces the head's final line feed with a NUL byte before hyper
//! sees it. hyper's parser then fails on that head and hyper itself answers `400 Bad Request` and closes the
//! connection, exactly as for any other malformed head, so no request is dispatched and nothing reaches a
//! backend.
//!
//! The guard stops looking (and only passes bytes through) where the stream stops being HTTP/1 requests it can
//! follow: after an HTTP/2 preface, after a request with `Upgrade` or the `CONNECT` method (the bytes after a
//! successful upgrade are opaque, so a declined upgrade also ends the checks on that connection), and when the
//! bytes are malformed in a way hyper rejects on its own. The cost is a scan of each request head for line
//! ends and of the header names, with no copy unless a head arrives split over several reads.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// hyper's default HTTP/1 read buffer limit: a head longer than this is answered 431 by hyper itself.
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// An accepted connection with the request framing check on its read side.
pub(crate) struct FramingGuard<S> {
    inner: S,
    tracker: Tracker,
}

impl<S> FramingGuard<S> {
    pub(crate) fn new(inner: S) -> Self {
        FramingGuard {
            inner,
            tracker: Tracker::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled
            && this.tracker.inspects()
        {
            let fresh = &mut buf.filled_mut()[before..];
            if let Some(at) = this.tracker.feed(fresh) {
                tracing::debug!("request with both Content-Length and Transfer-Encoding refused with 400");
                fresh[at] = 0;
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        crate::coalesce::poll_write_vectored(Pin::new(&mut self.inner), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Where the inbound byte stream is, message by message.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Between requests or inside a request head (the part seen so far is in `Tracker::head`).
    #[default]
    Head,
    /// Inside a `Content-Length` body with this many bytes left.
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// No longer inspecting (see the module docs for when).
    Off,
}

/// Position inside a chunked body (RFC 9112 §7.1), following hyper's decoder: CR LF line ends are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size; `digits` counts them so an empty size is refused.
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace after the size.
    SizeSpace {
        size: u64,
    },
    /// A chunk extension, up to its CR.
    Extension {
        size: u64,
    },
    /// The LF after a size line's CR.
    SizeLf {
        size: u64,
    },
    /// Chunk data with this many bytes left.
    Data(u64),
    /// The CR and then the LF after chunk data.
    DataCr,
    DataLf,
    /// Start of a trailer line or of the final empty line.
    TrailerStart,
    /// Inside a trailer field line, up to its LF.
    TrailerLine,
    /// The LF of the final empty line.
    EndLf,
}

#[derive(Debug, Default)]
struct Tracker {
    position: Position,
    /// The start of a request head that arrived without its end, bounded by `MAX_HEAD_BYTES`.
    head: Vec<u8>,
}

/// What a complete request head says about the bytes after it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Both `Content-Length` and `Transfer-Encoding`: refuse.
    Ambiguous,
    /// The next position in the stream.
    Next(Position),
}

impl Tracker {
    fn inspects(&self) -> bool {
        self.position != Position::Off
    }

    /// Follows `data`, the bytes just read. Returns the index in `data` of the last byte of a head that must
    /// be refused; inspection is off from then on.
    fn feed(&mut self, data: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < data.len() {
            match self.position {
                Position::Off => return None,
                Position::Head => {
                    let rest = &data[at..];
                    if self.head.is_empty() {
                        // httparse skips empty lines before a request line; so does the guard.
                        let blank = rest.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                        at += blank;
                        if blank == rest.len() {
                            return None;
                        }
                    }
                    let rest = &data[at..];
                    // A head that starts in this read (the usual case) is found and judged in one pass.
                    let found = if self.head.is_empty() {
                        scan_head(rest)
                    } else {
                        head_end(&self.head, rest).map(|end| {
                            self.head.extend_from_slice(&rest[..=end]);
                            let verdict = judge_head(&self.head);
                            self.head = Vec::new();
                            (end, verdict)
                        })
                    };
                    match found {
                        Some((end, verdict)) => {
                            match verdict {
                                Verdict::Ambiguous => {
                                    self.position = Position::Off;
                                    return Some(at + end);
                                }
                                Verdict::Next(next) => self.position = next,
                            }
                            at += end + 1;
                        }
                        None => {
                            if self.head.len() + rest.len() > MAX_HEAD_BYTES {
                                // hyper answers 431 for this head; nothing more to follow.
                                self.head = Vec::new();
                                self.position = Position::Off;
                            } else {
                                self.head.extend_from_slice(rest);
                            }
                            return None;
                        }
                    }
                }
                Position::Body(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len() - at);
                    at += take;
                    let left = left - take as u64;
                    self.position = if left == 0 {
                        Position::Head
                    } else {
                        Position::Body(left)
                    };
                }
                Position::Chunked(Chunk::Data(left)) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len() - at);
                    at += take;
                    let left = left - take as u64;
                    self.position = Position::Chunked(if left == 0 {
                        Chunk::DataCr
                    } else {
                        Chunk::Data(left)
                    });
                }
                Position::Chunked(state) => {
                    self.position = step_chunked(state, data[at]);
                    at += 1;
                }
            }
        }
        None
    }
}

/// Index in `data` of the LF that ends a request head whose first part (`seen`) came in earlier reads: the LF
/// of an empty line, which httparse accepts as CR LF or a bare LF.
fn head_end(seen: &[u8], data: &[u8]) -> Option<usize> {
    let before = |i: usize, back: usize| -> Option<u8> {
        if i >= back {
            Some(data[i - back])
        } else {
            let j = seen.len().checked_sub(back - i)?;
            Some(seen[j])
        }
    };
    memchr::memchr_iter(b'\n', data).find(|&i| match before(i, 1) {
        Some(b'\n') => true,
        Some(b'\r') => before(i, 2) == Some(b'\n'),
        _ => false,
    })
}

/// Reads the framing of one complete head (request line to the empty line, leading empty lines removed).
fn judge_head(head: &[u8]) -> Verdict {
    let mut lines = head.split(|b| *b == b'\n');
    let Some(request_line) = lines.next() else {
        return Verdict::Next(Position::Off);
    };
    if stops_inspection(request_line) {
        return Verdict::Next(Position::Off);
    }
    let mut fields = FramingFields::default();
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if !fields.read(line) {
            return Verdict::Next(Position::Off);
        }
    }
    fields.verdict()
}

/// [`head_end`] and [`judge_head`] in one pass over a head that starts at `data[0]` (leading empty lines
/// removed): the index of its final line feed and the verdict, or `None` when the head does not end in `data`.
/// Line ends are found with `memchr` and only field names of a framing header's length are compared, so the
/// common head costs a few instructions per line rather than per byte. A verdict that stops inspection may come
/// before the end is found; the index is then that of the last line feed read (nothing after it is followed).
fn scan_head(data: &[u8]) -> Option<(usize, Verdict)> {
    let mut lf = memchr::memchr(b'\n', data)?;
    if stops_inspection(&data[..lf]) {
        return Some((lf, Verdict::Next(Position::Off)));
    }
    let mut fields = FramingFields::default();
    loop {
        let start = lf + 1;
        lf = start + memchr::memchr(b'\n', &data[start..])?;
        let line = &data[start..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Some((lf, fields.verdict()));
        }
        if !fields.read(line) {
            return Some((lf, Verdict::Next(Position::Off)));
        }
    }
}

/// An HTTP/2 preface or a `CONNECT` request: the bytes after this head are not HTTP/1 requests.
fn stops_inspection(request_line: &[u8]) -> bool {
    request_line.starts_with(b"PRI * HTTP/2.0") || request_line.starts_with(b"CONNECT ")
}

/// The framing fields of one head, read line by line.
#[derive(Default)]
struct FramingFields {
    content_length: Option<Option<u64>>,
    transfer_encoding: Option<bool>,
    upgrade: bool,
}

impl FramingFields {
    /// Reads one field line (no line end). `false` when it is not a field line (hyper refuses the head).
    fn read(&mut self, line: &[u8]) -> bool {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return false;
        };
        let name = &line[..colon];
        // Lengths first: most fields are none of the three, and the length rules them out.
        match name.len() {
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let len = content_length_value(trim(&line[colon + 1..]));
                self.content_length = Some(match self.content_length {
                    Some(prev) if prev != len => None,
                    _ => len,
                });
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                let value = trim(&line[colon + 1..]);
                let last = value.rsplit(|b| *b == b',').next().map(trim);
                self.transfer_encoding = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => self.upgrade = true,
            _ => {}
        }
        true
    }

    fn verdict(self) -> Verdict {
        if self.content_length.is_some() && self.transfer_encoding.is_some() {
            return Verdict::Ambiguous;
        }
        if self.upgrade {
            return Verdict::Next(Position::Off);
        }
        Verdict::Next(match (self.transfer_encoding, self.content_length) {
            (Some(true), _) => Position::Chunked(Chunk::Size { size: 0, digits: 0 }),
            // Not chunked last, or an invalid or conflicting length: hyper refuses the request.
            (Some(false), _) | (_, Some(None)) => Position::Off,
            (None, Some(Some(0))) | (None, None) => Position::Head,
            (None, Some(Some(len))) => Position::Body(len),
        })
    }
}

/// A `Content-Length` value as hyper accepts it: decimal digits, or a list of equal such values.
fn content_length_value(value: &[u8]) -> Option<u64> {
    let mut result = None;
    for part in value.split(|b| *b == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let len = part.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        match result {
            Some(prev) if prev != len => return None,
            _ => result = Some(len),
        }
    }
    result
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &bytes[start..end.max(start)]
}

fn step_chunked(state: Chunk, byte: u8) -> Position {
    let next = match state {
        Chunk::Size { size, digits } => match byte {
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                let digit = match byte {
                    b'0'..=b'9' => byte - b'0',
                    b'a'..=b'f' => byte - b'a' + 10,
                    _ => byte - b'A' + 10,
                };
                match size.checked_mul(16) {
                    Some(s) if digits < 16 => Chunk::Size {
                        size: s + u64::from(digit),
                        digits: digits + 1,
                    },
                    _ => return Position::Off,
                }
            }
            _ if digits == 0 => return Position::Off,
            b'\r' => Chunk::SizeLf { size },
            b' ' | b'\t' => Chunk::SizeSpace { size },
            b';' => Chunk::Extension { size },
            _ => return Position::Off,
        },
        Chunk::SizeSpace { size } => match byte {
            b' ' | b'\t' => Chunk::SizeSpace { size },
            b';' => Chunk::Extension { size },
            b'\r' => Chunk::SizeLf { size },
            _ => return Position::Off,
        },
        Chunk::Extension { size } => match byte {
            b'\r' => Chunk::SizeLf { size },
            b'\n' => return Position::Off,
            _ => Chunk::Extension { size },
        },
        Chunk::SizeLf { size } => match byte {
            b'\n' if size == 0 => Chunk::TrailerStart,
            b'\n' => Chunk::Data(size),
            _ => return Position::Off,
        },
        Chunk::DataCr => match byte {
            b'\r' => Chunk::DataLf,
            _ => return Position::Off,
        },
        Chunk::DataLf => match byte {
            b'\n' => Chunk::Size { size: 0, digits: 0 },
            _ => return Position::Off,
        },
        Chunk::TrailerStart => match byte {
            b'\r' => Chunk::EndLf,
            b'\n' => return Position::Head,
            _ => Chunk::TrailerLine,
        },
        Chunk::TrailerLine => match byte {
            b'\n' => Chunk::TrailerStart,
            _ => Chunk::TrailerLine,
        },
        Chunk::EndLf => match byte {
            b'\n' => return Position::Head,
            _ => return Position::Off,
        },
        // Data is skipped in bulk by `Tracker::feed`.
        Chunk::Data(left) => Chunk::Data(left),
    };
    Position::Chunked(next)
}

#[cfg(test)]
mod tests;

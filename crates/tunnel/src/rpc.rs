//! A minimal level-0 Cap'n Proto RPC (tunnel.md §4, §6, §12): Bootstrap, Call, Return, Finish, Release,
//! Abort, Unimplemented, plus reflecting a sender-loopback Disembargo.
//!
//! Every session we take part in is strictly request/response with one bootstrap capability, so a full
//! capability runtime (`capnp-rpc`, which is `!Send`) is not needed; its generated `rpc.capnp` types are
//! used for the message layout. Message builders here are sans-IO; [`RpcStream`] moves them over any
//! byte stream.

use bytes::BytesMut;
use capnp::message::Reader;
use capnp::serialize::OwnedSegments;
use capnp_rpc::rpc_capnp::{cap_descriptor, disembargo, message, message_target, return_};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::framing::{self, FrameError};

/// `RegistrationServer` (served by the edge on the control stream).
pub const REGISTRATION_SERVER_ID: u64 = 0xf71695ec7fe85497;
/// `CloudflaredServer` (served by the connector on edge-initiated RPC streams).
pub const CLOUDFLARED_SERVER_ID: u64 = 0xf548cef9dea2a4a1;
/// `SessionManager`, a superclass of `CloudflaredServer`.
pub const SESSION_MANAGER_ID: u64 = 0x839445a59fb01686;
/// `ConfigurationManager`, a superclass of `CloudflaredServer`.
pub const CONFIGURATION_MANAGER_ID: u64 = 0xb48edfbdaa25db04;

/// The capability a call is addressed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    ImportedCap(u32),
    PromisedAnswer(u32),
}

/// An RPC-level failure.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("capnp: {0}")]
    Capnp(#[from] capnp::Error),
    #[error("peer aborted the RPC session: {0}")]
    Aborted(String),
    #[error("remote exception: {0}")]
    Exception(String),
    #[error("call was canceled by the peer")]
    Canceled,
    #[error("peer does not implement a message we sent")]
    Unimplemented,
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("RPC timed out")]
    Timeout,
}

fn build(fill: impl FnOnce(message::Builder<'_>) -> capnp::Result<()>) -> capnp::Result<Vec<u8>> {
    let mut m = capnp::message::Builder::new_default();
    fill(m.init_root::<message::Builder>())?;
    Ok(framing::encode(&m))
}

/// `Bootstrap{questionId}`.
pub fn bootstrap(question_id: u32) -> capnp::Result<Vec<u8>> {
    build(|m| {
        m.init_bootstrap().set_question_id(question_id);
        Ok(())
    })
}

/// A `Call` whose params are filled by `params` (the payload content pointer).
pub fn call(
    question_id: u32,
    target: Target,
    interface_id: u64,
    method_id: u16,
    params: impl FnOnce(capnp::any_pointer::Builder<'_>) -> capnp::Result<()>,
) -> capnp::Result<Vec<u8>> {
    build(|m| {
        let mut c = m.init_call();
        c.set_question_id(question_id);
        c.set_interface_id(interface_id);
        c.set_method_id(method_id);
        set_target(c.reborrow().init_target(), target);
        c.reborrow().init_send_results_to().set_caller(());
        let mut p = c.init_params();
        p.reborrow().init_cap_table(0);
        params(p.init_content())
    })
}

fn set_target(mut t: message_target::Builder<'_>, target: Target) {
    match target {
        Target::ImportedCap(id) => t.set_imported_cap(id),
        Target::PromisedAnswer(q) => {
            let mut pa = t.init_promised_answer();
            pa.set_question_id(q);
            pa.init_transform(0);
        }
    }
}

/// A `Return` with results filled by `results`.
pub fn return_results(
    answer_id: u32,
    results: impl FnOnce(capnp::any_pointer::Builder<'_>) -> capnp::Result<()>,
) -> capnp::Result<Vec<u8>> {
    build(|m| {
        let mut r = m.init_return();
        r.set_answer_id(answer_id);
        r.set_release_param_caps(false);
        let mut p = r.init_results();
        p.reborrow().init_cap_table(0);
        results(p.init_content())
    })
}

/// The `Return` to a `Bootstrap`: the content is a capability pointer to export `export_id`.
///
/// capnp's plain message builder has no capability table, so the content is written as a null pointer and
/// then patched into capability pointer #0 (the one entry of the payload's `capTable`).
pub fn return_bootstrap(answer_id: u32, export_id: u32) -> capnp::Result<Vec<u8>> {
    let mut bytes = build(|m| {
        let mut r = m.init_return();
        r.set_answer_id(answer_id);
        r.set_release_param_caps(false);
        let mut p = r.init_results();
        p.reborrow().init_cap_table(1).get(0).set_sender_hosted(export_id);
        Ok(())
    })?;
    patch_content_capability(&mut bytes)?;
    Ok(bytes)
}

fn patch_content_capability(bytes: &mut [u8]) -> capnp::Result<()> {
    let fail = || capnp::Error::failed("unexpected layout while writing a capability pointer".into());
    // One segment: an 8-byte frame header, then the segment's words.
    if bytes.len() < 16 || bytes[0..4] != [0, 0, 0, 0] {
        return Err(fail());
    }
    let seg = &mut bytes[8..];
    let word = |seg: &[u8], i: usize| -> Option<u64> {
        seg.get(i * 8..i * 8 + 8)
            .and_then(|w| w.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // Follows a struct pointer at word `at`; returns (first data word, data words).
    let follow = |seg: &[u8], at: usize| -> Option<(usize, usize)> {
        let p = word(seg, at)?;
        if p & 3 != 0 {
            return None;
        }
        let offset = ((p as u32 as i32) >> 2) as isize;
        let start = (at as isize + 1 + offset) as usize;
        Some((start, ((p >> 32) & 0xffff) as usize))
    };
    let (msg, msg_data) = follow(seg, 0).ok_or_else(fail)?;
    let (ret, ret_data) = follow(seg, msg + msg_data).ok_or_else(fail)?;
    let (payload, payload_data) = follow(seg, ret + ret_data).ok_or_else(fail)?;
    let content = payload + payload_data;
    if word(seg, content) != Some(0) {
        return Err(fail());
    }
    // Capability pointer: kind 3, index 0 in the upper 32 bits.
    seg[content * 8..content * 8 + 8].copy_from_slice(&3u64.to_le_bytes());
    Ok(())
}

/// A `Return` carrying an exception.
pub fn return_exception(answer_id: u32, reason: &str) -> capnp::Result<Vec<u8>> {
    build(|m| {
        let mut r = m.init_return();
        r.set_answer_id(answer_id);
        r.set_release_param_caps(false);
        r.init_exception().set_reason(reason);
        Ok(())
    })
}

/// `Finish{questionId}`.
pub fn finish(question_id: u32) -> capnp::Result<Vec<u8>> {
    build(|m| {
        let mut f = m.init_finish();
        f.set_question_id(question_id);
        f.set_release_result_caps(false);
        Ok(())
    })
}

/// `Release{id, referenceCount}`.
pub fn release(id: u32, count: u32) -> capnp::Result<Vec<u8>> {
    build(|m| {
        let mut r = m.init_release();
        r.set_id(id);
        r.set_reference_count(count);
        Ok(())
    })
}

/// `Unimplemented` echoing a message we do not handle.
pub fn unimplemented(original: &Reader<OwnedSegments>) -> capnp::Result<Vec<u8>> {
    let root = original.get_root::<message::Reader>()?;
    build(|mut m| m.set_unimplemented(root))
}

fn disembargo_reflect(embargo_id: u32, target: Target) -> capnp::Result<Vec<u8>> {
    build(|m| {
        let mut d = m.init_disembargo();
        set_target(d.reborrow().init_target(), target);
        d.init_context().set_receiver_loopback(embargo_id);
        Ok(())
    })
}

/// One received RPC message.
pub struct Incoming(pub Reader<OwnedSegments>);

/// The parts of a received message that our sessions act on.
pub enum Decoded<'a> {
    Bootstrap {
        question_id: u32,
    },
    Call {
        question_id: u32,
        target: Target,
        interface_id: u64,
        method_id: u16,
        params: capnp::any_pointer::Reader<'a>,
    },
    Return {
        answer_id: u32,
        outcome: ReturnOutcome<'a>,
    },
    Finish,
    Release,
    Abort(String),
    Unimplemented,
    DisembargoSenderLoopback {
        embargo_id: u32,
        target: Target,
    },
    Other,
}

/// How a question was answered.
pub enum ReturnOutcome<'a> {
    Results {
        content: capnp::any_pointer::Reader<'a>,
        first_cap: Option<u32>,
    },
    Exception(String),
    Canceled,
    Other,
}

fn read_target(t: message_target::Reader<'_>) -> capnp::Result<Target> {
    Ok(match t.which()? {
        message_target::ImportedCap(id) => Target::ImportedCap(id),
        message_target::PromisedAnswer(pa) => Target::PromisedAnswer(pa?.get_question_id()),
    })
}

impl Incoming {
    /// Decodes the message union.
    pub fn decode(&self) -> capnp::Result<Decoded<'_>> {
        let m = self.0.get_root::<message::Reader>()?;
        Ok(match m.which()? {
            message::Bootstrap(b) => Decoded::Bootstrap {
                question_id: b?.get_question_id(),
            },
            message::Call(c) => {
                let c = c?;
                Decoded::Call {
                    question_id: c.get_question_id(),
                    target: read_target(c.get_target()?)?,
                    interface_id: c.get_interface_id(),
                    method_id: c.get_method_id(),
                    params: c.get_params()?.get_content(),
                }
            }
            message::Return(r) => {
                let r = r?;
                let outcome = match r.which()? {
                    return_::Results(p) => {
                        let p = p?;
                        let first_cap = match p.get_cap_table()?.iter().next() {
                            Some(d) => match d.which()? {
                                cap_descriptor::SenderHosted(id) | cap_descriptor::SenderPromise(id) => {
                                    Some(id)
                                }
                                _ => None,
                            },
                            None => None,
                        };
                        ReturnOutcome::Results {
                            content: p.get_content(),
                            first_cap,
                        }
                    }
                    return_::Exception(e) => ReturnOutcome::Exception(e?.get_reason()?.to_string()?),
                    return_::Canceled(()) => ReturnOutcome::Canceled,
                    _ => ReturnOutcome::Other,
                };
                Decoded::Return {
                    answer_id: r.get_answer_id(),
                    outcome,
                }
            }
            message::Finish(_) => Decoded::Finish,
            message::Release(_) => Decoded::Release,
            message::Abort(e) => Decoded::Abort(e?.get_reason()?.to_string()?),
            message::Unimplemented(_) => Decoded::Unimplemented,
            message::Disembargo(d) => {
                let d = d?;
                match d.get_context().which()? {
                    disembargo::context::SenderLoopback(embargo_id) => Decoded::DisembargoSenderLoopback {
                        embargo_id,
                        target: read_target(d.get_target()?)?,
                    },
                    _ => Decoded::Other,
                }
            }
            _ => Decoded::Other,
        })
    }
}

/// Frames RPC messages over a byte stream.
pub struct RpcStream<S> {
    io: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RpcStream<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Like [`RpcStream::new`], with bytes already read from the stream.
    pub fn with_buffer(io: S, buf: BytesMut) -> Self {
        Self { io, buf }
    }

    /// Writes one message and flushes it.
    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), RpcError> {
        self.io.write_all(bytes).await.map_err(FrameError::Io)?;
        self.io.flush().await.map_err(FrameError::Io)?;
        Ok(())
    }

    /// Reads one message. Cancel-safe: partial bytes stay buffered.
    pub async fn recv(&mut self) -> Result<Incoming, RpcError> {
        Ok(Incoming(
            framing::read_message(&mut self.io, &mut self.buf).await?,
        ))
    }

    /// Finishes the write side.
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}

/// The caller side of a session with one bootstrap capability (the connector's control stream, the edge's
/// RPC streams towards the connector).
pub struct RpcClient<S> {
    stream: RpcStream<S>,
    cap: u32,
    next_question: u32,
}

/// What to do after decoding a message; owned so that no capnp reader lives across an await.
enum Step<T> {
    Answer(T),
    Send(Vec<u8>),
    Nothing,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RpcClient<S> {
    /// Sends `Bootstrap` and waits for the capability.
    pub async fn bootstrap(io: S) -> Result<Self, RpcError> {
        let mut stream = RpcStream::new(io);
        stream.send(&bootstrap(0)?).await?;
        loop {
            let msg = stream.recv().await?;
            let step = match msg.decode()? {
                Decoded::Return {
                    answer_id: 0,
                    outcome,
                } => Step::Answer(match outcome {
                    ReturnOutcome::Results {
                        first_cap: Some(cap), ..
                    } => Ok(cap),
                    ReturnOutcome::Results { first_cap: None, .. } => {
                        Err(RpcError::Protocol("bootstrap returned no capability".into()))
                    }
                    ReturnOutcome::Exception(e) => Err(RpcError::Exception(e)),
                    ReturnOutcome::Canceled | ReturnOutcome::Other => Err(RpcError::Canceled),
                }),
                other => stray_reply(&msg, other)?,
            };
            match step {
                Step::Answer(cap) => {
                    let cap = cap?;
                    stream.send(&finish(0)?).await?;
                    return Ok(Self {
                        stream,
                        cap,
                        next_question: 1,
                    });
                }
                Step::Send(bytes) => stream.send(&bytes).await?,
                Step::Nothing => {}
            }
        }
    }

    /// Calls a method on the bootstrap capability; `read` decodes the results content.
    pub async fn call<T>(
        &mut self,
        interface_id: u64,
        method_id: u16,
        params: impl FnOnce(capnp::any_pointer::Builder<'_>) -> capnp::Result<()>,
        read: impl FnOnce(capnp::any_pointer::Reader<'_>) -> capnp::Result<T>,
    ) -> Result<T, RpcError> {
        let q = self.next_question;
        self.next_question = self.next_question.wrapping_add(1);
        let bytes = call(q, Target::ImportedCap(self.cap), interface_id, method_id, params)?;
        self.stream.send(&bytes).await?;
        let mut read = Some(read);
        loop {
            let msg = self.stream.recv().await?;
            let step = match msg.decode()? {
                Decoded::Return { answer_id, outcome } if answer_id == q => Step::Answer(match outcome {
                    ReturnOutcome::Results { content, .. } => match read.take() {
                        Some(read) => read(content).map_err(RpcError::from),
                        None => Err(RpcError::Protocol("duplicate return".into())),
                    },
                    ReturnOutcome::Exception(e) => Err(RpcError::Exception(e)),
                    ReturnOutcome::Canceled | ReturnOutcome::Other => Err(RpcError::Canceled),
                }),
                other => stray_reply(&msg, other)?,
            };
            match step {
                Step::Answer(result) => {
                    self.stream.send(&finish(q)?).await?;
                    return result;
                }
                Step::Send(bytes) => self.stream.send(&bytes).await?,
                Step::Nothing => {}
            }
        }
    }

    /// Waits until the peer closes the stream or breaks the session, answering stray messages meanwhile.
    /// Cancel-safe.
    pub async fn closed(&mut self) -> RpcError {
        loop {
            let msg = match self.stream.recv().await {
                Ok(m) => m,
                Err(e) => return e,
            };
            let step = match msg
                .decode()
                .map_err(RpcError::from)
                .and_then(|d| stray_reply::<()>(&msg, d))
            {
                Ok(s) => s,
                Err(e) => return e,
            };
            if let Step::Send(bytes) = step
                && let Err(e) = self.stream.send(&bytes).await
            {
                return e;
            }
        }
    }

    /// Releases the bootstrap capability and closes the write side.
    pub async fn release(mut self) -> Result<(), RpcError> {
        self.stream.send(&release(self.cap, 1)?).await?;
        self.stream.shutdown().await;
        Ok(())
    }
}

/// What a caller-side session does with a message that is not the answer it waits for.
fn stray_reply<T>(msg: &Incoming, decoded: Decoded<'_>) -> Result<Step<T>, RpcError> {
    Ok(match decoded {
        Decoded::Abort(reason) => return Err(RpcError::Aborted(reason)),
        Decoded::Unimplemented => return Err(RpcError::Unimplemented),
        Decoded::Call { question_id, .. } => Step::Send(return_exception(
            question_id,
            "no capabilities are exported on this session",
        )?),
        Decoded::Bootstrap { question_id } => Step::Send(return_exception(
            question_id,
            "no bootstrap capability on this side",
        )?),
        Decoded::DisembargoSenderLoopback { embargo_id, target } => {
            Step::Send(disembargo_reflect(embargo_id, target)?)
        }
        Decoded::Return { .. } | Decoded::Finish | Decoded::Release => Step::Nothing,
        Decoded::Other => Step::Send(unimplemented(&msg.0)?),
    })
}

/// One call received by an [`RpcServer`]. Params are already decoded by the server's `decode` function.
pub enum ServerReply {
    /// Results; the closure fills the results content.
    Results(Box<dyn FnOnce(capnp::any_pointer::Builder<'_>) -> capnp::Result<()> + Send>),
    Exception(String),
    /// Send nothing (a fault the emulator injects).
    NoReply,
}

/// The callee side of a session that exports one bootstrap capability (export id 0).
pub struct RpcServer<S> {
    stream: RpcStream<S>,
    bootstrap_questions: Vec<u32>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RpcServer<S> {
    pub fn new(stream: RpcStream<S>) -> Self {
        Self {
            stream,
            bootstrap_questions: Vec::new(),
        }
    }

    /// Reads messages until the next call to the bootstrap capability, answering everything else.
    /// Returns `Ok(None)` when the peer closes the stream cleanly.
    pub async fn next_call<T>(
        &mut self,
        decode: impl Fn(u64, u16, capnp::any_pointer::Reader<'_>) -> capnp::Result<T>,
    ) -> Result<Option<(u32, T)>, RpcError> {
        loop {
            let msg = match self.stream.recv().await {
                Ok(m) => m,
                Err(RpcError::Frame(FrameError::Closed)) => return Ok(None),
                Err(e) => return Err(e),
            };
            let step = match msg.decode()? {
                Decoded::Bootstrap { question_id } => {
                    self.bootstrap_questions.push(question_id);
                    Step::Send(return_bootstrap(question_id, 0)?)
                }
                Decoded::Call {
                    question_id,
                    target,
                    interface_id,
                    method_id,
                    params,
                } => {
                    let ours = match target {
                        Target::ImportedCap(id) => id == 0,
                        Target::PromisedAnswer(q) => self.bootstrap_questions.contains(&q),
                    };
                    if !ours {
                        Step::Send(return_exception(question_id, "call to an unknown capability")?)
                    } else {
                        match decode(interface_id, method_id, params) {
                            Ok(call) => Step::Answer((question_id, call)),
                            Err(e) => Step::Send(return_exception(question_id, &format!("bad call: {e}"))?),
                        }
                    }
                }
                Decoded::Abort(reason) => return Err(RpcError::Aborted(reason)),
                Decoded::DisembargoSenderLoopback { embargo_id, target } => {
                    Step::Send(disembargo_reflect(embargo_id, target)?)
                }
                Decoded::Finish | Decoded::Release | Decoded::Return { .. } | Decoded::Unimplemented => {
                    Step::Nothing
                }
                Decoded::Other => Step::Send(unimplemented(&msg.0)?),
            };
            match step {
                Step::Answer(call) => return Ok(Some(call)),
                Step::Send(bytes) => self.stream.send(&bytes).await?,
                Step::Nothing => {}
            }
        }
    }

    /// Answers a call returned by [`RpcServer::next_call`].
    pub async fn reply(&mut self, question_id: u32, reply: ServerReply) -> Result<(), RpcError> {
        let bytes = match reply {
            ServerReply::Results(fill) => return_results(question_id, fill)?,
            ServerReply::Exception(reason) => return_exception(question_id, &reason)?,
            ServerReply::NoReply => return Ok(()),
        };
        self.stream.send(&bytes).await
    }

    /// Sends an `unimplemented`-style exception for a method we do not serve.
    pub async fn reply_unimplemented(
        &mut self,
        question_id: u32,
        interface_id: u64,
        method_id: u16,
    ) -> Result<(), RpcError> {
        let reason = format!("method not implemented: {interface_id:#018x}@{method_id}");
        self.stream.send(&return_exception(question_id, &reason)?).await
    }

    pub async fn shutdown(&mut self) {
        self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests;

//! Hijacked (attach/exec) connections: the HTTP upgrade, Docker's stream
//! framing, and pumping bytes between the client and a process.
//!
//! With `Connection: Upgrade` + `Upgrade: tcp` the client gets `101` at
//! once and the connection becomes a raw duplex: client bytes go to the
//! process's stdin (EOF, i.e. a half-close, shuts stdin down), process
//! output comes back framed (no TTY) or raw (TTY). The connection closes
//! when the output ends. Older clients (docker-compose 1.x, docker-py)
//! may attach without the upgrade headers; they get `200 OK` and the
//! output as a streamed body. Such a client cannot send stdin: the
//! process's stdin stays open (neither written nor closed) while the
//! body streams.
//!
//! A client that disconnects mid-stream only drops its streams; the
//! process is not affected. One that disconnects before the process has
//! started is noticed once it starts (until then its attachment waits).

use std::future::Future;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream::{self, BoxStream};
use futures_util::StreamExt;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use crate::backend::{BackendError, Streams};
use crate::response::{streamed, Body};

/// Frame stream number of stdin.
pub const STDIN: u8 = 0;
/// Frame stream number of stdout.
pub const STDOUT: u8 = 1;
/// Frame stream number of stderr.
pub const STDERR: u8 = 2;

/// Content type of a raw (TTY) stream.
pub const RAW_STREAM: &str = "application/vnd.docker.raw-stream";
/// Content type of a multiplexed (no TTY) stream.
pub const MULTIPLEXED_STREAM: &str = "application/vnd.docker.multiplexed-stream";

/// The content type for a stream with or without a TTY.
pub fn content_type(tty: bool) -> &'static str {
    if tty {
        RAW_STREAM
    } else {
        MULTIPLEXED_STREAM
    }
}

/// One frame: `[stream, 0, 0, 0, len as u32 big-endian]` then the payload.
pub fn encode_frame(stream: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u8(stream);
    b.put_bytes(0, 3);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// Whether the client asked to upgrade the connection to a raw stream.
pub fn wants_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .unwrap_or("")
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(token))
        })
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "tcp")
}

fn reader_chunks(
    r: Box<dyn AsyncRead + Send + Unpin>,
    stream_no: Option<u8>,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    ReaderStream::with_capacity(r, 32 * 1024)
        .map(move |chunk| match (chunk, stream_no) {
            (Ok(b), Some(n)) => Ok(encode_frame(n, &b)),
            (other, _) => other,
        })
        .boxed()
}

/// The process's output as the bytes to send: frames without a TTY, raw
/// with one. It ends when both stdout and stderr have ended.
pub fn output_stream(
    stdout: Box<dyn AsyncRead + Send + Unpin>,
    stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    tty: bool,
) -> BoxStream<'static, std::io::Result<Bytes>> {
    let out = reader_chunks(stdout, (!tty).then_some(STDOUT));
    match stderr {
        Some(err) => stream::select(out, reader_chunks(err, (!tty).then_some(STDERR))).boxed(),
        None => out,
    }
}

/// An error written into an already-answered stream.
fn error_bytes(e: &BackendError, tty: bool) -> Bytes {
    let text = format!("Error: {e}\n");
    if tty {
        Bytes::from(text)
    } else {
        encode_frame(STDERR, text.as_bytes())
    }
}

/// Copies between a raw connection and a process until its output ends.
pub async fn pump<IO>(io: IO, streams: Streams)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin,
{
    let Streams {
        stdout,
        stderr,
        stdin,
        tty,
    } = streams;
    let (mut rd, mut wr) = tokio::io::split(io);
    let input = async move {
        if let Some(mut stdin) = stdin {
            if let Err(e) = tokio::io::copy(&mut rd, &mut stdin).await {
                tracing::debug!("attach: copying stdin: {e}");
            }
            let _ = stdin.shutdown().await;
        }
        // Keep going until the output ends.
        std::future::pending::<()>().await
    };
    let output = async move {
        let mut out = output_stream(stdout, stderr, tty);
        while let Some(chunk) = out.next().await {
            let Ok(chunk) = chunk else { break };
            if wr.write_all(&chunk).await.is_err() || wr.flush().await.is_err() {
                tracing::debug!("attach: client went away");
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    tokio::select! {
        () = input => {}
        () = output => {}
    }
}

/// Takes the pending upgrade out of a request that asked for one. Call it
/// before consuming the request's body.
pub fn take_upgrade(req: &mut Request<Incoming>) -> Option<OnUpgrade> {
    wants_upgrade(req).then(|| hyper::upgrade::on(req))
}

/// Answers a hijack request. `streams` resolves once the process runs
/// (for `docker run`, after a later start request). With an upgrade
/// (from [`take_upgrade`]), the answer is `101` right away; otherwise
/// `200` with the output as the body.
pub fn hijack<F>(upgrade: Option<OnUpgrade>, tty: bool, streams: F) -> Response<Body>
where
    F: Future<Output = Result<Streams, BackendError>> + Send + 'static,
{
    let ct = HeaderValue::from_static(content_type(tty));
    if let Some(on_upgrade) = upgrade {
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!("attach: upgrade failed: {e}");
                    return;
                }
            };
            let mut io = TokioIo::new(upgraded);
            match streams.await {
                Ok(s) => pump(io, s).await,
                Err(e) => {
                    let _ = io.write_all(&error_bytes(&e, tty)).await;
                    let _ = io.shutdown().await;
                }
            }
        });
        let mut r = Response::new(crate::response::empty());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, ct);
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        return r;
    }
    let body = stream::once(streams)
        .map(move |r| match r {
            Ok(s) => {
                // Held, not closed, while the body streams.
                let stdin = s.stdin;
                output_stream(s.stdout, s.stderr, s.tty)
                    .map(move |chunk| {
                        let _ = &stdin;
                        chunk
                    })
                    .boxed()
            }
            Err(e) => stream::iter([Ok(error_bytes(&e, tty))]).boxed(),
        })
        .flatten();
    let mut r = Response::new(streamed(body));
    r.headers_mut().insert(header::CONTENT_TYPE, ct);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let f = encode_frame(STDERR, b"hi\n");
        assert_eq!(&f[..], b"\x02\x00\x00\x00\x00\x00\x00\x03hi\n");
        let f = encode_frame(STDOUT, &[7u8; 300]);
        assert_eq!(&f[..8], &[1, 0, 0, 0, 0, 0, 1, 44]);
        assert_eq!(f.len(), 308);
        assert_eq!(&encode_frame(STDIN, b"")[..], &[0u8; 8]);
    }

    #[test]
    fn detects_upgrade() {
        let r = Request::builder()
            .header("Connection", "keep-alive, Upgrade")
            .header("Upgrade", "tcp")
            .body(())
            .unwrap();
        assert!(wants_upgrade(&r));
        let r = Request::builder()
            .header("Upgrade", "tcp")
            .body(())
            .unwrap();
        assert!(!wants_upgrade(&r));
        assert_eq!(content_type(true), RAW_STREAM);
        assert_eq!(content_type(false), MULTIPLEXED_STREAM);
    }

    #[tokio::test]
    async fn multiplexes_output_and_ends() {
        let out: Box<dyn AsyncRead + Send + Unpin> = Box::new(&b"out"[..]);
        let err: Box<dyn AsyncRead + Send + Unpin> = Box::new(&b"err"[..]);
        let chunks: Vec<Bytes> = output_stream(out, Some(err), false)
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(chunks.len(), 2);
        assert!(chunks.contains(&encode_frame(STDOUT, b"out")));
        assert!(chunks.contains(&encode_frame(STDERR, b"err")));
        let out: Box<dyn AsyncRead + Send + Unpin> = Box::new(&b"raw"[..]);
        let chunks: Vec<Bytes> = output_stream(out, None, true)
            .map(|c| c.unwrap())
            .collect()
            .await;
        assert_eq!(chunks, vec![Bytes::from_static(b"raw")]);
    }
}

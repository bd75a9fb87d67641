//! Binary chunk framing of data streams (stdin, logs, copy in/out, commit).
//!
//! Each chunk is a 1-byte tag, a 4-byte big-endian length and the payload:
//!
//! | tag | chunk | payload |
//! |-----|-------|---------|
//! | 0 | [`Chunk::Data`] | bytes |
//! | 1 | [`Chunk::End`] | empty: the stream ended normally (stdin: EOF) |
//! | 2 | [`Chunk::Error`] | JSON [`WireError`]: the stream ended with an error |
//! | 3 | [`Chunk::Log`] | 1 byte stream (1 stdout, 2 stderr), 8 bytes BE nanoseconds since the epoch, bytes |
//!
//! A payload is at most [`MAX_CHUNK`] bytes.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{read_body, read_header, FrameError, WireError};

/// Largest payload of one chunk.
pub const MAX_CHUNK: usize = 1024 * 1024;

const TAG_DATA: u8 = 0;
const TAG_END: u8 = 1;
const TAG_ERROR: u8 = 2;
const TAG_LOG: u8 = 3;

/// Which output a log record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output (or the terminal).
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// Wire number of the stream.
    pub fn as_u8(self) -> u8 {
        match self {
            LogStream::Stdout => 1,
            LogStream::Stderr => 2,
        }
    }
    /// Stream from its wire number.
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(LogStream::Stdout),
            2 => Some(LogStream::Stderr),
            _ => None,
        }
    }
}

/// One log record: a line (or a long line's piece) of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Source stream.
    pub stream: LogStream,
    /// Wall-clock time the agent read it, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The bytes, newline included when there was one.
    pub data: Vec<u8>,
}

impl LogRecord {
    /// Encodes the record as a chunk payload (also the agent's on-disk log format, after
    /// a 4-byte length).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(9 + self.data.len());
        v.push(self.stream.as_u8());
        v.extend_from_slice(&self.time_ns.to_be_bytes());
        v.extend_from_slice(&self.data);
        v
    }
    /// Decodes a payload made by [`LogRecord::encode`].
    pub fn decode(p: &[u8]) -> Option<Self> {
        let stream = LogStream::from_u8(*p.first()?)?;
        let ts: [u8; 8] = p.get(1..9)?.try_into().ok()?;
        Some(LogRecord {
            stream,
            time_ns: u64::from_be_bytes(ts),
            data: p.get(9..)?.to_vec(),
        })
    }
}

/// One chunk of a data stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Payload bytes.
    Data(Vec<u8>),
    /// Normal end.
    End,
    /// End with an error.
    Error(WireError),
    /// A log record.
    Log(LogRecord),
}

/// Writes one chunk (Data payloads longer than [`MAX_CHUNK`] are split).
pub async fn write_chunk<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    chunk: &Chunk,
) -> Result<(), FrameError> {
    match chunk {
        Chunk::Data(d) => {
            for piece in d.chunks(MAX_CHUNK) {
                write_raw(w, TAG_DATA, piece).await?;
            }
            Ok(())
        }
        Chunk::End => write_raw(w, TAG_END, &[]).await,
        Chunk::Error(e) => write_raw(w, TAG_ERROR, &serde_json::to_vec(e)?).await,
        Chunk::Log(r) => {
            let p = r.encode();
            if p.len() > MAX_CHUNK {
                return Err(FrameError::TooLarge(p.len()));
            }
            write_raw(w, TAG_LOG, &p).await
        }
    }
}

async fn write_raw<W: AsyncWrite + Unpin + ?Sized>(
    w: &mut W,
    tag: u8,
    payload: &[u8],
) -> Result<(), FrameError> {
    let mut hdr = [0u8; 5];
    hdr[0] = tag;
    hdr[1..].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    w.write_all(&hdr).await?;
    w.write_all(payload).await?;
    Ok(())
}

/// Reads one chunk; `Ok(None)` at EOF before a chunk header (a stream cut short).
pub async fn read_chunk<R: AsyncRead + Unpin + ?Sized>(
    r: &mut R,
) -> Result<Option<Chunk>, FrameError> {
    let mut hdr = [0u8; 5];
    if !read_header(r, &mut hdr).await? {
        return Ok(None);
    }
    let len = u32::from_be_bytes([hdr[1], hdr[2], hdr[3], hdr[4]]) as usize;
    if len > MAX_CHUNK {
        return Err(FrameError::TooLarge(len));
    }
    let payload = read_body(r, len).await?;
    match hdr[0] {
        TAG_DATA => Ok(Some(Chunk::Data(payload))),
        TAG_END => Ok(Some(Chunk::End)),
        TAG_ERROR => Ok(Some(Chunk::Error(serde_json::from_slice(&payload)?))),
        TAG_LOG => LogRecord::decode(&payload)
            .map(|r| Some(Chunk::Log(r)))
            .ok_or(FrameError::Truncated),
        t => Err(FrameError::Decode(serde::de::Error::custom(format!(
            "unknown chunk tag {t}"
        )))),
    }
}

/// Copies everything from `src` into `dst` as Data chunks, then writes `End`.
/// Returns the number of payload bytes.
pub async fn send_all<R, W>(src: &mut R, dst: &mut W) -> Result<u64, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        write_raw(dst, TAG_DATA, &buf[..n]).await?;
        total += n as u64;
    }
    write_raw(dst, TAG_END, &[]).await?;
    dst.flush().await?;
    Ok(total)
}

/// Reads Data chunks from `src` into `dst` until `End`. An `Error` chunk becomes
/// `Err(Ok(WireError))`; a transport failure or a stream cut before `End` is
/// `Err(Err(FrameError))`. Log chunks are refused. Returns the payload byte count.
pub async fn receive_all<R, W>(
    src: &mut R,
    dst: &mut W,
) -> Result<u64, Result<WireError, FrameError>>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut total = 0u64;
    loop {
        match read_chunk(src).await.map_err(Err)? {
            Some(Chunk::Data(d)) => {
                dst.write_all(&d).await.map_err(|e| Err(e.into()))?;
                total += d.len() as u64;
            }
            Some(Chunk::End) => {
                dst.flush().await.map_err(|e| Err(e.into()))?;
                return Ok(total);
            }
            Some(Chunk::Error(e)) => return Err(Ok(e)),
            Some(Chunk::Log(_)) => {
                return Err(Ok(WireError::protocol(
                    "log record on a data stream".to_string(),
                )))
            }
            None => return Err(Err(FrameError::Truncated)),
        }
    }
}

//! Kept output of a container's init: a file of length-prefixed [`LogRecord`]s.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_protocol::chunk::{LogRecord, LogStream};
use tokio::sync::watch;

/// Longest line kept as one record; longer lines are split.
const MAX_LINE: usize = 16 * 1024;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Appends records; followers are told through a watch of the file length.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    state: Mutex<State>,
    /// (bytes written, closed).
    progress: watch::Sender<(u64, bool)>,
}

#[derive(Debug)]
struct State {
    file: Option<std::fs::File>,
    partial: [Vec<u8>; 2],
    written: u64,
    open_streams: u32,
}

impl LogFile {
    /// Creates (truncates) the log at `path`, to be closed after `streams` outputs end.
    pub fn create(path: &Path, streams: u32) -> std::io::Result<LogFile> {
        let file = std::fs::File::create(path)?;
        Ok(LogFile {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                file: Some(file),
                partial: [Vec::new(), Vec::new()],
                written: 0,
                open_streams: streams,
            }),
            progress: watch::channel((0, false)).0,
        })
    }

    fn write_record(st: &mut State, stream: LogStream, data: &[u8]) {
        let rec = LogRecord {
            stream,
            time_ns: now_ns(),
            data: data.to_vec(),
        }
        .encode();
        if let Some(f) = st.file.as_mut() {
            let mut buf = Vec::with_capacity(4 + rec.len());
            buf.extend_from_slice(&(rec.len() as u32).to_be_bytes());
            buf.extend_from_slice(&rec);
            if let Err(e) = f.write_all(&buf) {
                tracing::warn!("writing the container log: {e}; logging stops");
                st.file = None;
                return;
            }
            st.written += buf.len() as u64;
        }
    }

    /// Records output of `stream`, split into lines.
    pub fn append(&self, stream: LogStream, mut data: &[u8]) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let idx = (stream.as_u8() - 1) as usize;
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            let mut line = std::mem::take(&mut st.partial[idx]);
            line.extend_from_slice(&data[..=nl]);
            for piece in line.chunks(MAX_LINE) {
                Self::write_record(&mut st, stream, piece);
            }
            data = &data[nl + 1..];
        }
        st.partial[idx].extend_from_slice(data);
        while st.partial[idx].len() >= MAX_LINE {
            let rest = st.partial[idx].split_off(MAX_LINE);
            let piece = std::mem::replace(&mut st.partial[idx], rest);
            Self::write_record(&mut st, stream, &piece);
        }
        let w = st.written;
        drop(st);
        self.progress.send_replace((w, false));
    }

    /// One output stream ended; the log closes when all have.
    pub fn end_stream(&self, stream: LogStream) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let idx = (stream.as_u8() - 1) as usize;
        let rest = std::mem::take(&mut st.partial[idx]);
        if !rest.is_empty() {
            Self::write_record(&mut st, stream, &rest);
        }
        st.open_streams = st.open_streams.saturating_sub(1);
        let closed = st.open_streams == 0;
        if closed {
            if let Some(f) = st.file.as_mut() {
                let _ = f.flush();
            }
        }
        let w = st.written;
        drop(st);
        self.progress.send_replace((w, closed));
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Progress updates for followers.
    pub fn subscribe(&self) -> watch::Receiver<(u64, bool)> {
        self.progress.subscribe()
    }
}

/// Reads records from `f` until the end of what is written; returns them and the offset.
pub fn read_records(f: &mut std::fs::File, limit: u64) -> std::io::Result<(Vec<LogRecord>, u64)> {
    use std::io::Seek;
    let start = f.stream_position()?;
    let mut pos = start;
    let mut out = Vec::new();
    while pos + 4 <= limit {
        let mut len = [0u8; 4];
        f.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as u64;
        if pos + 4 + len > limit || len > 1 << 20 {
            f.seek(std::io::SeekFrom::Start(pos))?;
            break;
        }
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)?;
        pos += 4 + len;
        if let Some(r) = LogRecord::decode(&buf) {
            out.push(r);
        }
    }
    Ok((out, pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_records_and_partial_lines_flush_at_the_end() {
        let d = tempfile::tempdir().unwrap();
        let log = LogFile::create(&d.path().join("log"), 2).unwrap();
        log.append(LogStream::Stdout, b"one\ntw");
        log.append(LogStream::Stderr, b"err\n");
        log.append(LogStream::Stdout, b"o\nthree");
        log.end_stream(LogStream::Stdout);
        assert!(!log.subscribe().borrow().1);
        log.end_stream(LogStream::Stderr);
        let (w, closed) = *log.subscribe().borrow();
        assert!(closed);
        let mut f = std::fs::File::open(log.path()).unwrap();
        let (recs, pos) = read_records(&mut f, w).unwrap();
        assert_eq!(pos, w);
        let got: Vec<(LogStream, &[u8])> =
            recs.iter().map(|r| (r.stream, r.data.as_slice())).collect();
        assert_eq!(
            got,
            vec![
                (LogStream::Stdout, &b"one\n"[..]),
                (LogStream::Stderr, &b"err\n"[..]),
                (LogStream::Stdout, &b"two\n"[..]),
                (LogStream::Stdout, &b"three"[..]),
            ]
        );
    }
}

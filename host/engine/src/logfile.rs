//! A container's kept output on the host: length-prefixed [`LogRecord`]s, so that `logs`
//! works while the container runs and after its micro-VM is gone.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use berth_protocol::chunk::{LogRecord, LogStream};

/// Appends records to a container's log.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
}

impl LogWriter {
    /// Opens (creating, owner-only) the log at `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = berth_containers::private_file()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self { file })
    }

    /// Appends one record.
    pub fn write(&mut self, record: &LogRecord) -> std::io::Result<()> {
        let body = record.encode();
        let mut buf = Vec::with_capacity(4 + body.len());
        buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
        buf.extend_from_slice(&body);
        self.file.write_all(&buf)
    }

    /// Appends `data` read now from `stream`.
    pub fn write_now(&mut self, stream: LogStream, data: &[u8]) -> std::io::Result<()> {
        let time_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        self.write(&LogRecord {
            stream,
            time_ns,
            data: data.to_vec(),
        })
    }
}

/// Reads records from a log, from a byte offset on; returns them and the offset after the
/// last whole record (a record being written is left for the next read).
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<LogRecord>, u64)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
        Err(e) => return Err(e),
    };
    let mut r = BufReader::new(file);
    std::io::copy(&mut (&mut r).take(offset), &mut std::io::sink())?;
    let mut out = Vec::new();
    let mut pos = offset;
    loop {
        let mut len = [0u8; 4];
        if r.read_exact(&mut len).is_err() {
            break;
        }
        let len = u32::from_be_bytes(len) as usize;
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            break;
        }
        pos += 4 + len as u64;
        if let Some(rec) = LogRecord::decode(&body) {
            out.push(rec);
        }
    }
    Ok((out, pos))
}

/// Splits records into lines (a record may hold several), keeping each line's stream and time.
pub fn lines(records: Vec<LogRecord>) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for rec in records {
        for piece in rec.data.split_inclusive(|&b| b == b'\n') {
            out.push(LogRecord {
                stream: rec.stream,
                time_ns: rec.time_ns,
                data: piece.to_vec(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_partial_records_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::open(&path).unwrap();
        w.write_now(LogStream::Stdout, b"one\ntwo\n").unwrap();
        w.write_now(LogStream::Stderr, b"err\n").unwrap();
        let (recs, end) = read_from(&path, 0).unwrap();
        assert_eq!(recs.len(), 2);
        let ls = lines(recs);
        assert_eq!(ls.len(), 3);
        assert_eq!(ls[1].data, b"two\n");
        assert_eq!(ls[2].stream, LogStream::Stderr);
        // A half-written record is not returned, and the offset stays before it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(&[0, 0, 0, 20, 1])
            .unwrap();
        let (recs, end2) = read_from(&path, end).unwrap();
        assert!(recs.is_empty());
        assert_eq!(end2, end);
    }
}

//! Attaching the terminal to a process in a container: stdout and stderr streamed apart,
//! stdin with a proper EOF, signals forwarded, and with `-t` a raw terminal that follows
//! window resizes.

use std::time::Duration;

use anyhow::{Context, Result};
use berth_engine::logfile::LogWriter;
use berth_engine::ProcessStreams;
use berth_protocol::chunk::LogStream;
use berth_protocol::signal as wire;
use berth_protocol::{Client, ProcessRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::signal::unix::{signal, SignalKind};

/// How to attach.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// The process has a terminal.
    pub tty: bool,
    /// Forward this process's stdin.
    pub interactive: bool,
}

/// This process's stdin as an async reader that never holds up the exit. A thread of its
/// own reads it: `tokio::io::stdin` reads on the runtime's blocking pool, and the runtime
/// waits at shutdown for that read, which only Enter (or EOF) ends.
fn stdin_reader() -> tokio::io::DuplexStream {
    use std::io::Read;
    let (reader, mut writer) = tokio::io::duplex(64 * 1024);
    let handle = tokio::runtime::Handle::current();
    let spawned = std::thread::Builder::new()
        .name("berth-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        tracing::warn!("reading stdin: {e}");
                        break;
                    }
                };
                if handle.block_on(writer.write_all(&buf[..n])).is_err() {
                    break;
                }
            }
            // Dropping the writer is the reader's EOF.
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the stdin reader, so stdin is empty: {e}");
    }
    reader
}

/// The size of the terminal on stdout (rows, columns).
fn terminal_size() -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize into the struct we own.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Copies one output stream of the process to this process's fd, keeping it in `log`.
async fn pump_output(
    mut from: tokio::net::UnixStream,
    stream: LogStream,
    log: Option<std::sync::Arc<std::sync::Mutex<LogWriter>>>,
) -> Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match stream {
        LogStream::Stdout => Box::new(tokio::io::stdout()),
        LogStream::Stderr => Box::new(tokio::io::stderr()),
    };
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        if let Some(log) = &log {
            if let Ok(mut l) = log.lock() {
                let _ = l.write_now(stream, &buf[..n]);
            }
        }
        // A closed terminal must not stop the container: keep draining the stream.
        if out.write_all(&buf[..n]).await.is_ok() {
            let _ = out.flush().await;
        }
    }
    Ok(())
}

/// Attaches this terminal to `process` through its open `streams`, starts it when
/// asked, and returns its exit code.
pub async fn attach(
    streams: ProcessStreams,
    client: &Client,
    process: ProcessRef,
    mode: Mode,
    start: bool,
    log: Option<LogWriter>,
) -> Result<i32> {
    let log = log.map(|l| std::sync::Arc::new(std::sync::Mutex::new(l)));
    let ProcessStreams {
        stdout: out,
        stderr: err,
        stdin: input,
    } = streams;
    let raw = if mode.tty && mode.interactive {
        crate::terminal::TerminalMode::raw()
    } else {
        None
    };
    // The handlers are in place before the process starts, so that a signal sent once
    // its first output is out is forwarded, never the default death of this CLI.
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut quit = signal(SignalKind::quit()).ok();
    let mut winch = signal(SignalKind::window_change()).ok();
    if start {
        client
            .start(process.clone())
            .await
            .with_context(|| format!("start {process}"))?;
    }
    let out_task = tokio::spawn(pump_output(out, LogStream::Stdout, log.clone()));
    let err_task = err.map(|e| tokio::spawn(pump_output(e, LogStream::Stderr, log.clone())));
    let in_task = input.map(|i| tokio::spawn(berth_engine::pump_stdin(stdin_reader(), i)));

    // Signals: with a terminal, ^C travels as a byte; otherwise forward them.
    let forward = {
        let client = client.clone();
        let process = process.clone();
        let tty = mode.tty;
        tokio::spawn(async move {
            let resize = |client: Client, process: ProcessRef| async move {
                if let Some((rows, cols)) = terminal_size() {
                    let _ = client.resize_tty(process, rows, cols).await;
                }
            };
            if tty {
                resize(client.clone(), process.clone()).await;
            }
            loop {
                // Linux's numbers, which the guest understands, not the host's.
                let sig = tokio::select! {
                    Some(()) = recv(&mut int) => wire::INT,
                    Some(()) = recv(&mut term) => wire::TERM,
                    Some(()) = recv(&mut hup) => wire::HUP,
                    Some(()) = recv(&mut quit) => wire::QUIT,
                    Some(()) = recv(&mut winch) => wire::WINCH,
                    else => break,
                };
                if sig == wire::WINCH {
                    if tty {
                        resize(client.clone(), process.clone()).await;
                    }
                } else {
                    let _ = client.signal(process.clone(), sig).await;
                }
            }
        })
    };

    let code = client.wait(process.clone()).await;
    forward.abort();
    // Output written just before the exit is still in flight: drain it.
    let _ = tokio::time::timeout(Duration::from_secs(10), out_task).await;
    if let Some(t) = err_task {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    if let Some(t) = in_task {
        t.abort();
    }
    drop(raw);
    Ok(code?)
}

/// The next delivery of a signal, or never when it could not be watched.
async fn recv(s: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match s {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

//! A process's standard I/O in the guest: pipes or a pty made for it, window sizes, and
//! the pumps that carry its output to the host's streams and the container's log.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use berth_protocol::chunk::LogStream;
use berth_protocol::{ErrorKind, StdioOptions, WireError};
use berth_runtime::Stdio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::{sys_err, wire};
use crate::aio::AsyncFile;
use crate::logs::LogFile;
use crate::process::{Output, SinkState};

/// The descriptors made for one process: the ends its runtime gets, and the agent's
/// (its stdin to write, its output to pump, a pty's master to resize).
pub(crate) struct ProcIo {
    pub(crate) runtime: Stdio,
    pub(crate) stdin: Option<OwnedFd>,
    pub(crate) out: OwnedFd,
    pub(crate) err: Option<OwnedFd>,
    pub(crate) master: Option<OwnedFd>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), WireError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| WireError::new(ErrorKind::System, format!("creating a pipe: {e}")))
}

pub(crate) fn make_stdio(o: StdioOptions) -> Result<ProcIo, WireError> {
    if o.tty {
        let pty = nix::pty::openpty(None, None).map_err(|e| sys_err("opening a pty", e))?;
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .map_err(|e| sys_err("configuring the pty", e))?;
        }
        let dup = |fd: &OwnedFd| {
            fd.try_clone()
                .map_err(|e| sys_err("duplicating the pty", e))
        };
        let stdin = if o.open_stdin {
            Some(dup(&pty.master)?)
        } else {
            None
        };
        let out = dup(&pty.master)?;
        Ok(ProcIo {
            runtime: Stdio::tty(pty.slave).map_err(|e| wire(&e))?,
            stdin,
            out,
            err: None,
            master: Some(pty.master),
        })
    } else {
        let (stdin_child, stdin) = if o.open_stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let null = nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| sys_err("opening /dev/null", e))?;
            (null, None)
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok(ProcIo {
            runtime: Stdio {
                stdin: stdin_child,
                stdout: out_w,
                stderr: err_w,
            },
            stdin,
            out: out_r,
            err: Some(err_r),
            master: None,
        })
    }
}

pub(crate) fn set_winsize(fd: &OwnedFd, rows: u16, cols: u16) -> Result<(), WireError> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize on a pty master.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(sys_err(
            "resizing the terminal",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

pub(crate) async fn pump(src: OwnedFd, out: Arc<Output>, log: Option<(Arc<LogFile>, LogStream)>) {
    let mut src = match AsyncFile::new(src) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot read process output: {e}");
            *out.sink.lock().await = SinkState::Closed;
            return;
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match src.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((l, s)) = &log {
            l.append(*s, &buf[..n]);
        }
        let mut g = out.sink.lock().await;
        if let SinkState::Open(Some(w)) = &mut *g {
            let ok = w.write_all(&buf[..n]).await.is_ok() && w.flush().await.is_ok();
            if !ok {
                *g = SinkState::Open(None);
            }
        }
    }
    if let Some((l, s)) = &log {
        l.end_stream(*s);
    }
    let mut g = out.sink.lock().await;
    if let SinkState::Open(Some(w)) = &mut *g {
        let _ = w.shutdown().await;
    }
    *g = SinkState::Closed;
}

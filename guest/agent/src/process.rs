//! The processes the agent started (a container's init and its execs): where each one's
//! output goes, its exit status once known, and the reaper that collects exit statuses
//! as PID 1 must, including those of processes nobody claims.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};

use berth_runtime::Stdio;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use crate::aio::AsyncFile;
use crate::logs::LogFile;

type Sink = Box<dyn AsyncWrite + Send + Unpin>;

/// Where a process output goes besides the log.
#[derive(Default)]
pub(crate) enum SinkState {
    /// Output flows; the attached host stream, if any.
    Open(Option<Sink>),
    /// The output has ended.
    #[default]
    Closed,
}

/// One output (stdout or stderr) of a process.
pub struct Output {
    pub(crate) sink: tokio::sync::Mutex<SinkState>,
}

impl Output {
    pub(crate) fn new(open: bool) -> Arc<Output> {
        Arc::new(Output {
            sink: tokio::sync::Mutex::new(if open {
                SinkState::Open(None)
            } else {
                SinkState::Closed
            }),
        })
    }

    /// Attaches a host stream; when the output has already ended the stream is closed.
    pub async fn attach(&self, mut s: Sink) {
        let mut g = self.sink.lock().await;
        match &mut *g {
            SinkState::Open(slot) => *slot = Some(s),
            SinkState::Closed => {
                let _ = s.shutdown().await;
            }
        }
    }
}

pub(crate) struct PendingExec {
    pub(crate) process: oci_spec::runtime::Process,
    pub(crate) user: Option<String>,
    pub(crate) stdio: Stdio,
}

/// A process (init or exec) the agent tracks.
pub struct Proc {
    pub(crate) pid: Mutex<Option<i32>>,
    pub(crate) exit: Arc<watch::Sender<Option<i32>>>,
    pub(crate) stdin: tokio::sync::Mutex<Option<AsyncFile>>,
    pub(crate) master: Option<OwnedFd>,
    /// stdout (or the terminal) and stderr.
    pub outputs: [Arc<Output>; 2],
    pub(crate) pending: Mutex<Option<PendingExec>>,
    /// Kept output (init only).
    pub log: Option<Arc<LogFile>>,
}

impl Proc {
    /// Exit code, once exited.
    pub fn exit_code(&self) -> Option<i32> {
        *self.exit.borrow()
    }
    /// Waits for the exit code.
    pub async fn wait(&self) -> i32 {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(c) = *rx.borrow_and_update() {
                return c;
            }
            if rx.changed().await.is_err() {
                return 255;
            }
        }
    }
    /// Takes the stdin writer (one attachment).
    pub async fn take_stdin(&self) -> Option<AsyncFile> {
        self.stdin.lock().await.take()
    }
}

/// Exit statuses collected by the SIGCHLD handler.
///
/// A child may exit before anyone registers for it (an exec'd `true` often does), so
/// exits nobody waits for yet are kept, and handed over at registration. Both maps sit
/// under one lock: with two, a child reaped between registration's two look-ups had its
/// exit lost, and whoever waited for it hung.
#[derive(Default)]
pub struct Reaper {
    inner: Mutex<ReaperState>,
}

/// At most this many unclaimed exits are kept (those of exec helpers,
/// which the runtime waits for itself, pile up here); the oldest go first.
const UNCLAIMED_MAX: usize = 1024;

#[derive(Default)]
struct ReaperState {
    waiters: HashMap<i32, Arc<watch::Sender<Option<i32>>>>,
    unclaimed: HashMap<i32, i32>,
    /// Unclaimed pids, oldest first.
    order: std::collections::VecDeque<i32>,
}

impl Reaper {
    fn state(&self) -> std::sync::MutexGuard<'_, ReaperState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delivers `pid`'s exit to `tx`, now if it was already reaped, else once it is.
    pub(crate) fn register(&self, pid: i32, tx: Arc<watch::Sender<Option<i32>>>) {
        let mut st = self.state();
        match st.unclaimed.remove(&pid) {
            Some(code) => {
                st.order.retain(|p| *p != pid);
                drop(st);
                tx.send_replace(Some(code));
            }
            None => {
                st.waiters.insert(pid, tx);
            }
        }
    }

    /// Records that `pid` exited with `code`.
    pub(crate) fn exited(&self, pid: i32, code: i32) {
        let mut st = self.state();
        if let Some(tx) = st.waiters.remove(&pid) {
            drop(st);
            tx.send_replace(Some(code));
            return;
        }
        if st.unclaimed.insert(pid, code).is_none() {
            st.order.push_back(pid);
        }
        while st.order.len() > UNCLAIMED_MAX {
            if let Some(old) = st.order.pop_front() {
                st.unclaimed.remove(&old);
            }
        }
    }

    /// Reaps every exited child.
    pub fn reap(&self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(ws) => {
                    if let (Some(pid), Some(code)) =
                        (ws.pid(), berth_runtime::container::exit_code(ws))
                    {
                        self.exited(pid.as_raw(), code);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter() -> (
        Arc<watch::Sender<Option<i32>>>,
        watch::Receiver<Option<i32>>,
    ) {
        let (tx, rx) = watch::channel(None);
        (Arc::new(tx), rx)
    }

    #[test]
    fn an_exit_reaches_its_waiter_whichever_comes_first() {
        let r = Reaper::default();
        let (tx, rx) = waiter();
        r.register(10, tx);
        r.exited(10, 3);
        assert_eq!(*rx.borrow(), Some(3));

        let (tx, rx) = waiter();
        r.exited(11, 137);
        r.register(11, tx);
        assert_eq!(*rx.borrow(), Some(137));
        assert!(r.state().unclaimed.is_empty() && r.state().order.is_empty());
    }

    #[test]
    fn racing_registration_and_reaping_lose_no_exit() {
        let r = Arc::new(Reaper::default());
        for round in 0..200 {
            let pids: Vec<i32> = (0..50).map(|i| round * 100 + i).collect();
            let waiters: Vec<_> = pids.iter().map(|_| waiter()).collect();
            let reaper = {
                let r = r.clone();
                let pids = pids.clone();
                std::thread::spawn(move || pids.iter().for_each(|p| r.exited(*p, *p % 256)))
            };
            for (p, (tx, _)) in pids.iter().zip(&waiters) {
                r.register(*p, tx.clone());
            }
            reaper.join().unwrap();
            for (p, (_, rx)) in pids.iter().zip(&waiters) {
                assert_eq!(*rx.borrow(), Some(p % 256), "pid {p} in round {round}");
            }
        }
    }

    #[test]
    fn unclaimed_exits_are_bounded_oldest_first() {
        let r = Reaper::default();
        for pid in 0..(UNCLAIMED_MAX as i32 + 10) {
            r.exited(pid, 0);
        }
        assert_eq!(r.state().unclaimed.len(), UNCLAIMED_MAX);
        assert!(!r.state().unclaimed.contains_key(&0));
        let (tx, rx) = waiter();
        r.register(UNCLAIMED_MAX as i32 + 9, tx);
        assert_eq!(*rx.borrow(), Some(0));
    }
}

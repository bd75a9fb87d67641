//! A device thread that serves a queue each time the driver notifies it, so that slow host
//! work (a file operation, a disk read) never runs on the vCPU thread that wrote
//! `QueueNotify`.
//!
//! Kicks coalesce: any number of notifications while the thread is busy make one more
//! round of work. Stopping waits for the round in progress to end; after
//! [`QueueThread::stop`] (or drop) the work closure is gone and never touches guest memory
//! again, which a driver reset requires.
//!
//! With the `fuzzing` feature there is no thread: each kick runs one round of the work on
//! the kicking thread, so that a fuzzer's run is deterministic and sees every panic.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

#[derive(Default)]
#[cfg_attr(feature = "fuzzing", allow(dead_code))]
struct State {
    kicked: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock only guards two flags: a panic elsewhere cannot leave them torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One device thread running a work closure per batch of notifications.
pub(crate) struct QueueThread {
    name: String,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    /// `fuzzing`: the work, run by [`QueueThread::kick`] itself.
    #[cfg(feature = "fuzzing")]
    inline: Mutex<Box<dyn FnMut() + Send>>,
}

impl std::fmt::Debug for QueueThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueThread")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl QueueThread {
    /// `fuzzing`: keeps `work` for [`QueueThread::kick`] to run; starts no thread.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn spawn(name: String, work: impl FnMut() + Send + 'static) -> io::Result<Self> {
        Ok(Self {
            name,
            shared: Arc::default(),
            thread: None,
            inline: Mutex::new(Box::new(work)),
        })
    }

    /// Starts a thread called `name` that runs `work` once per batch of kicks.
    #[cfg(not(feature = "fuzzing"))]
    pub(crate) fn spawn(name: String, mut work: impl FnMut() + Send + 'static) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || loop {
                {
                    let mut state = theirs.lock();
                    while !state.kicked && !state.stop {
                        state = theirs
                            .wake
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner);
                    }
                    if state.stop {
                        break;
                    }
                    state.kicked = false;
                }
                work();
            })?;
        tracing::debug!(thread = %name, "device thread started");
        Ok(Self {
            name,
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for one more round of work (the driver notified the queue).
    pub(crate) fn kick(&self) {
        #[cfg(feature = "fuzzing")]
        (self.inline.lock().unwrap_or_else(PoisonError::into_inner))();
        #[cfg(not(feature = "fuzzing"))]
        {
            self.shared.lock().kicked = true;
            self.shared.wake.notify_one();
        }
    }

    /// Stops the thread and waits for the round in progress to end.
    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if thread.join().is_err() {
            tracing::error!(thread = %self.name, "the device thread panicked");
        } else {
            tracing::debug!(thread = %self.name, "device thread stopped");
        }
    }
}

impl Drop for QueueThread {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn kicks_run_the_work_and_stop_joins() {
        let rounds = Arc::new(AtomicUsize::new(0));
        let counted = rounds.clone();
        let t = QueueThread::spawn("test-queue".into(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(rounds.load(Ordering::SeqCst), 0, "no work before a kick");
        t.kick();
        let deadline = Instant::now() + Duration::from_secs(5);
        while rounds.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(rounds.load(Ordering::SeqCst) >= 1);
        t.stop();
        let after = rounds.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(rounds.load(Ordering::SeqCst), after, "no work after stop");
    }

    #[test]
    fn a_panicking_round_does_not_hang_stop() {
        let t = QueueThread::spawn("test-panic".into(), || panic!("boom")).unwrap();
        t.kick();
        std::thread::sleep(Duration::from_millis(20));
        t.kick();
        t.stop();
    }
}

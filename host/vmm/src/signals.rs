//! Stop requests: SIGTERM and SIGINT set a flag the VMM's main loop polls.
//!
//! The handlers only store to an atomic (async-signal-safe). A signal delivered to a vCPU
//! thread also interrupts its `KVM_RUN`, which is harmless: the thread re-enters the guest
//! until the main thread stops it.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Installs the SIGTERM and SIGINT handlers (once per process).
#[cfg(target_os = "linux")]
pub fn install() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    extern "C" fn on_stop_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
        STOP.store(true, Ordering::SeqCst);
    }
    INSTALL.call_once(|| {
        for sig in [libc::SIGTERM, libc::SIGINT] {
            if let Err(e) = vmm_sys_util::signal::register_signal_handler(sig, on_stop_signal) {
                tracing::warn!("cannot handle signal {sig}: {e}");
            }
        }
    });
}

/// Asks the running VM to stop (what SIGTERM does).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Whether a stop was requested.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

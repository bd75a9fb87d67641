//! The 8250 UART the guest uses as its console (port 0x3f8, IRQ 4), built on vm-superio.
//!
//! Output goes to a writer (the terminal or a log file) line by line; the last lines are kept
//! in memory ([`ConsoleLog`]) so that the VMM can show them when the guest dies, and a kernel
//! panic line is noticed as it passes.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

use crate::bus::BusDevice;
use crate::Irq;

/// How many console lines [`ConsoleLog`] keeps.
pub const KEPT_LINES: usize = 50;
/// The longest line kept; longer lines are cut (the writer still gets every byte).
const MAX_LINE: usize = 4096;
/// What the kernel prints when it panics.
pub const PANIC_MARKER: &str = "Kernel panic - not syncing";

/// The tail of the guest console, shared with the VMM.
#[derive(Debug, Default)]
pub struct ConsoleLog {
    lines: Mutex<VecDeque<String>>,
    panicked: AtomicBool,
}

impl ConsoleLog {
    /// An empty log.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The last lines the guest printed (at most [`KEPT_LINES`]), oldest first.
    pub fn last_lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Whether the guest kernel printed a panic.
    pub fn panicked(&self) -> bool {
        self.panicked.load(Ordering::SeqCst)
    }

    fn push(&self, line: String) {
        if line.contains(PANIC_MARKER) {
            self.panicked.store(true, Ordering::SeqCst);
        }
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == KEPT_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// Writes console bytes to `out`, flushing at each line end, and feeds the [`ConsoleLog`].
pub struct ConsoleWriter {
    out: Box<dyn Write + Send>,
    pending: Vec<u8>,
    unflushed: usize,
    log: Arc<ConsoleLog>,
}

impl std::fmt::Debug for ConsoleWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleWriter").finish_non_exhaustive()
    }
}

impl ConsoleWriter {
    /// A writer to `out` that records lines in `log`.
    pub fn new(out: Box<dyn Write + Send>, log: Arc<ConsoleLog>) -> Self {
        Self {
            out,
            pending: Vec::new(),
            unflushed: 0,
            log,
        }
    }

    fn byte(&mut self, b: u8) {
        match b {
            b'\n' => {
                let line = String::from_utf8_lossy(&self.pending)
                    .trim_end_matches('\r')
                    .to_string();
                self.pending.clear();
                self.log.push(line);
            }
            _ if self.pending.len() < MAX_LINE => self.pending.push(b),
            _ => {}
        }
    }

    /// Records the unterminated last line (at exit) and flushes the output.
    pub fn finish(&mut self) {
        if !self.pending.is_empty() {
            let line = String::from_utf8_lossy(&self.pending).to_string();
            self.pending.clear();
            self.log.push(line);
        }
        let _ = self.out.flush();
    }
}

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            self.byte(b);
        }
        self.out.write_all(buf)?;
        self.unflushed += buf.len();
        if buf.contains(&b'\n') || self.unflushed >= 4096 {
            self.unflushed = 0;
            self.out.flush()?;
        }
        Ok(buf.len())
    }

    /// vm-superio flushes after every byte; real flushes happen at line ends (see `write`).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Adapts an [`Irq`] to vm-superio's trigger.
#[derive(Clone)]
pub struct IrqAdapter(pub Irq);

impl std::fmt::Debug for IrqAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IrqAdapter")
    }
}

impl Trigger for IrqAdapter {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.trigger()
    }
}

/// The serial port device (8 registers).
pub struct SerialDevice {
    serial: Serial<IrqAdapter, NoEvents, ConsoleWriter>,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice").finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// A UART raising `irq` and writing to `out`.
    pub fn new(irq: Irq, out: ConsoleWriter) -> Self {
        Self {
            serial: Serial::new(IrqAdapter(irq), out),
        }
    }

    /// Flushes the console (call when the VM stops).
    pub fn finish(&mut self) {
        self.serial.writer_mut().finish();
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Ok(reg) = u8::try_from(offset) else {
            data.fill(0);
            return;
        };
        for b in data.iter_mut() {
            *b = self.serial.read(reg);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(reg) = u8::try_from(offset) else {
            return;
        };
        for &b in data {
            if let Err(e) = self.serial.write(reg, b) {
                tracing::warn!("serial console write failed: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IrqTrigger;

    struct NoIrq;
    impl IrqTrigger for NoIrq {
        fn trigger(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn keeps_last_lines_and_spots_panic() {
        let log = ConsoleLog::new();
        let out = Shared::default();
        let mut dev = SerialDevice::new(
            Arc::new(NoIrq),
            ConsoleWriter::new(Box::new(out.clone()), log.clone()),
        );
        for i in 0..60 {
            for b in format!("line {i}\r\n").bytes() {
                dev.write(0, &[b]);
            }
        }
        assert!(!log.panicked());
        for b in "Kernel panic - not syncing: Attempted to kill init!".bytes() {
            dev.write(0, &[b]);
        }
        dev.finish();
        let lines = log.last_lines();
        assert_eq!(lines.len(), KEPT_LINES);
        assert_eq!(lines[0], "line 11");
        assert!(log.panicked());
        assert!(String::from_utf8_lossy(&out.0.lock().unwrap()).contains("line 59\r\n"));
        // Hostile offsets are ignored.
        dev.write(u64::MAX, &[1]);
        let mut d = [7u8; 3];
        dev.read(u64::MAX, &mut d);
        assert_eq!(d, [0, 0, 0]);
    }
}

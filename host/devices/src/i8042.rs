//! The part of the i8042 keyboard controller a micro-VM needs: the CPU reset line, plus
//! enough of the command set that the guest's driver probe finishes at once instead of
//! timing out.
//!
//! Linux booted with `reboot=k` restarts (and, with `panic=-1`, dies) by writing the
//! "pulse reset" command 0xFE to the command port 0x64. The device sits at ports
//! 0x60..=0x64: 0x60 is the data port, 0x64 the status (read) and command (write) port.
//! There is no keyboard: commands are answered, nothing else ever arrives.

use std::collections::VecDeque;

use crate::bus::BusDevice;

/// First port of the controller.
pub const I8042_BASE: u16 = 0x60;
/// Ports covered, 0x60..=0x64.
pub const I8042_LEN: u64 = 5;
const DATA_OFFSET: u64 = 0;
/// Offset of the command/status port (0x64).
const COMMAND_OFFSET: u64 = 4;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
/// The command that pulses the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;

/// Status: output buffer full (a byte waits on the data port).
const STATUS_OUTPUT_FULL: u8 = 0x01;
/// Status: the system passed its self test.
const STATUS_SYSTEM_FLAG: u8 = 0x04;
/// Status: the last write was a command.
const STATUS_COMMAND: u8 = 0x08;

/// Most bytes queued on the data port (answers to commands only).
const MAX_OUTPUT: usize = 16;

/// The i8042 controller; calls the reset handler when the guest resets the CPU.
pub struct I8042 {
    on_reset: Box<dyn FnMut() + Send>,
    output: VecDeque<u8>,
    ctr: u8,
    output_port: u8,
    /// The data byte the next data-port write sets (after 0x60 or 0xd1).
    pending: Option<u8>,
    last_was_command: bool,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042")
            .field("ctr", &self.ctr)
            .field("queued", &self.output.len())
            .finish_non_exhaustive()
    }
}

impl I8042 {
    /// A controller calling `on_reset` for each reset command.
    pub fn new(on_reset: Box<dyn FnMut() + Send>) -> Self {
        Self {
            on_reset,
            output: VecDeque::new(),
            // Keyboard interrupt on, system flag, translation: what firmware leaves.
            ctr: 0x45,
            output_port: 0x01,
            pending: None,
            last_was_command: false,
        }
    }

    fn push(&mut self, b: u8) {
        if self.output.len() < MAX_OUTPUT {
            self.output.push_back(b);
        }
    }

    fn command(&mut self, cmd: u8) {
        self.pending = None;
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTPUT_PORT => self.pending = Some(cmd),
            CMD_SELF_TEST => self.push(0x55),
            CMD_KBD_TEST => self.push(0x00),
            CMD_READ_OUTPUT_PORT => self.push(self.output_port),
            CMD_RESET_CPU => (self.on_reset)(),
            _ => {}
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(first) = data.first_mut() else {
            return;
        };
        match offset {
            DATA_OFFSET => *first = self.output.pop_front().unwrap_or(0),
            COMMAND_OFFSET => {
                let mut s = STATUS_SYSTEM_FLAG;
                if !self.output.is_empty() {
                    s |= STATUS_OUTPUT_FULL;
                }
                if self.last_was_command {
                    s |= STATUS_COMMAND;
                }
                *first = s;
            }
            _ => {}
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&b) = data.first() else {
            return;
        };
        match offset {
            COMMAND_OFFSET => {
                self.last_was_command = true;
                self.command(b);
            }
            DATA_OFFSET => {
                self.last_was_command = false;
                match self.pending.take() {
                    Some(CMD_WRITE_CTR) => self.ctr = b,
                    Some(CMD_WRITE_OUTPUT_PORT) => self.output_port = b,
                    // Bytes for a keyboard that is not there: it answers nothing.
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn dev() -> (I8042, Arc<AtomicUsize>) {
        let resets = Arc::new(AtomicUsize::new(0));
        let r = resets.clone();
        let dev = I8042::new(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        (dev, resets)
    }

    fn read(dev: &mut I8042, offset: u64) -> u8 {
        let mut b = [0xffu8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn only_0xfe_on_the_command_port_resets() {
        let (mut dev, resets) = dev();
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        dev.write(DATA_OFFSET, &[0xfe]);
        dev.write(COMMAND_OFFSET, &[0xd1]);
        dev.write(COMMAND_OFFSET, &[]);
        dev.write(u64::MAX, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 0);
        dev.write(COMMAND_OFFSET, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn answers_the_probe_commands() {
        let (mut dev, _) = dev();
        dev.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_ne!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        assert_eq!(read(&mut dev, DATA_OFFSET), 0x45);
        assert_eq!(read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL, 0);
        dev.write(COMMAND_OFFSET, &[CMD_WRITE_CTR]);
        dev.write(DATA_OFFSET, &[0x20]);
        dev.write(COMMAND_OFFSET, &[CMD_READ_CTR]);
        assert_eq!(read(&mut dev, DATA_OFFSET), 0x20);
        dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        assert_eq!(read(&mut dev, DATA_OFFSET), 0x55);
        // A guest flooding commands cannot grow the queue without bound.
        for _ in 0..1000 {
            dev.write(COMMAND_OFFSET, &[CMD_SELF_TEST]);
        }
        let mut n = 0;
        while read(&mut dev, COMMAND_OFFSET) & STATUS_OUTPUT_FULL != 0 {
            read(&mut dev, DATA_OFFSET);
            n += 1;
        }
        assert_eq!(n, MAX_OUTPUT);
    }
}

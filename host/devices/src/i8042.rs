//! The part of the i8042 keyboard controller a micro-VM needs: the CPU reset line.
//!
//! Linux booted with `reboot=k` restarts (and, with `panic=-1`, dies) by writing the
//! "pulse reset" command 0xFE to the command port 0x64. The device sits at ports
//! 0x60..=0x64 and reports an idle controller (empty buffers) on reads.

use crate::bus::BusDevice;

/// First port of the controller.
pub const I8042_BASE: u16 = 0x60;
/// Ports covered, 0x60..=0x64.
pub const I8042_LEN: u64 = 5;
/// Offset of the command/status port (0x64).
const COMMAND_OFFSET: u64 = 4;
/// The command that pulses the CPU reset line.
const CMD_RESET_CPU: u8 = 0xfe;

/// The i8042 controller; calls the reset handler when the guest resets the CPU.
pub struct I8042 {
    on_reset: Box<dyn FnMut() + Send>,
}

impl std::fmt::Debug for I8042 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("I8042").finish_non_exhaustive()
    }
}

impl I8042 {
    /// A controller calling `on_reset` for each reset command.
    pub fn new(on_reset: Box<dyn FnMut() + Send>) -> Self {
        Self { on_reset }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Status: output buffer empty, input buffer empty; data port: nothing pending.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == COMMAND_OFFSET && data.first() == Some(&CMD_RESET_CPU) {
            (self.on_reset)();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn only_0xfe_on_the_command_port_resets() {
        let resets = Arc::new(AtomicUsize::new(0));
        let r = resets.clone();
        let mut dev = I8042::new(Box::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        }));
        let mut status = [0xffu8];
        dev.read(COMMAND_OFFSET, &mut status);
        assert_eq!(status, [0]);
        dev.write(0, &[0xfe]);
        dev.write(COMMAND_OFFSET, &[0xd1]);
        dev.write(COMMAND_OFFSET, &[]);
        dev.write(u64::MAX, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 0);
        dev.write(COMMAND_OFFSET, &[0xfe]);
        assert_eq!(resets.load(Ordering::SeqCst), 1);
    }
}

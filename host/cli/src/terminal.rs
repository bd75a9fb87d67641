//! The terminal on standard input in another mode until dropped: raw while `-t` carries it
//! to a container, without echo while a password is typed. One guard restores what it
//! found, whichever mode it set.

/// The settings of a terminal (standard input's) before a mode was set; dropping it puts
/// them back.
pub struct TerminalMode {
    #[cfg(unix)]
    terminal: Box<dyn std::os::fd::AsFd>,
    #[cfg(unix)]
    saved: nix::sys::termios::Termios,
    #[cfg(windows)]
    saved: (windows_sys::Win32::Foundation::HANDLE, u32),
}

impl std::fmt::Debug for TerminalMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalMode").finish_non_exhaustive()
    }
}

#[cfg(unix)]
impl TerminalMode {
    /// Raw mode (`cfmakeraw`: no line editing, echo or signal keys, bytes as typed); `None`
    /// when standard input is no terminal.
    pub fn raw() -> Option<Self> {
        Self::change(Box::new(std::io::stdin()), nix::sys::termios::cfmakeraw)
    }

    /// Echo off, the rest as it was; `None` when standard input is no terminal.
    pub fn no_echo() -> Option<Self> {
        Self::change(Box::new(std::io::stdin()), no_echo)
    }

    fn change(
        terminal: Box<dyn std::os::fd::AsFd>,
        edit: impl FnOnce(&mut nix::sys::termios::Termios),
    ) -> Option<Self> {
        use nix::sys::termios::{tcgetattr, tcsetattr, SetArg};
        let saved = tcgetattr(terminal.as_fd()).ok()?;
        let mut changed = saved.clone();
        edit(&mut changed);
        tcsetattr(terminal.as_fd(), SetArg::TCSANOW, &changed).ok()?;
        Some(Self { terminal, saved })
    }
}

#[cfg(unix)]
fn no_echo(t: &mut nix::sys::termios::Termios) {
    t.local_flags.remove(nix::sys::termios::LocalFlags::ECHO);
}

#[cfg(unix)]
impl Drop for TerminalMode {
    fn drop(&mut self) {
        use nix::sys::termios::{tcsetattr, SetArg};
        let _ = tcsetattr(self.terminal.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(windows)]
impl TerminalMode {
    /// Echo off; `None` when standard input is no console.
    pub fn no_echo() -> Option<Self> {
        use windows_sys::Win32::System::Console::{
            GetConsoleMode, GetStdHandle, SetConsoleMode, ENABLE_ECHO_INPUT, STD_INPUT_HANDLE,
        };
        // SAFETY: GetStdHandle has no preconditions.
        let handle = unsafe { GetStdHandle(STD_INPUT_HANDLE) };
        let mut mode = 0;
        // SAFETY: `mode` is a valid, writable CONSOLE_MODE; a handle that is no console
        // (or none) makes GetConsoleMode fail.
        if unsafe { GetConsoleMode(handle, &mut mode) } == 0 {
            return None;
        }
        // SAFETY: the console handle just read, with the mode read from it less echo.
        if unsafe { SetConsoleMode(handle, mode & !ENABLE_ECHO_INPUT) } == 0 {
            return None;
        }
        Some(Self {
            saved: (handle, mode),
        })
    }
}

#[cfg(windows)]
impl Drop for TerminalMode {
    fn drop(&mut self) {
        let (handle, mode) = self.saved;
        // SAFETY: restores the mode read in `no_echo` on the same console handle.
        unsafe { windows_sys::Win32::System::Console::SetConsoleMode(handle, mode) };
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use nix::sys::termios::{tcgetattr, LocalFlags};

    /// A pseudo-terminal: its master (kept open, or the terminal hangs up) and its slave.
    fn pty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        let p = nix::pty::openpty(None, None).expect("openpty");
        (p.master, p.slave)
    }

    #[test]
    fn modes_are_set_and_put_back() {
        let (_master, tty) = pty();
        let before = tcgetattr(&tty).unwrap();
        assert!(before
            .local_flags
            .contains(LocalFlags::ECHO | LocalFlags::ICANON));

        let quiet = TerminalMode::change(Box::new(tty.try_clone().unwrap()), no_echo).unwrap();
        let now = tcgetattr(&tty).unwrap();
        assert!(!now.local_flags.contains(LocalFlags::ECHO), "echo is off");
        assert!(
            now.local_flags.contains(LocalFlags::ICANON),
            "lines are still edited"
        );
        drop(quiet);
        assert_eq!(tcgetattr(&tty).unwrap().local_flags, before.local_flags);

        let raw = TerminalMode::change(
            Box::new(tty.try_clone().unwrap()),
            nix::sys::termios::cfmakeraw,
        )
        .unwrap();
        let now = tcgetattr(&tty).unwrap();
        assert!(!now
            .local_flags
            .intersects(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG));
        drop(raw);
        let after = tcgetattr(&tty).unwrap();
        assert_eq!(after.local_flags, before.local_flags);
        assert_eq!(after.input_flags, before.input_flags);
        assert_eq!(after.output_flags, before.output_flags);
    }

    #[test]
    fn no_terminal_no_mode() {
        let file = tempfile::tempfile().unwrap();
        assert!(TerminalMode::change(Box::new(file), no_echo).is_none());
    }
}

//! Signals as they travel on the wire: Linux numbers, whatever the host's own numbering.
//!
//! The guest is Linux, so [`crate::Request::Signal`] carries Linux numbers. A macOS host
//! numbers USR1, USR2, STOP, CONT, CHLD and WINCH differently, so the host never sends
//! its `libc` constants: it names a signal ([`by_name`]) or uses the constants here.

/// SIGHUP.
pub const HUP: i32 = 1;
/// SIGINT.
pub const INT: i32 = 2;
/// SIGQUIT.
pub const QUIT: i32 = 3;
/// SIGKILL.
pub const KILL: i32 = 9;
/// SIGUSR1.
pub const USR1: i32 = 10;
/// SIGUSR2.
pub const USR2: i32 = 12;
/// SIGALRM.
pub const ALRM: i32 = 14;
/// SIGTERM.
pub const TERM: i32 = 15;
/// SIGCHLD.
pub const CHLD: i32 = 17;
/// SIGCONT.
pub const CONT: i32 = 18;
/// SIGSTOP.
pub const STOP: i32 = 19;
/// SIGWINCH.
pub const WINCH: i32 = 28;
/// The highest Linux signal number (the last real-time signal).
pub const MAX: i32 = 64;

/// Linux's standard signals by name (without `SIG`), in number order.
const NAMES: [(&str, i32); 31] = [
    ("HUP", HUP),
    ("INT", INT),
    ("QUIT", QUIT),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", KILL),
    ("USR1", USR1),
    ("SEGV", 11),
    ("USR2", USR2),
    ("PIPE", 13),
    ("ALRM", ALRM),
    ("TERM", TERM),
    ("STKFLT", 16),
    ("CHLD", CHLD),
    ("CONT", CONT),
    ("STOP", STOP),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", WINCH),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

/// The Linux number of a signal named as docker accepts it: `TERM`, `SIGTERM`, `sigterm`,
/// `RTMIN+3`, or a number from 1 to [`MAX`].
pub fn by_name(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=MAX).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(&(_, n)) = NAMES.iter().find(|(k, _)| *k == name) {
        return Some(n);
    }
    // Linux's real-time signals: RTMIN is 34 (glibc and musl keep 32 and 33).
    const RTMIN: i32 = 34;
    let rt = |offset: &str, base: i32, sign: i32| {
        let k = if offset.is_empty() {
            0
        } else {
            offset.parse::<i32>().ok()?
        };
        let n = base.checked_add(sign.checked_mul(k)?)?;
        (RTMIN..=MAX).contains(&n).then_some(n)
    };
    match name {
        "RTMIN" => Some(RTMIN),
        "RTMAX" => Some(MAX),
        _ => {
            if let Some(o) = name.strip_prefix("RTMIN+") {
                rt(o, RTMIN, 1)
            } else if let Some(o) = name.strip_prefix("RTMAX-") {
                rt(o, MAX, -1)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_are_linuxs() {
        assert_eq!(by_name("KILL"), Some(9));
        assert_eq!(by_name("sigterm"), Some(15));
        assert_eq!(by_name("SIGUSR1"), Some(10));
        assert_eq!(by_name("usr2"), Some(12));
        assert_eq!(by_name("STOP"), Some(19));
        assert_eq!(by_name("CONT"), Some(18));
        assert_eq!(by_name("WINCH"), Some(28));
        assert_eq!(by_name("9"), Some(9));
        assert_eq!(by_name("64"), Some(64));
        assert_eq!(by_name("RTMIN"), Some(34));
        assert_eq!(by_name("SIGRTMIN+3"), Some(37));
        assert_eq!(by_name("RTMAX-1"), Some(63));
        assert_eq!(by_name("RTMAX"), Some(64));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "", "0", "65", "-9", "NOPE", "SIG", "RTMIN+31", "RTMAX-31", "RTMIN+x", "KILLX",
        ] {
            assert_eq!(by_name(bad), None, "{bad:?}");
        }
    }

    /// Found while writing the protocol_frames fuzz target: an offset near i32's limits
    /// overflowed (a panic in debug builds, a wrapped number in release) instead of being
    /// refused.
    #[test]
    fn real_time_offsets_out_of_i32_are_refused() {
        for bad in [
            "RTMIN+2147483647",
            "SIGRTMIN+2147483614",
            "RTMAX--2147483648",
            "RTMAX-2147483647",
            "RTMIN+-2147483648",
            "RTMIN+99999999999",
        ] {
            assert_eq!(by_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_table_is_in_number_order_with_no_gaps() {
        for (i, (n, k)) in NAMES.iter().enumerate() {
            assert_eq!(*k, i as i32 + 1, "{n}");
            assert_eq!(by_name(n), Some(*k));
        }
    }

    /// On a Linux host the table agrees with libc; elsewhere it must not (that is the point).
    #[cfg(target_os = "linux")]
    #[test]
    fn on_linux_the_numbers_match_libc() {
        for (n, k) in [
            (HUP, libc::SIGHUP),
            (INT, libc::SIGINT),
            (QUIT, libc::SIGQUIT),
            (KILL, libc::SIGKILL),
            (USR1, libc::SIGUSR1),
            (USR2, libc::SIGUSR2),
            (ALRM, libc::SIGALRM),
            (TERM, libc::SIGTERM),
            (CHLD, libc::SIGCHLD),
            (CONT, libc::SIGCONT),
            (STOP, libc::SIGSTOP),
            (WINCH, libc::SIGWINCH),
        ] {
            assert_eq!(n, k);
        }
    }
}

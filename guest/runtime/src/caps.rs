//! Capability numbers.

use oci_spec::runtime::{Capabilities, Capability};

/// The kernel's number of a capability.
pub fn number(c: Capability) -> u32 {
    use Capability::*;
    match c {
        Chown => 0,
        DacOverride => 1,
        DacReadSearch => 2,
        Fowner => 3,
        Fsetid => 4,
        Kill => 5,
        Setgid => 6,
        Setuid => 7,
        Setpcap => 8,
        LinuxImmutable => 9,
        NetBindService => 10,
        NetBroadcast => 11,
        NetAdmin => 12,
        NetRaw => 13,
        IpcLock => 14,
        IpcOwner => 15,
        SysModule => 16,
        SysRawio => 17,
        SysChroot => 18,
        SysPtrace => 19,
        SysPacct => 20,
        SysAdmin => 21,
        SysBoot => 22,
        SysNice => 23,
        SysResource => 24,
        SysTime => 25,
        SysTtyConfig => 26,
        Mknod => 27,
        Lease => 28,
        AuditWrite => 29,
        AuditControl => 30,
        Setfcap => 31,
        MacOverride => 32,
        MacAdmin => 33,
        Syslog => 34,
        WakeAlarm => 35,
        BlockSuspend => 36,
        AuditRead => 37,
        Perfmon => 38,
        Bpf => 39,
        CheckpointRestore => 40,
    }
}

/// Bit mask of a capability set (`None`: empty).
pub fn mask(set: Option<&Capabilities>) -> u64 {
    set.map_or(0, |s| s.iter().fold(0u64, |m, c| m | (1u64 << number(*c))))
}

/// The highest capability number of the running kernel.
pub fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|n| *n < 64)
        .unwrap_or(40)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_use_kernel_numbers() {
        let s: Capabilities = [Capability::Chown, Capability::SysAdmin, Capability::Bpf]
            .into_iter()
            .collect();
        assert_eq!(mask(Some(&s)), 1 | (1 << 21) | (1 << 39));
        assert_eq!(mask(None), 0);
        assert_eq!(number(Capability::CheckpointRestore), 40);
    }
}

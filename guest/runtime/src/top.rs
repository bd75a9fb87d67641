//! Processes of a container, from /proc.

use std::path::Path;

/// One process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// pid (as the runtime sees it).
    pub pid: i32,
    /// Parent pid.
    pub ppid: i32,
    /// Real uid.
    pub uid: u32,
    /// State letter.
    pub state: String,
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// Command line, or `[comm]`.
    pub cmd: String,
}

/// Reads one process from `proc` (normally `/proc`).
pub fn read_proc(proc: &Path, pid: i32) -> Option<ProcInfo> {
    let dir = proc.join(pid.to_string());
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // Fields after comm: state(0) ppid(1) ... utime(11) stime(12) ... rss(21)
    let state = rest.first()?.to_string();
    let ppid = rest.get(1)?.parse().ok()?;
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    let rss_pages: u64 = rest.get(21)?.parse().ok()?;
    let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap_or(0);
    let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let cmd = if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        cmdline
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some(ProcInfo {
        pid,
        ppid,
        uid,
        state,
        rss_kib: rss_pages * page / 1024,
        cpu_ticks: utime + stime,
        cmd,
    })
}

/// Every process in the same pid namespace as `init_pid` (the container's processes),
/// sorted by pid.
pub fn processes(init_pid: i32) -> Vec<ProcInfo> {
    let proc = Path::new("/proc");
    let Ok(ns) = std::fs::read_link(proc.join(init_pid.to_string()).join("ns/pid")) else {
        return Vec::new();
    };
    let mut out: Vec<ProcInfo> = std::fs::read_dir(proc)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_link(proc.join(pid.to_string()).join("ns/pid"))
                .ok()
                .as_ref()
                == Some(&ns)
        })
        .filter_map(|pid| read_proc(proc, pid))
        .collect();
    out.sort_by_key(|p| p.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id() as i32;
        let p = read_proc(Path::new("/proc"), me).unwrap();
        assert_eq!(p.pid, me);
        assert!(p.ppid > 0);
        assert!(!p.cmd.is_empty());
        assert!(processes(me).iter().any(|p| p.pid == me));
    }
}

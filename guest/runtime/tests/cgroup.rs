//! cgroup v2 limits, in a guest (this host's cgroups are v1).
//!
//! Run by scripts/test-runtime-in-vm.sh, which boots the guest kernel with these tests as
//! its workload: `cgroup -- --ignored`. They fail (not skip) without cgroup v2.

use std::io::Read;
use std::path::{Path, PathBuf};

use berth_protocol::spec::{docker_spec, RunConfig};
use berth_runtime::{
    cgroup, testsupport, wait_pid, Container, CreateOptions, Layer, RuntimeConfig, Scratch, Stdio,
};

struct Fx {
    dir: tempfile::TempDir,
    layer: PathBuf,
    cfg: RuntimeConfig,
}

fn fixture() -> Fx {
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    assert!(
        cgroup::is_cgroup2(Path::new(cgroup::CGROUP_ROOT)),
        "needs cgroup v2 at /sys/fs/cgroup: run in the guest (scripts/test-runtime-in-vm.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer");
    testsupport::busybox_rootfs(&layer).unwrap();
    let cfg = RuntimeConfig {
        state_root: dir.path().join("state"),
        cgroup_root: PathBuf::from(cgroup::CGROUP_ROOT),
    };
    Fx { dir, layer, cfg }
}

fn pipes() -> (Stdio, std::fs::File, std::fs::File) {
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let null = Stdio::null().unwrap();
    (
        Stdio {
            stdin: null.stdin,
            stdout: out_w,
            stderr: err_w,
        },
        out_r.into(),
        err_r.into(),
    )
}

fn create(fx: &Fx, id: &str, cfg: RunConfig) -> (Container, std::fs::File, std::fs::File) {
    let spec = docker_spec(&RunConfig {
        hostname: id.into(),
        ..cfg
    });
    let (stdio, out, err) = pipes();
    let c = Container::create(
        &fx.cfg,
        CreateOptions {
            id: id.into(),
            spec,
            layers: vec![Layer::Dir(fx.layer.clone())],
            scratch: Scratch::Dir(fx.dir.path().join(format!("scratch-{id}"))),
            user: None,
            stdio,
        },
    )
    .unwrap();
    (c, out, err)
}

fn read(mut f: std::fs::File) -> String {
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    s
}

#[test]
#[ignore = "needs cgroup v2 (the guest): run by scripts/test-runtime-in-vm.sh"]
fn memory_hog_is_killed_at_memory_max_with_137() {
    let fx = fixture();
    let (mut c, out, _err) = create(
        &fx,
        "hog",
        RunConfig {
            // tail keeps the whole newline-free input in memory.
            args: vec!["tail".into(), "/dev/zero".into()],
            memory_bytes: Some(32 << 20),
            ..Default::default()
        },
    );
    let cg = c.cgroup().unwrap().path.clone();
    assert_eq!(
        std::fs::read_to_string(cg.join("memory.max"))
            .unwrap()
            .trim(),
        (32u64 << 20).to_string()
    );
    c.start().unwrap();
    assert_eq!(c.wait().unwrap(), 137);
    drop(out);
    let events = std::fs::read_to_string(cg.join("memory.events")).unwrap();
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("oom_kill ") && l != "oom_kill 0"),
        "{events}"
    );
    c.delete().unwrap();
    assert!(!cg.exists(), "cgroup removed on delete");
}

#[test]
#[ignore = "needs cgroup v2 (the guest): run by scripts/test-runtime-in-vm.sh"]
fn pids_max_stops_a_fork_bomb() {
    let fx = fixture();
    // The subshell forks until pids.max stops it; the outer shell then reports with
    // builtins only (no fork left).
    let (mut c, out, err) = create(
        &fx,
        "bomb",
        RunConfig {
            args: vec![
                "sh".into(),
                "-c".into(),
                "(for i in $(seq 60); do sleep 30 & done; echo all-forked); echo sub=$?; read n < /sys/fs/cgroup/pids.current; echo current=$n; read m < /sys/fs/cgroup/pids.max; echo max=$m".into(),
            ],
            pids_limit: Some(20),
            ..Default::default()
        },
    );
    let cg = c.cgroup().unwrap().clone();
    c.start().unwrap();
    let code = c.wait().unwrap();
    let out = read(out);
    let err = read(err);
    assert_eq!(code, 0, "{out} {err}");
    assert!(!out.contains("all-forked"), "{out}");
    assert!(err.contains("fork"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_ne!(lines[0], "sub=0");
    let current: u32 = lines[1].trim_start_matches("current=").parse().unwrap();
    assert!((10..=20).contains(&current), "{out}");
    assert_eq!(lines[2], "max=20");
    let events = std::fs::read_to_string(cg.path.join("pids.events")).unwrap();
    assert!(events.trim() != "max 0", "{events}");
    c.delete().unwrap();
    assert!(!cg.path.exists());
}

#[test]
#[ignore = "needs cgroup v2 (the guest): run by scripts/test-runtime-in-vm.sh"]
fn cpu_max_stats_cgroupns_and_exec_join() {
    let fx = fixture();
    let (mut c, out, _err) = create(
        &fx,
        "cpu",
        RunConfig {
            args: vec![
                "sh".into(),
                "-c".into(),
                "cat /sys/fs/cgroup/cpu.max; cat /proc/self/cgroup; sleep 100".into(),
            ],
            cpus: Some(0.5),
            ..Default::default()
        },
    );
    c.start().unwrap();
    let mut out = std::io::BufReader::new(out);
    let mut l1 = String::new();
    let mut l2 = String::new();
    std::io::BufRead::read_line(&mut out, &mut l1).unwrap();
    std::io::BufRead::read_line(&mut out, &mut l2).unwrap();
    assert_eq!(l1.trim(), "50000 100000");
    assert_eq!(
        l2.trim(),
        "0::/",
        "the container sees its cgroup as the root"
    );
    let cg = c.cgroup().unwrap().clone();
    let s = cg.stats();
    assert!(s.memory_current > 0 && s.pids_current >= 1, "{s:?}");
    // An exec lands in the same cgroup.
    let mut p = docker_spec(&RunConfig::default())
        .process()
        .clone()
        .unwrap();
    p.set_args(Some(vec!["sleep".into(), "100".into()]));
    let pid = c.exec(&p, None, Stdio::null().unwrap()).unwrap();
    assert!(cg.pids().contains(&pid), "{:?} lacks {pid}", cg.pids());
    c.delete().unwrap();
    assert_eq!(wait_pid(pid).unwrap(), 137);
    assert!(!cg.path.exists(), "{} left behind", cg.path.display());
}

//! Runtime tests as root on the host kernel, with busybox layers built here.
//!
//! Run by scripts/test.sh: `cargo test -p berth-runtime --test root -- --ignored`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_protocol::spec::{docker_spec, RunConfig};
use berth_runtime::{
    testsupport, wait_pid, Container, CreateOptions, Layer, RuntimeConfig, RuntimeError, Scratch,
    Status, Stdio,
};
use oci_spec::runtime::Spec;

const ROOT: &str = "needs root: run by scripts/test.sh";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (mounts, namespaces); run it through scripts/test.sh as root"
    );
}

struct Fixture {
    dir: tempfile::TempDir,
    layers: Vec<PathBuf>,
    cfg: RuntimeConfig,
}

impl Fixture {
    /// Three layers: busybox; a middle one adding files; a top one overriding and deleting.
    fn new() -> Fixture {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("l0");
        testsupport::busybox_rootfs(&base).unwrap();
        std::fs::write(base.join("etc/motd"), "base\n").unwrap();
        std::fs::write(base.join("etc/doomed"), "x\n").unwrap();
        let mid = dir.path().join("l1");
        std::fs::create_dir_all(mid.join("etc")).unwrap();
        std::fs::write(mid.join("etc/motd"), "mid\n").unwrap();
        std::fs::write(mid.join("etc/mid-only"), "mid-only\n").unwrap();
        let top = dir.path().join("l2");
        std::fs::create_dir_all(top.join("etc")).unwrap();
        std::fs::write(top.join("etc/motd"), "top\n").unwrap();
        // An overlay whiteout in a lower layer hides the file below it.
        nix::sys::stat::mknod(
            &top.join("etc/doomed"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let cfg = RuntimeConfig {
            state_root: dir.path().join("state"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        };
        Fixture {
            layers: vec![base, mid, top],
            dir,
            cfg,
        }
    }

    fn scratch(&self, id: &str) -> Scratch {
        Scratch::Dir(self.dir.path().join(format!("scratch-{id}")))
    }

    fn opts(&self, id: &str, spec: Spec, stdio: Stdio) -> CreateOptions {
        CreateOptions {
            id: id.into(),
            spec,
            layers: self.layers.iter().cloned().map(Layer::Dir).collect(),
            scratch: self.scratch(id),
            user: None,
            stdio,
        }
    }
}

fn spec(args: &[&str]) -> Spec {
    let mut s = docker_spec(&RunConfig {
        args: args.iter().map(|s| s.to_string()).collect(),
        hostname: "box".into(),
        ..Default::default()
    });
    // Docker's hard limit (524288) is above what this host's root may raise to (no
    // CAP_SYS_RESOURCE here); keep docker's soft limit within the current hard one.
    let nofile = oci_spec::runtime::PosixRlimitBuilder::default()
        .typ(oci_spec::runtime::PosixRlimitType::RlimitNofile)
        .soft(1024u64)
        .hard(4096u64)
        .build()
        .unwrap();
    s.process_mut()
        .as_mut()
        .unwrap()
        .set_rlimits(Some(vec![nofile]));
    s
}

/// Pipes for stdio: (Stdio for the child, stdin writer, stdout reader, stderr reader).
fn pipes() -> (Stdio, std::fs::File, std::fs::File, std::fs::File) {
    let (in_r, in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    (
        Stdio {
            stdin: in_r,
            stdout: out_w,
            stderr: err_w,
        },
        in_w.into(),
        out_r.into(),
        err_r.into(),
    )
}

fn read_all(mut f: std::fs::File) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        s
    })
}

struct Ran {
    code: i32,
    out: String,
    err: String,
}

/// Creates, starts and waits for a container running `spec`, feeding `input` to stdin.
fn run_with(fx: &Fixture, id: &str, spec: Spec, user: Option<&str>, input: &[u8]) -> Ran {
    let (stdio, mut stdin, out, err) = pipes();
    let mut o = fx.opts(id, spec, stdio);
    o.user = user.map(str::to_string);
    let mut c = Container::create(&fx.cfg, o).unwrap();
    let out = read_all(out);
    let err = read_all(err);
    c.start().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let code = c.wait().unwrap();
    let r = Ran {
        code,
        out: out.join().unwrap(),
        err: err.join().unwrap(),
    };
    c.delete().unwrap();
    r
}

fn run(fx: &Fixture, id: &str, args: &[&str]) -> Ran {
    run_with(fx, id, spec(args), None, b"")
}

fn mounts_under(p: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(p.to_str().unwrap()))
        .count()
}

#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn overlay_stacks_layers_and_writes_go_to_the_upper_dir() {
    let _ = ROOT;
    let fx = Fixture::new();
    let r = run(
        &fx,
        "overlay",
        &[
            "sh",
            "-c",
            "cat /etc/motd /etc/mid-only; test -e /etc/doomed && echo doomed-visible; echo new > /etc/created; rm /etc/mid-only; echo done",
        ],
    );
    assert_eq!(r.code, 0, "stderr: {}", r.err);
    assert_eq!(r.err, "");
    assert_eq!(r.out, "top\nmid-only\ndone\n");
    let upper = fx.dir.path().join("scratch-overlay/upper");
    assert_eq!(
        std::fs::read_to_string(upper.join("etc/created")).unwrap(),
        "new\n"
    );
    // The deletion became a whiteout in the upper dir; the lower layer is untouched.
    use std::os::unix::fs::FileTypeExt;
    let wh = std::fs::symlink_metadata(upper.join("etc/mid-only")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert!(fx.layers[1].join("etc/mid-only").exists());

    // commit turns the upper dir into an OCI layer with `.wh.` whiteouts.
    let mut tar = Vec::new();
    berth_runtime::commit::write_layer(&upper, &mut tar, &[]).unwrap();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"etc/created".to_string()), "{names:?}");
    assert!(names.contains(&"etc/.wh.mid-only".to_string()), "{names:?}");
    assert!(
        mounts_under(fx.dir.path()) == 0,
        "delete left mounts behind"
    );
    assert!(!fx.cfg.state_root.join("overlay").exists());
}

#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn namespaces_isolate_pid_hostname_mounts_and_network() {
    let fx = Fixture::new();
    let r = run(
        &fx,
        "ns",
        &[
            "sh",
            "-c",
            "echo pid=$$; hostname; ls /sys/class/net; cat /proc/self/mountinfo; ps -o pid,comm",
        ],
    );
    assert_eq!(r.code, 0, "stderr: {}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "box");
    assert_eq!(lines[2], "lo", "only loopback in a new network namespace");
    // The host's state directory (where the overlay is mounted) is invisible inside.
    assert!(!r.out.contains(fx.cfg.state_root.to_str().unwrap()));
    assert!(r.out.contains(" / / ") || r.out.contains(" / "));
    // ps sees only the container's processes.
    let ps: Vec<&str> = r.out.lines().skip_while(|l| !l.contains("PID")).collect();
    assert!(ps.len() <= 3, "{ps:?}");
    assert_ne!(nix::unistd::gethostname().unwrap().to_str().unwrap(), "box");
}

#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn exit_codes_and_signals() {
    let fx = Fixture::new();
    assert_eq!(run(&fx, "exit3", &["sh", "-c", "exit 3"]).code, 3);
    assert_eq!(run(&fx, "true", &["true"]).code, 0);
    assert_eq!(run(&fx, "false", &["false"]).code, 1);

    // SIGKILL from outside: 128 + 9.
    let (stdio, _i, out, _e) = pipes();
    let mut c =
        Container::create(&fx.cfg, fx.opts("kill", spec(&["sleep", "100"]), stdio)).unwrap();
    c.start().unwrap();
    assert_eq!(c.status(), Status::Running);
    c.signal(9).unwrap();
    assert_eq!(c.wait().unwrap(), 137);
    drop(out);
    c.delete().unwrap();

    // A handled SIGTERM.
    let (stdio, _i, out, _e) = pipes();
    let mut c = Container::create(
        &fx.cfg,
        fx.opts(
            "term",
            spec(&[
                "sh",
                "-c",
                "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.05; done",
            ]),
            stdio,
        ),
    )
    .unwrap();
    c.start().unwrap();
    let mut out = std::io::BufReader::new(out);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    c.signal(15).unwrap();
    assert_eq!(c.wait().unwrap(), 42);
    c.delete().unwrap();
}

#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn missing_or_unexecutable_commands_fail_like_docker() {
    let fx = Fixture::new();
    let (stdio, ..) = pipes();
    let e = Container::create(&fx.cfg, fx.opts("nf", spec(&["nope"]), stdio)).unwrap_err();
    assert!(matches!(e, RuntimeError::ExecutableNotFound(_)));
    assert_eq!(
        e.to_string(),
        "exec: \"nope\": executable file not found in $PATH"
    );
    let (stdio, ..) = pipes();
    let e = Container::create(&fx.cfg, fx.opts("nf2", spec(&["/no/such"]), stdio)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "exec: \"/no/such\": stat /no/such: no such file or directory"
    );
    let (stdio, ..) = pipes();
    let e = Container::create(&fx.cfg, fx.opts("ne", spec(&["/etc/motd"]), stdio)).unwrap_err();
    assert_eq!(e.to_string(), "exec: \"/etc/motd\": permission denied");
    // Nothing left behind by the failed creates.
    assert_eq!(mounts_under(fx.dir.path()), 0);
    assert_eq!(
        std::fs::read_dir(&fx.cfg.state_root).unwrap().count(),
        0,
        "state directories removed"
    );
    // A broken configuration names the field.
    let mut s = spec(&["true"]);
    s.process_mut().as_mut().unwrap().set_cwd("relative".into());
    let (stdio, ..) = pipes();
    match Container::create(&fx.cfg, fx.opts("bad", s, stdio)) {
        Err(RuntimeError::InvalidConfig { field, .. }) => assert_eq!(field, "process.cwd"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(mounts_under(fx.dir.path()), 0);
}

#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn stdin_stdout_stderr_are_separate_streams() {
    let fx = Fixture::new();
    let r = run_with(
        &fx,
        "cat",
        spec(&["sh", "-c", "cat; echo to-err >&2; echo to-out"]),
        None,
        b"hello\nworld\n",
    );
    assert_eq!(r.code, 0);
    assert_eq!(r.out, "hello\nworld\nto-out\n");
    assert_eq!(r.err, "to-err\n");
    // Larger than any pipe buffer: streamed, not buffered.
    let r = run(
        &fx,
        "big",
        &["sh", "-c", "head -c 5000000 /dev/zero | tr '\\0' a; echo"],
    );
    assert_eq!(r.code, 0, "{}", r.err);
    assert_eq!(r.out.len(), 5_000_001);
}

#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn exec_joins_the_running_container() {
    let fx = Fixture::new();
    let (stdio, _i, _o, _e) = pipes();
    let mut c = Container::create(&fx.cfg, fx.opts("ex", spec(&["sleep", "100"]), stdio)).unwrap();
    c.start().unwrap();
    let (estdio, mut ein, eout, eerr) = pipes();
    let mut p = spec(&[]).process().clone().unwrap();
    p.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "read x; echo got=$x; echo pid=$$; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; id -u; exit 7".into(),
    ]));
    let pid = c.exec(&p, Some("alice"), estdio).unwrap();
    let out = read_all(eout);
    let err = read_all(eerr);
    ein.write_all(b"input\n").unwrap();
    drop(ein);
    assert_eq!(wait_pid(pid).unwrap(), 7);
    let out = out.join().unwrap();
    assert_eq!(err.join().unwrap(), "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "got=input");
    assert_ne!(lines[1], "pid=1");
    assert_eq!(lines[2], "box");
    assert_eq!(lines[3].trim(), "sleep 100");
    assert_eq!(lines[4], "1000");
    // A missing executable in exec: docker's error.
    p.set_args(Some(vec!["nope".into()]));
    let (estdio, ..) = pipes();
    let e = c.exec(&p, None, estdio).unwrap_err();
    assert!(matches!(e, RuntimeError::ExecutableNotFound(_)), "{e}");
    // Delete while running kills everything and cleans up.
    let init = c.pid();
    c.delete().unwrap();
    assert_eq!(wait_pid(init).unwrap(), 137);
    assert_eq!(mounts_under(fx.dir.path()), 0);
}

#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn user_groups_caps_rlimits_and_masked_paths() {
    let fx = Fixture::new();
    let mut s = spec(&[
        "sh",
        "-c",
        "id; ulimit -n; grep CapBnd /proc/self/status; wc -c < /etc/motd; (echo x > /proc/sys/kernel/domainname) 2>&1; pwd",
    ]);
    // Mask a file that surely exists, beside docker's list (some of which this kernel lacks).
    let linux = s.linux_mut().as_mut().unwrap();
    let mut masked = linux.masked_paths().clone().unwrap();
    masked.push("/etc/motd".into());
    linux.set_masked_paths(Some(masked));
    let r = run_with(&fx, "user", s, Some("alice"), b"");
    assert_eq!(r.code, 0, "{}", r.err);
    let lines: Vec<&str> = r.out.lines().collect();
    assert!(
        lines[0].starts_with("uid=1000(alice) gid=1000(alice)"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("10(wheel)"), "{}", lines[0]);
    assert_eq!(lines[1], "1024");
    // Docker's 14 default capabilities.
    assert_eq!(lines[2], "CapBnd:\t00000000a80425fb");
    assert_eq!(lines[3].trim(), "0", "a masked file reads as /dev/null");
    assert!(lines[4].contains("Read-only file system"), "{}", lines[4]);
    assert_eq!(lines.last().unwrap(), &"/");

    let mut s = spec(&["pwd"]);
    s.process_mut()
        .as_mut()
        .unwrap()
        .set_cwd("/made/for/you".into());
    let r = run_with(&fx, "cwd", s, Some("nobody:nogroup"), b"");
    assert_eq!(
        (r.code, r.out.as_str()),
        (0, "/made/for/you\n"),
        "{}",
        r.err
    );
    // An unknown user is refused with docker's message.
    let (stdio, ..) = pipes();
    let mut o = fx.opts("nouser", spec(&["true"]), stdio);
    o.user = Some("mallory".into());
    let e = Container::create(&fx.cfg, o).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unable to find user mallory: no matching entries in passwd file"
    );
}

fn openpty() -> (OwnedFd, OwnedFd) {
    let r = nix::pty::openpty(None, None).unwrap();
    (r.master, r.slave)
}

#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn tty_gives_a_terminal_with_its_size() {
    let fx = Fixture::new();
    let (master, slave) = openpty();
    let ws = libc::winsize {
        ws_row: 33,
        ws_col: 101,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(r, 0);
    let mut s = spec(&[
        "sh",
        "-c",
        "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size; tty",
    ]);
    s.process_mut().as_mut().unwrap().set_terminal(Some(true));
    let mut c = Container::create(&fx.cfg, fx.opts("tty", s, Stdio::tty(slave).unwrap())).unwrap();
    c.start().unwrap();
    let mut m: std::fs::File = master.into();
    // Read while it runs: a pty drops what is unread when its last slave closes.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match m.read(&mut buf) {
                Ok(0) | Err(_) => break, // EIO once the slave side is closed
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    });
    let code = c.wait().unwrap();
    let out = reader.join().unwrap();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "is-a-tty\r\n33 101\r\n/dev/console\r\n");
    c.delete().unwrap();
}

/// Loop devices attached for a test, detached on drop.
struct Loops(Vec<String>);

impl Loops {
    fn attach(&mut self, file: &Path, read_only: bool) -> PathBuf {
        let mut cmd = std::process::Command::new("losetup");
        cmd.args(["-f", "--show"]);
        if read_only {
            cmd.arg("-r");
        }
        let out = cmd.arg(file).output().expect("losetup (util-linux)");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
        self.0.push(dev.clone());
        PathBuf::from(dev)
    }
}

impl Drop for Loops {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::process::Command::new("losetup")
                .args(["-d", d])
                .status();
        }
    }
}

fn must(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs root: run by scripts/test.sh"]
fn erofs_layer_devices_and_an_ext4_scratch_device() {
    let fx = Fixture::new();
    let d = fx.dir.path();
    // Two layers as erofs images (as berth-image makes them), on read-only loop devices.
    must(
        std::process::Command::new("mkfs.erofs")
            .arg(d.join("l0.erofs"))
            .arg(&fx.layers[0]),
    );
    must(
        std::process::Command::new("mkfs.erofs")
            .arg(d.join("l1.erofs"))
            .arg(&fx.layers[1]),
    );
    // The scratch disk: ext4.
    std::fs::File::create(d.join("scratch.img"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    must(
        std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(d.join("scratch.img")),
    );
    // The second layer shares a disk with a copy of the first, as berth puts an image's
    // layers on one disk: it is mounted from its byte range through a loop device.
    let first = std::fs::read(d.join("l0.erofs")).unwrap();
    let mut both = first.clone();
    both.extend(std::fs::read(d.join("l1.erofs")).unwrap());
    std::fs::write(d.join("both.img"), &both).unwrap();
    let mut loops = Loops(Vec::new());
    let l0 = loops.attach(&d.join("l0.erofs"), true);
    let shared = loops.attach(&d.join("both.img"), true);
    let scratch = loops.attach(&d.join("scratch.img"), false);

    let (stdio, _i, out, err) = pipes();
    let mut c = Container::create(
        &fx.cfg,
        CreateOptions {
            id: "blk".into(),
            spec: spec(&[
                "sh",
                "-c",
                "cat /etc/motd /etc/mid-only; echo kept > /etc/new",
            ]),
            layers: vec![
                // Type detection (erofs, then ext4) and an explicit type.
                Layer::Device {
                    path: l0,
                    fstype: None,
                    range: None,
                },
                Layer::Device {
                    path: shared.clone(),
                    fstype: Some("erofs".into()),
                    range: Some((first.len() as u64, (both.len() - first.len()) as u64)),
                },
            ],
            scratch: Scratch::Device {
                path: scratch.clone(),
                fstype: None,
            },
            user: None,
            stdio,
        },
    )
    .unwrap();
    let out = read_all(out);
    let err = read_all(err);
    c.start().unwrap();
    assert_eq!(c.wait().unwrap(), 0, "{}", err.join().unwrap());
    assert_eq!(out.join().unwrap(), "mid\nmid-only\n");
    c.delete().unwrap();
    assert_eq!(mounts_under(d), 0, "layer and scratch mounts detached");
    // The range's loop device goes with its mount (autoclear), a moment after it.
    let started = std::time::Instant::now();
    loop {
        let out = std::process::Command::new("losetup")
            .arg("-j")
            .arg(&shared)
            .output()
            .unwrap();
        if out.stdout.is_empty() {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 10,
            "a loop device is still attached to {}: {}",
            shared.display(),
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The upper dir lives on the scratch disk, ready for commit.
    let m = d.join("check");
    std::fs::create_dir(&m).unwrap();
    // The container's mount namespace lets go of the disk's superblock a moment after its
    // last process is reaped (deferred mntput): until then a read-only mount is EBUSY.
    let started = std::time::Instant::now();
    loop {
        match nix::mount::mount(
            Some(&scratch),
            &m,
            Some("ext4"),
            nix::mount::MsFlags::MS_RDONLY,
            None::<&str>,
        ) {
            Ok(()) => break,
            Err(nix::errno::Errno::EBUSY) if started.elapsed().as_secs() < 10 => {
                std::thread::sleep(std::time::Duration::from_millis(50))
            }
            Err(e) => panic!("mounting the scratch disk to check it: {e}"),
        }
    }
    let kept = std::fs::read_to_string(m.join("upper/etc/new"));
    nix::mount::umount(&m).unwrap();
    assert_eq!(kept.unwrap(), "kept\n");
}

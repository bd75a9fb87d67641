//! End-to-end and VM tests of berth, and the helpers they share.
//!
//! Test binaries named `vm_*` need a `/dev/kvm` able to boot Linux: `scripts/test.sh`
//! runs them through `scripts/with-kvm.sh`. Other tests marked `#[ignore]` need root,
//! the built kernel or a service that `scripts/test.sh` starts; it runs them all.

use std::path::PathBuf;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A path from an environment variable that `scripts/test.sh` sets; panics with what to do
/// when it is missing, so a test that needs it fails instead of passing vacuously.
pub fn required_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!("{var} is not set: run this test through scripts/test.sh, which builds it and sets {var}"),
    }
}

/// The `berth` binary that `scripts/test.sh` built (`BERTH_BIN`), else the one cargo built
/// beside this test (`<target>/debug/deps/<test>` to `<target>/debug/berth`).
pub fn berth_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("a test binary lives in <target>/debug/deps")
        .join("berth");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p berth` or set BERTH_BIN",
        bin.display()
    );
    bin
}

/// What a command left when it outran its deadline: the output so far.
#[derive(Debug)]
pub struct Overran {
    /// The output up to the kill (status is the kill's).
    pub output: std::process::Output,
}

/// Waits for `child` at most `limit`, reading its stdout and stderr as they come (so a
/// chatty child cannot block on a full pipe); kills it when the limit passes.
pub fn output_within(
    mut child: std::process::Child,
    limit: std::time::Duration,
) -> Result<std::process::Output, Overran> {
    use std::io::Read;
    fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let started = std::time::Instant::now();
    let mut overran = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break s;
        }
        if started.elapsed() > limit {
            overran = true;
            let _ = child.kill();
            break child.wait().expect("wait for the killed child");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Grandchildren may hold the pipes open: the readers get a moment, not forever.
    let collect = |h: std::thread::JoinHandle<Vec<u8>>| {
        let t = std::time::Instant::now();
        while !h.is_finished() && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if h.is_finished() {
            h.join().unwrap_or_default()
        } else {
            b"<the output pipe is still held open by another process>".to_vec()
        }
    };
    let output = std::process::Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    };
    if overran {
        Err(Overran { output })
    } else {
        Ok(output)
    }
}

/// Bytes as text, for assertion messages.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A `berth` command on state root `root`, with the guest kernel and initramfs that
/// `scripts/test.sh` built, and stdin closed.
pub fn berth_command(root: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(berth_bin());
    c.env("BERTH_ROOT", root)
        .env("BERTH_KERNEL", required_path("BERTH_KERNEL"))
        .env("BERTH_INITRAMFS", required_path("BERTH_INITRAMFS"))
        .stdin(std::process::Stdio::null());
    c
}

/// A fresh state root for one test binary (`berth-TAG-PID` in the temporary folder),
/// with the offline default image (`BERTH_DEFAULT_IMAGE`) loaded.
pub fn state_root(tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("berth-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&root).expect("create the state root");
    let out = berth_command(&root)
        .args(["load", "-i"])
        .arg(required_path("BERTH_DEFAULT_IMAGE"))
        .output()
        .expect("run berth load");
    assert!(out.status.success(), "berth load: {}", text(&out.stderr));
    root
}

/// The last `lines` lines of each named log (`console.log`, `vmm.log`...) of every
/// container under `root`: what explains a failure or a hang.
pub fn container_logs(root: &std::path::Path, names: &[&str], lines: usize) -> String {
    let mut s = String::new();
    let dirs = std::fs::read_dir(root.join("containers"))
        .into_iter()
        .flatten()
        .flatten();
    for d in dirs {
        for name in names {
            let path = d.path().join(name);
            if let Ok(t) = std::fs::read_to_string(&path) {
                let all: Vec<&str> = t.lines().collect();
                let tail = &all[all.len().saturating_sub(lines)..];
                s += &format!("--- {}\n{}\n", path.display(), tail.join("\n"));
            }
        }
    }
    s
}

/// `berth` on one state root, for the VM tests: every command has a deadline, and a
/// failure says what the containers' consoles and VMMs said.
#[derive(Debug)]
pub struct Berth {
    /// The state root.
    pub root: PathBuf,
    /// How long one command may take.
    pub limit: std::time::Duration,
}

impl Berth {
    /// berth on a fresh state root for test binary `tag`, the default image loaded.
    /// Commands may take `limit`, nested emulation included.
    pub fn new(tag: &str, limit: std::time::Duration) -> Self {
        Self {
            root: state_root(tag),
            limit,
        }
    }

    /// A `berth` command on this root, its output piped.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = berth_command(&self.root);
        c.args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    }

    /// Runs `berth ARGS` to its end, failing the test past the limit.
    #[track_caller]
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        let child = self.command(args).spawn().expect("run berth");
        self.finish(child, self.limit, &format!("berth {args:?}"))
    }

    /// Waits for `child` (`what`, for the message) to end, failing the test with the
    /// diagnostics if it runs past `limit`, so that a hang fails instead of stalling.
    #[track_caller]
    pub fn finish(
        &self,
        child: std::process::Child,
        limit: std::time::Duration,
        what: &str,
    ) -> std::process::Output {
        match output_within(child, limit) {
            Ok(out) => out,
            Err(Overran { output }) => panic!(
                "{what} did not end within {limit:?}:\nstdout: {}\nstderr: {}\n{}",
                text(&output.stdout),
                text(&output.stderr),
                self.diagnostics()
            ),
        }
    }

    /// Runs `berth ARGS`, which must succeed; its stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed ({:?}):\nstdout: {}\nstderr: {}\n{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr),
            self.diagnostics()
        );
        text(&out.stdout)
    }

    /// The tail of every container's console, VMM, monitor and container log, and the processes
    /// running: what explains a failure or a hang.
    pub fn diagnostics(&self) -> String {
        let mut s = container_logs(
            &self.root,
            &["console.log", "vmm.log", "monitor.log", "container.log"],
            25,
        );
        if let Ok(ps) = std::process::Command::new("ps")
            .args(["-eo", "pid,ppid,stat,args"])
            .output()
        {
            s += &format!("--- ps\n{}", text(&ps.stdout));
        }
        s
    }
}

/// A small tmpfs at a folder for the length of a test: a disk that can fill.
///
/// As root it is mounted over the folder. An ordinary user cannot mount, so there the
/// tmpfs is the one that whoever ran the tests as that user mounted for it and named in
/// `BERTH_TEST_SMALL_DISK` (scripts/as-test-user.sh `--small-disk`): the folder becomes a
/// link to it for the length of the test. Without it, the test fails.
#[derive(Debug)]
pub struct SmallDisk {
    dir: PathBuf,
    /// The tmpfs the link points to, when this is an ordinary user's.
    lent: Option<PathBuf>,
}

impl SmallDisk {
    /// A tmpfs of `mib` MiB (as root), or at least that big (an ordinary user's), at
    /// `dir`, an empty folder.
    pub fn mount(dir: &std::path::Path, mib: u64) -> SmallDisk {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Self::lent(dir, mib);
        }
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        SmallDisk {
            dir: dir.to_path_buf(),
            lent: None,
        }
    }

    /// An ordinary user's: `dir` becomes a link to the tmpfs in `BERTH_TEST_SMALL_DISK`,
    /// which must be a file system of its own, this user's, empty and at least `mib` MiB.
    fn lent(dir: &std::path::Path, mib: u64) -> SmallDisk {
        use std::os::unix::fs::MetadataExt;
        let disk = std::env::var_os("BERTH_TEST_SMALL_DISK")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                panic!(
                    "this test needs a small disk, and an ordinary user cannot mount one: run \
                     it as root, or through scripts/as-test-user.sh --small-disk {mib} \
                     (scripts/test.sh does), which sets BERTH_TEST_SMALL_DISK"
                )
            });
        let meta = std::fs::metadata(&disk)
            .unwrap_or_else(|e| panic!("BERTH_TEST_SMALL_DISK={}: {e}", disk.display()));
        let parent = std::fs::metadata(disk.join("..")).expect("the small disk's parent");
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        assert!(
            meta.is_dir() && meta.dev() != parent.dev() && meta.uid() == uid,
            "BERTH_TEST_SMALL_DISK={} is not a mounted file system of this user's",
            disk.display()
        );
        assert!(
            std::fs::read_dir(&disk)
                .expect("list the small disk")
                .next()
                .is_none(),
            "the small disk {} is in use (not empty)",
            disk.display()
        );
        std::fs::remove_dir(dir)
            .unwrap_or_else(|e| panic!("{} must be an empty folder: {e}", dir.display()));
        std::os::unix::fs::symlink(&disk, dir).expect("link the folder to the small disk");
        let lent = SmallDisk {
            dir: dir.to_path_buf(),
            lent: Some(disk),
        };
        let total = lent.statfs().0;
        assert!(
            total >= mib << 20,
            "the small disk has {total} bytes, fewer than the test's {mib} MiB"
        );
        lent
    }

    /// Bytes in all, and bytes free.
    fn statfs(&self) -> (u64, u64) {
        let out = std::process::Command::new("stat")
            .args(["-L", "-f", "-c", "%b %a %S"])
            .arg(&self.dir)
            .output()
            .expect("run stat");
        let text = String::from_utf8(out.stdout).expect("stat prints numbers");
        let n: Vec<u64> = text
            .split_whitespace()
            .map(|n| n.parse::<u64>().expect("stat prints numbers"))
            .collect();
        assert_eq!(n.len(), 3, "stat -f of {}: {text}", self.dir.display());
        (n[0] * n[2], n[1] * n[2])
    }

    /// Bytes free.
    pub fn free(&self) -> u64 {
        self.statfs().1
    }

    /// Fills the disk with file `name` until only `free` bytes are left.
    pub fn fill(&self, name: &str, free: u64) {
        let path = self.dir.join(name);
        let _ = std::fs::remove_file(&path);
        let size = self.free().saturating_sub(free);
        if size > 0 {
            let status = std::process::Command::new("fallocate")
                .args(["-l", &size.to_string()])
                .arg(&path)
                .status()
                .expect("run fallocate");
            assert!(status.success(), "fill {}", path.display());
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Some(disk) = &self.lent {
            // Emptied for the next test, and the folder is a folder again.
            for e in std::fs::read_dir(disk).into_iter().flatten().flatten() {
                let p = e.path();
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
            let _ = std::fs::remove_file(&self.dir);
            let _ = std::fs::create_dir(&self.dir);
            return;
        }
        // Lazily, so that a process a failed test left holding a file cannot keep the
        // mount in place.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `check` holds, failing after `limit`.
#[track_caller]
pub fn eventually(what: &str, limit: std::time::Duration, mut check: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A docker-registry on loopback for this test, stopped when dropped.
#[derive(Debug)]
pub struct Registry {
    child: std::process::Child,
    /// Where it listens, `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts one on a free port and waits until it listens.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  secret: berth-test\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry (scripts/setup.sh installs it)");
        eventually(
            "the registry to listen",
            std::time::Duration::from_secs(30),
            || std::net::TcpStream::connect(&addr).is_ok(),
        );
        Self {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

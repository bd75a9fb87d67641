//! One micro-VM per container: its files, the VMM process that owns it, and the
//! connection to the agent inside.
//!
//! The VMM runs as its own process (`berth vm run ...`, detached in its own session), so
//! a detached container outlives the CLI that started it.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};
use berth_containers::{ContainerRecord, VmmProcess};
use berth_protocol::{client, Client, StreamTarget, CONTROL_PORT, STREAM_PORT};
use tokio::net::UnixStream;

/// Extra guest memory on top of the container's limit: the guest kernel and the agent.
const GUEST_OVERHEAD_MIB: u64 = 96;
/// Smallest micro-VM berth starts.
const MIN_VM_MIB: u64 = 256;
/// Size of a container's sparse scratch disk (its writable layer).
const SCRATCH_BYTES: u64 = 8 << 30;

/// The files of one container's micro-VM, all inside the container's own folder.
#[derive(Debug, Clone)]
pub struct VmFiles {
    dir: PathBuf,
    id: String,
}

/// Where berth keeps its sockets: `$XDG_RUNTIME_DIR/berth`, else `/run/berth` for root and
/// `/tmp/berth-UID` for others. Socket paths must stay short (108 bytes with the `_PORT`
/// suffixes of guest-initiated connections), so they cannot live in the state folder.
pub fn runtime_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("berth"),
        // SAFETY: getuid has no preconditions and cannot fail.
        None => match unsafe { libc::getuid() } {
            0 => PathBuf::from("/run/berth"),
            uid => PathBuf::from(format!("/tmp/berth-{uid}")),
        },
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("create the runtime folder {}", dir.display()))?;
    check_private_dir(&dir)?;
    Ok(dir)
}

/// Refuses a runtime folder someone else could reach into: in a shared `/tmp` another
/// user may have made `berth-UID` first, or put a link there.
fn check_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(dir)
        .with_context(|| format!("inspect the runtime folder {}", dir.display()))?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(Error::Conflict(format!(
            "the runtime folder {} is not a private folder of this user (a link, another \
             owner, or open to others): remove it, or set XDG_RUNTIME_DIR",
            dir.display()
        )));
    }
    Ok(())
}

impl VmFiles {
    /// The files of container `id`, stored in `dir`.
    pub fn new(dir: PathBuf, id: &str) -> Self {
        Self {
            dir,
            id: id.to_string(),
        }
    }
    /// The VMM's vsock socket (Firecracker-style `CONNECT <port>`), in the runtime folder.
    pub fn vsock(&self) -> PathBuf {
        runtime_dir()
            .unwrap_or_else(|_| std::env::temp_dir())
            .join(format!("{}.vsock", &self.id[..32.min(self.id.len())]))
    }

    /// Removes the VM's sockets (the VMM removes them itself when it ends cleanly).
    pub fn remove_sockets(&self) {
        let vsock = self.vsock();
        let _ = fs::remove_file(&vsock);
        if let (Some(dir), Some(name)) = (vsock.parent(), vsock.file_name()) {
            let prefix = format!("{}_", name.to_string_lossy());
            if let Ok(entries) = fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&prefix) {
                        let _ = fs::remove_file(e.path());
                    }
                }
            }
        }
    }
    /// The guest's serial console.
    pub fn console(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// The VMM's own messages.
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }
    /// The messages of the container's monitor (its warnings and why it ended early).
    pub fn monitor_log(&self) -> PathBuf {
        self.dir.join("monitor.log")
    }
    /// The writable layer's disk.
    pub fn scratch(&self) -> PathBuf {
        self.dir.join("scratch.img")
    }
    /// The container's kept output.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("container.log")
    }

    /// The VMM's own last error (`berth-vmm: ...` in its log), when it failed.
    pub fn vmm_error(&self) -> Option<String> {
        let text = fs::read_to_string(self.vmm_log()).ok()?;
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("berth-vmm: "))
            .map(|l| {
                l.strip_prefix("cannot run the VM: ")
                    .unwrap_or(l)
                    .to_string()
            })
    }

    /// How many bytes the console holds (it grows across boots of one container).
    pub fn console_len(&self) -> u64 {
        fs::metadata(self.console()).map(|m| m.len()).unwrap_or(0)
    }

    /// Whether the VM, started when the console held `console_before` bytes, failed
    /// before its kernel printed a word: it died of a triple fault, or (its VMM still
    /// `alive` when the agent's wait ran out) it hung. Linux says why it panics, so such
    /// a failure comes from under the guest: QEMU's emulation of nested SVM, where CI
    /// runs the VM tests, does both now and then on a boot. Booting once more is cheap.
    pub fn failed_silently(&self, console_before: u64, alive: bool) -> bool {
        self.console_len() == console_before
            && (alive
                || fs::read_to_string(self.vmm_log()).is_ok_and(|l| l.contains("triple-faulted")))
    }

    /// The last lines the guest and the VMM printed, to explain a failure.
    pub fn last_words(&self) -> String {
        let mut out = String::new();
        for path in [self.console(), self.vmm_log()] {
            if let Ok(text) = fs::read_to_string(&path) {
                let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                let tail = &lines[lines.len().saturating_sub(12)..];
                if !tail.is_empty() {
                    out.push_str(&format!("\n--- last lines of {} ---\n", path.display()));
                    out.push_str(&tail.join("\n"));
                }
            }
        }
        out
    }
}

/// The guest kernel and the agent's initramfs: `BERTH_KERNEL` and `BERTH_INITRAMFS`, else
/// `kernel/vmlinux` and `kernel/initramfs.cpio.gz` under the state root.
pub fn guest_boot_files(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let pick = |var: &str, default: PathBuf| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or(default)
    };
    let kernel = pick("BERTH_KERNEL", root.join("kernel/vmlinux"));
    let initrd = pick("BERTH_INITRAMFS", root.join("kernel/initramfs.cpio.gz"));
    for (what, path, var) in [
        ("guest kernel", &kernel, "BERTH_KERNEL"),
        ("agent initramfs", &initrd, "BERTH_INITRAMFS"),
    ] {
        if !path.is_file() {
            return Err(Error::Vm(format!(
                "no {what} at {}: run scripts/quickstart.sh to build and install it, or set {var}",
                path.display()
            )));
        }
    }
    Ok((kernel, initrd))
}

/// Makes the container's scratch disk unless it exists: a sparse file holding a new,
/// empty ext4 filesystem with its own UUID, formatted in userspace (berth-ext4), so a
/// `run` pays for no `mkfs.ext4` and the host needs no e2fsprogs.
pub fn ensure_scratch(files: &VmFiles) -> Result<()> {
    let path = files.scratch();
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_extension("img.tmp");
    // A leftover of a start that died between format and rename: formatted again.
    let _ = fs::remove_file(&tmp);
    berth_ext4::format_new(&tmp, SCRATCH_BYTES)
        .map_err(|e| Error::Vm(format!("make the scratch disk: {e}")))?;
    fs::rename(&tmp, &path).with_context(|| format!("rename {}", tmp.display()))?;
    Ok(())
}

/// Memory of the micro-VM for a container limited to `memory_mib` (0: no limit).
pub fn vm_memory_mib(memory_mib: u64) -> u64 {
    if memory_mib == 0 {
        512
    } else {
        (memory_mib + GUEST_OVERHEAD_MIB).max(MIN_VM_MIB)
    }
}

/// Starts the VMM of `record` with its layer files (lowest first) on one disk, laid out
/// as [`crate::spec::layer_ranges`] says, and its scratch disk, in a
/// session of its own so that it outlives this CLI. With `net` the VM gets that network
/// device ([`crate::net::vmm_config`]); without, none.
pub fn spawn_vmm(
    root: &Path,
    record: &ContainerRecord,
    files: &VmFiles,
    layers: &[PathBuf],
    net: Option<berth_vmm::NetConfig>,
) -> Result<VmmProcess> {
    let (kernel, initrd) = guest_boot_files(root)?;
    ensure_scratch(files)?;
    let _ = fs::remove_file(files.vsock());
    let config = berth_vmm::VmConfig {
        kernel,
        initrd: Some(initrd),
        cmdline: format!("berth.id={}", record.short_id()),
        memory_mib: vm_memory_mib(record.spec.memory_mib),
        cpus: vcpus(record.spec.cpus) as u8,
        disks: layers
            .split_first()
            .map(|(first, rest)| berth_vmm::DiskConfig {
                path: first.clone(),
                read_only: true,
                followed_by: rest.to_vec(),
                serial: Some(crate::spec::LAYERS_SERIAL.into()),
            })
            .into_iter()
            .chain(std::iter::once(berth_vmm::DiskConfig {
                path: files.scratch(),
                read_only: false,
                followed_by: Vec::new(),
                serial: Some(crate::spec::SCRATCH_SERIAL.into()),
            }))
            .collect(),
        vsock: Some(berth_vmm::VsockConfig {
            socket: files.vsock(),
            guest_cid: u64::from(berth_protocol::GUEST_CID),
        }),
        console: berth_vmm::ConsoleConfig::File(files.console()),
        rng: true,
        net,
        shares: crate::mounts::shares(root, &record.spec)?
            .into_iter()
            .map(|s| berth_vmm::ShareConfig {
                tag: s.tag,
                path: s.path,
                read_only: s.read_only,
            })
            .collect(),
    };
    let config_path = files.dir.join("vm.json");
    fs::write(
        &config_path,
        serde_json::to_vec_pretty(&config)
            .map_err(|e| Error::Vm(format!("encode the VM config: {e}")))?,
    )
    .with_context(|| format!("write {}", config_path.display()))?;
    // The small berth-vmm binary beside this one keeps the per-VM overhead low; the
    // hidden `berth vmm` runs the same code when it is missing.
    let exe = std::env::current_exe().context("find the berth executable")?;
    let vmm_bin = exe.with_file_name("berth-vmm");
    let mut cmd = if vmm_bin.is_file() {
        Command::new(vmm_bin)
    } else {
        let mut c = Command::new(exe);
        c.arg("vmm");
        c
    };
    cmd.arg("--config").arg(&config_path);
    let log = fs::File::create(files.vmm_log())
        .with_context(|| format!("create {}", files.vmm_log().display()))?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().context("dup the VMM log")?)
        .stderr(log);
    in_own_session(&mut cmd);
    let child = cmd.spawn().context("start the VMM process")?;
    let pid = child.id();
    // The child is reaped by whoever waits for the VMM; detaching the handle is fine.
    std::mem::forget(child);
    VmmProcess::of_pid(pid).ok_or_else(|| match files.vmm_error() {
        Some(why) => Error::Vm(format!("the micro-VM could not start: {why}")),
        None => Error::Vm(format!(
            "the VMM process exited at once{}",
            files.last_words()
        )),
    })
}

/// Makes `cmd` start in a session of its own (setsid), so that it outlives this process
/// and the terminal's signals (Ctrl-C, hang-up) do not reach it: VMMs and monitors.
pub(crate) fn in_own_session(cmd: &mut Command) {
    // SAFETY: the hook runs in the forked child before exec and only calls setsid, which
    // is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// How long to wait for the agent of a fresh VM: generous, since VMs nested under
/// emulation (CI) boot far slower than on hardware.
pub fn agent_timeout() -> Duration {
    let secs = std::env::var("BERTH_AGENT_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// Opens a vsock connection to `port` in the container's VM.
async fn connect_port(files: &VmFiles, port: u32) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(files.vsock()).await?;
    berth_protocol::vsock_connect(&mut s, port)
        .await
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()))?;
    Ok(s)
}

/// Connects to the agent, retrying while the VM boots, failing early if its VMM dies.
pub async fn connect_agent(
    files: &VmFiles,
    vmm: Option<VmmProcess>,
    timeout: Duration,
) -> Result<Client> {
    let started = Instant::now();
    loop {
        if let Ok(s) = connect_port(files, CONTROL_PORT).await {
            match Client::handshake(s).await {
                Ok(c) => return Ok(c),
                Err(e) => tracing::debug!("agent handshake: {e}"),
            }
        }
        if let Some(vmm) = vmm {
            if !vmm.is_alive() {
                reap(vmm.pid);
                // A VMM that refused its config (a published port in use, say) says why.
                if let Some(why) = files.vmm_error() {
                    return Err(Error::Vm(format!("the micro-VM could not start: {why}")));
                }
                return Err(Error::Vm(format!(
                    "the micro-VM stopped before its agent answered{}",
                    files.last_words()
                )));
            }
        }
        if started.elapsed() > timeout {
            return Err(Error::Vm(format!(
                "the agent in the micro-VM did not answer within {}s (BERTH_AGENT_TIMEOUT raises it){}",
                timeout.as_secs(),
                files.last_words()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Opens a data stream with the agent.
pub async fn open_stream(files: &VmFiles, target: StreamTarget) -> Result<UnixStream> {
    let s = connect_port(files, STREAM_PORT)
        .await
        .context("open a stream to the agent")?;
    Ok(client::open_stream(s, target).await?)
}

/// Collects the VMM if it is our child (it is, when this CLI started it).
pub fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: waitpid on a pid with WNOHANG only reads the child's status.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
}

/// Waits for the VMM to end, then kills it if it is still there after `grace`.
pub async fn wait_vmm_gone(vmm: VmmProcess, grace: Duration) {
    let started = Instant::now();
    while vmm.is_alive() {
        reap(vmm.pid);
        if started.elapsed() > grace {
            kill_vmm(vmm).await;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reap(vmm.pid);
}

/// Kills a VMM outright (SIGKILL), and collects it (waiting up to a second, without
/// holding up an async thread).
pub async fn kill_vmm(vmm: VmmProcess) {
    if vmm.is_alive() {
        // SAFETY: kill(2) with a pid whose start time was just checked.
        unsafe { libc::kill(vmm.pid as i32, libc::SIGKILL) };
    }
    for _ in 0..100 {
        reap(vmm.pid);
        if !vmm.is_alive() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Powers the VM off through the agent (sync first), then makes sure the VMM is gone.
pub async fn shutdown(client: Option<&Client>, vmm: Option<VmmProcess>) {
    if let Some(c) = client {
        let _ = tokio::time::timeout(Duration::from_secs(10), c.shutdown()).await;
    }
    if let Some(vmm) = vmm {
        wait_vmm_gone(vmm, Duration::from_secs(15)).await;
    }
}

/// vCPUs of a micro-VM for `--cpus N`: N rounded up, at least 1.
pub fn vcpus(cpus: f64) -> u32 {
    if cpus.is_finite() && cpus > 1.0 {
        cpus.ceil().min(f64::from(berth_vmm::config::MAX_CPUS)) as u32
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_in_its_own_session_leads_it() {
        let mut cmd = Command::new("sleep");
        cmd.arg("5");
        in_own_session(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        // SAFETY: getsid only reads the session of a process id.
        let (sid, ours) = unsafe { (libc::getsid(pid), libc::getsid(0)) };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(sid, pid, "the child leads a session of its own");
        assert_ne!(sid, ours);
    }

    #[test]
    fn a_runtime_folder_others_can_reach_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private");
        fs::create_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
        check_private_dir(&private).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_private_dir(&private).is_err(), "open to others");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&private, &link).unwrap();
        assert!(check_private_dir(&link).is_err(), "a link");
    }

    #[test]
    fn only_a_silent_triple_fault_or_hang_counts_as_a_failure_under_the_guest() {
        let dir = tempfile::tempdir().unwrap();
        let files = VmFiles::new(dir.path().to_path_buf(), "c1");
        fs::write(files.console(), "an earlier boot\n").unwrap();
        let before = files.console_len();
        fs::write(
            files.vmm_log(),
            "berth: the VM failed: vCPU 0 triple-faulted\n",
        )
        .unwrap();
        assert!(files.failed_silently(before, false));
        fs::write(
            files.console(),
            "an earlier boot\nKernel panic - not syncing\n",
        )
        .unwrap();
        assert!(
            !files.failed_silently(before, false),
            "a guest that spoke crashed itself"
        );
        let before = files.console_len();
        fs::write(
            files.vmm_log(),
            "berth: the VM failed: the guest ran out of memory\n",
        )
        .unwrap();
        assert!(!files.failed_silently(before, false), "only triple faults");
        assert!(
            files.failed_silently(before, true),
            "a boot that hung without a word"
        );
        fs::write(files.console(), "a word\n").unwrap();
        assert!(
            !files.failed_silently(before, true),
            "a guest that spoke and hung is its own"
        );
    }

    #[test]
    fn vm_sizes_follow_the_limits() {
        assert_eq!(vm_memory_mib(0), 512);
        assert_eq!(vm_memory_mib(32), MIN_VM_MIB);
        assert_eq!(vm_memory_mib(1024), 1024 + GUEST_OVERHEAD_MIB);
        assert_eq!(vcpus(0.5), 1);
        assert_eq!(vcpus(2.0), 2);
        assert_eq!(vcpus(2.5), 3);
    }
}

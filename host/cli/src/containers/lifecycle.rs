//! Creating, starting and running containers: boot the container's micro-VM, create the
//! container through the agent, start it, then either stream its stdio (foreground) or
//! leave a monitor process to keep its logs and record its end (detached).

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_containers::{now, ContainerRecord, RunSpec, Status, Store, VmmProcess};
use berth_protocol::chunk::{read_chunk, Chunk};
use berth_protocol::spec::{docker_spec, RunConfig};
use berth_protocol::{
    Client, ClientError, CreateRequest, ProcessRef, Source, StdioOptions, StreamTarget,
};
use tokio::signal::unix::{signal, SignalKind};

use super::image::{self, PreparedImage};
use super::logfile::LogWriter;
use super::stdio;
use super::vm::{self, VmFiles};
use super::{CreateArgs, RunArgs, EXIT_BERTH_FAILED};

/// Exit code of a crashed micro-VM's container.
pub const EXIT_VM_CRASHED: i32 = 255;

/// The state root and the container store.
#[derive(Debug)]
pub struct Ctx {
    /// berth's state root.
    pub root: PathBuf,
    /// Container records.
    pub store: Store,
}

impl Ctx {
    /// Opens the default state root.
    pub fn open() -> Result<Self> {
        let root = Store::default_root();
        let store = Store::open(&root)?;
        Ok(Self { root, store })
    }

    /// The files of a container's VM.
    pub fn files(&self, record: &ContainerRecord) -> VmFiles {
        VmFiles::new(self.store.dir(&record.id), &record.id)
    }
}

/// docker's exit status for a berth error: 126/127 when the agent says the executable
/// cannot run or does not exist, 125 otherwise.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(ClientError::Remote(w)) = cause.downcast_ref::<ClientError>() {
            return w.exit_code() as u8;
        }
        if let Some(w) = cause.downcast_ref::<berth_protocol::WireError>() {
            return w.exit_code() as u8;
        }
    }
    EXIT_BERTH_FAILED
}

/// Parses a docker memory size: `512m`, `1g`, `1048576`, `64M`.
pub fn parse_memory(text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .with_context(|| {
            format!("invalid memory size \"{text}\": use a number with k, m or g, like 512m")
        })?;
    let bytes = (n * mult as f64) as u64;
    if bytes < 6 << 20 {
        bail!("minimum memory limit allowed is 6MB, \"{text}\" is less");
    }
    Ok(bytes)
}

/// Environment entries from `-e` and `--env-file`: `KEY=VALUE`, or `KEY` alone to pass
/// this environment's value (skipped when unset), like docker.
fn user_env(args: &CreateArgs) -> Result<Vec<String>> {
    let mut raw = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("read the env file {}", file.display()))?;
        raw.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    raw.extend(args.env.iter().cloned());
    let mut out = Vec::new();
    for e in raw {
        match e.split_once('=') {
            Some(("", _)) => bail!("invalid environment variable \"{e}\": the name is empty"),
            Some(_) => out.push(e),
            None => {
                if let Ok(v) = std::env::var(&e) {
                    out.push(format!("{e}={v}"));
                }
            }
        }
    }
    Ok(out)
}

/// Merges `extra` into `base`: a later `KEY=` replaces an earlier one.
pub fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let mut out: Vec<String> = base.to_vec();
    for e in extra {
        let key = e.split('=').next().unwrap_or("");
        out.retain(|x| x.split('=').next() != Some(key));
        out.push(e.clone());
    }
    out
}

/// What the container runs, docker's way: `--entrypoint` replaces the image's entrypoint
/// and drops its command; CMD arguments replace the image's command.
fn build_spec(args: &CreateArgs, img: &PreparedImage) -> Result<RunSpec> {
    let (entrypoint, cmd) = match &args.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), args.command.clone()),
        Some(e) => (vec![e.clone()], args.command.clone()),
        None if args.command.is_empty() => (img.entrypoint.clone(), img.cmd.clone()),
        None => (img.entrypoint.clone(), args.command.clone()),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        bail!(
            "no command specified: the image {} has none, give one after the image name",
            args.image
        );
    }
    if !args.cpus.is_finite() || args.cpus <= 0.0 || args.cpus > 64.0 {
        bail!(
            "invalid --cpus {}: give a number of CPUs between 0.01 and 64",
            args.cpus
        );
    }
    let memory_mib = match &args.memory {
        Some(m) => parse_memory(m)?.div_ceil(1 << 20),
        None => 0,
    };
    Ok(RunSpec {
        image: args.image.clone(),
        image_id: img.id.clone(),
        args: argv,
        env: merge_env(&img.env, &user_env(args)?),
        workdir: args.workdir.clone().unwrap_or_else(|| img.workdir.clone()),
        user: args.user.clone().unwrap_or_else(|| img.user.clone()),
        hostname: args.hostname.clone().unwrap_or_default(),
        tty: args.tty,
        interactive: args.interactive,
        cpus: args.cpus,
        memory_mib,
        pids_limit: args.pids_limit.filter(|&n| n > 0),
        auto_remove: args.rm,
    })
}

/// The create request for a container whose VM has `layers` disks, then the scratch disk.
fn create_request(record: &ContainerRecord, layer_count: usize) -> Result<CreateRequest> {
    let spec = &record.spec;
    let hostname = if spec.hostname.is_empty() {
        record.short_id().to_string()
    } else {
        spec.hostname.clone()
    };
    let oci = docker_spec(&RunConfig {
        args: spec.args.clone(),
        env: spec.env.clone(),
        cwd: spec.workdir.clone(),
        hostname,
        tty: spec.tty,
        memory_bytes: (spec.memory_mib > 0).then_some((spec.memory_mib << 20) as i64),
        cpus: Some(spec.cpus),
        pids_limit: spec.pids_limit,
    });
    let disk = |i: usize| -> Result<String> {
        if i >= 26 {
            bail!("the image has {layer_count} layers; berth supports up to 25");
        }
        Ok(format!("/dev/vd{}", (b'a' + i as u8) as char))
    };
    let layers = (0..layer_count)
        .map(|i| {
            Ok(Source::Device {
                path: disk(i)?,
                fstype: Some("erofs".into()),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(CreateRequest {
        id: record.id.clone(),
        spec: oci,
        layers,
        scratch: Some(Source::Device {
            path: disk(layer_count)?,
            fstype: Some("ext4".into()),
        }),
        user: (!spec.user.is_empty()).then(|| spec.user.clone()),
        stdio: StdioOptions {
            tty: spec.tty,
            open_stdin: spec.interactive,
        },
    })
}

/// A container whose micro-VM is up and whose container is created (not started).
pub struct Booted {
    /// The agent.
    pub client: Client,
    /// The VMM process.
    pub vmm: VmmProcess,
    /// The VM's files.
    pub files: VmFiles,
}

/// Phases of a run, for `--timings`.
#[derive(Debug)]
pub struct Timings {
    start: Instant,
    last: Instant,
    phases: Vec<(String, Duration)>,
}

impl Timings {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            start: now,
            last: now,
            phases: Vec::new(),
        }
    }
    fn mark(&mut self, phase: &str) {
        let now = Instant::now();
        self.phases.push((phase.to_string(), now - self.last));
        self.last = now;
    }
    fn split_last(&mut self, first: &str, first_len: Duration, second: &str) {
        if let Some((_, d)) = self.phases.pop() {
            let a = first_len.min(d);
            self.phases.push((first.to_string(), a));
            self.phases.push((second.to_string(), d - a));
        }
    }
    fn print(&self) {
        for (phase, d) in &self.phases {
            eprintln!("timing: {phase:<18} {:>8.1} ms", d.as_secs_f64() * 1e3);
        }
        eprintln!(
            "timing: {:<18} {:>8.1} ms",
            "total",
            self.start.elapsed().as_secs_f64() * 1e3
        );
    }
}

/// Boots `record`'s micro-VM and creates the container in it.
async fn boot(
    ctx: &Ctx,
    record: &ContainerRecord,
    mut timings: Option<&mut Timings>,
    purpose: Purpose,
) -> Result<Booted> {
    let img = image::prepare_local(&ctx.root, &record.spec.image_id, &record.spec.image)?;
    if let Some(t) = timings.as_deref_mut() {
        t.mark("image ready");
    }
    let files = ctx.files(record);
    let vmm = vm::spawn_vmm(&ctx.root, record, &files, &img.layers)?;
    if let Some(t) = timings.as_deref_mut() {
        t.mark("VMM started");
    }
    ctx.store.update(&record.id, |r| {
        r.state.vmm = Some(vmm);
        if purpose == Purpose::Run {
            r.state.started_at = Some(now());
            r.state.finished_at = None;
            r.state.exit_code = None;
            r.state.error = None;
        }
    })?;
    let result = async {
        let client = vm::connect_agent(&files, Some(vmm), vm::agent_timeout()).await?;
        let info = client.ping().await?;
        // The guest has no clock of its own worth the name: give it the host's time.
        if let Err(e) = client.set_time_now().await {
            tracing::warn!("cannot set the guest clock: {e}");
        }
        if let Some(t) = timings.as_deref_mut() {
            t.mark("agent ready");
            // The guest's uptime splits the wait into kernel boot and agent start-up.
            let boot = Duration::from_millis(info.uptime_ms);
            let waited = t.phases.last().map(|p| p.1).unwrap_or_default();
            t.split_last("kernel boot", waited.saturating_sub(boot), "guest to agent");
        }
        client
            .create(create_request(record, img.layers.len())?)
            .await
            .with_context(|| format!("create container {} in its micro-VM", record.name))?;
        if let Some(t) = timings.as_deref_mut() {
            t.mark("container created");
        }
        Ok::<_, anyhow::Error>(Booted {
            client,
            vmm,
            files: files.clone(),
        })
    }
    .await;
    if let Err(e) = &result {
        vm::kill_vmm(vmm);
        match purpose {
            Purpose::Run => finish(ctx, record, None, Some(format!("{e:#}")))?,
            // `record` is the state from before this boot.
            Purpose::Files => restore_vmm(ctx, &record.id, record.state.vmm),
        }
    }
    result
}

/// Why a container's VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// To run the container: it becomes running, with a new start time.
    Run,
    /// To reach the files of a stopped container (`cp`, `commit`): its process is never
    /// started and its recorded state stays as it was.
    Files,
}

/// Puts back the VMM a record named before a files-only boot.
fn restore_vmm(ctx: &Ctx, id: &str, previous: Option<VmmProcess>) {
    let _ = ctx.store.update(id, |r| r.state.vmm = previous);
}

/// A container's files, reachable through an agent: its own VM when it runs, else a VM
/// booted for the purpose (the container is created there but never started).
pub struct FilesAccess {
    /// The container.
    pub record: ContainerRecord,
    /// Its VM's files.
    pub files: VmFiles,
    /// The agent.
    pub client: Client,
    /// The VMM booted for this access (`record` still names the one before): it is
    /// powered off at the end.
    booted: Option<VmmProcess>,
}

impl FilesAccess {
    /// Reaches the files of container `name`, running or not.
    pub async fn open(ctx: &Ctx, name: &str) -> Result<Self> {
        let record = ctx.store.resolve(name)?;
        let files = ctx.files(&record);
        if record.status() == Status::Running {
            let client = vm::connect_agent(&files, record.state.vmm, Duration::from_secs(10))
                .await
                .with_context(|| format!("reach the micro-VM of {}", record.name))?;
            return Ok(Self {
                record,
                files,
                client,
                booted: None,
            });
        }
        let booted = boot(ctx, &record, None, Purpose::Files)
            .await
            .with_context(|| format!("boot a micro-VM to reach the files of {}", record.name))?;
        Ok(Self {
            record,
            files,
            client: booted.client,
            booted: Some(booted.vmm),
        })
    }

    /// Runs `op` on the files; a VM booted for it is powered off afterwards, also when
    /// berth is interrupted meanwhile.
    pub async fn run<T>(
        self,
        ctx: &Ctx,
        op: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let result = if self.booted.is_some() {
            let mut term = signal(SignalKind::terminate())?;
            tokio::select! {
                r = op => r,
                _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
                _ = term.recv() => Err(anyhow::anyhow!("terminated")),
            }
        } else {
            op.await
        };
        if let Some(vmm) = self.booted {
            vm::shutdown(Some(&self.client), Some(vmm)).await;
            restore_vmm(ctx, &self.record.id, self.record.state.vmm);
        }
        result
    }
}

/// Records that a container ended; removes it when it was run with `--rm`.
pub fn finish(
    ctx: &Ctx,
    record: &ContainerRecord,
    code: Option<i32>,
    error: Option<String>,
) -> Result<()> {
    if record.spec.auto_remove {
        ctx.files(record).remove_sockets();
        image::unpin(&ctx.root, &record.id)?;
        return match ctx.store.remove(&record.id) {
            Ok(()) | Err(berth_containers::Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        };
    }
    match ctx.store.update(&record.id, |r| {
        r.state.exit_code = code.or(r.state.exit_code).or(Some(EXIT_VM_CRASHED));
        r.state.error = error.clone();
        r.state.finished_at = Some(now());
    }) {
        Ok(_) | Err(berth_containers::Error::Io { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Starts the monitor of a detached container, in a session of its own.
fn spawn_monitor(record: &ContainerRecord) -> Result<()> {
    let exe = std::env::current_exe().context("find the berth executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(["container-monitor", &record.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().context("start the container monitor")?;
    Ok(())
}

/// `berth create`.
pub async fn create(args: CreateArgs) -> Result<i32> {
    let ctx = Ctx::open()?;
    let img = image::prepare(&ctx.root, &args.image).await?;
    let spec = build_spec(&args, &img)?;
    let record = ctx.store.create(args.name.as_deref(), spec)?;
    image::pin(&ctx.root, &record.spec.image_id, &record.id)?;
    println!("{}", record.id);
    Ok(0)
}

/// `berth run`.
pub async fn run(args: RunArgs) -> Result<i32> {
    let ctx = Ctx::open()?;
    let mut timings = Timings::new();
    let img = image::prepare(&ctx.root, &args.create.image).await?;
    let spec = build_spec(&args.create, &img)?;
    let record = ctx.store.create(args.create.name.as_deref(), spec)?;
    image::pin(&ctx.root, &record.spec.image_id, &record.id)?;
    let booted = boot(&ctx, &record, Some(&mut timings), Purpose::Run).await?;
    let init = ProcessRef::init(record.id.clone());

    if args.detach {
        if let Err(e) = booted.client.start(init).await {
            vm::shutdown(Some(&booted.client), Some(booted.vmm)).await;
            finish(&ctx, &record, None, Some(e.to_string()))?;
            return Err(e.into());
        }
        spawn_monitor(&record)?;
        println!("{}", record.id);
        return Ok(0);
    }

    let code = foreground(&ctx, &record, booted, record.spec.interactive, &mut timings).await;
    if args.timings {
        timings.print();
    }
    code
}

/// Runs a booted container's process attached to this terminal, powers its VM off and
/// records the end: `run` without `-d`, and `start -a`.
async fn foreground(
    ctx: &Ctx,
    record: &ContainerRecord,
    booted: Booted,
    interactive: bool,
    timings: &mut Timings,
) -> Result<i32> {
    let log = LogWriter::open(&booted.files.logs())
        .with_context(|| format!("open {}", booted.files.logs().display()))?;
    let outcome = stdio::attach(
        &booted.files,
        &booted.client,
        ProcessRef::init(record.id.clone()),
        stdio::Mode {
            tty: record.spec.tty,
            interactive: interactive && record.spec.interactive,
            start: true,
        },
        Some(log),
    )
    .await;
    timings.mark("container ran");
    vm::shutdown(Some(&booted.client), Some(booted.vmm)).await;
    timings.mark("VM powered off");
    match outcome {
        Ok(code) => {
            finish(ctx, record, Some(code), None)?;
            Ok(code)
        }
        Err(e) => {
            let crashed = !booted.vmm.is_alive();
            let e = if crashed
                || matches!(e.downcast_ref::<ClientError>(), Some(ClientError::Closed))
            {
                e.context(format!(
                    "the micro-VM of container {} stopped unexpectedly{}",
                    record.name,
                    booted.files.last_words()
                ))
            } else {
                e
            };
            finish(ctx, record, None, Some(format!("{e:#}")))?;
            Err(e)
        }
    }
}

/// `berth start -a [-i]`: starts one container attached to this terminal; its exit code
/// is berth's.
pub async fn start_attached(name: &str, interactive: bool) -> Result<i32> {
    let ctx = Ctx::open()?;
    let record = ctx.store.resolve(name)?;
    if record.status() == Status::Running {
        bail!(
            "container {} is already running: use `berth logs -f {}` to follow it",
            record.name,
            record.name
        );
    }
    let mut timings = Timings::new();
    let booted = boot(&ctx, &record, None, Purpose::Run).await?;
    foreground(&ctx, &record, booted, interactive, &mut timings).await
}

/// `berth start`: boots each stopped container's VM and starts it in the background.
pub async fn start_all(names: &[String]) -> Result<i32> {
    let ctx = Ctx::open()?;
    let mut failed = false;
    for name in names {
        let result = async {
            let record = ctx.store.resolve(name)?;
            if record.status() == berth_containers::Status::Running {
                return Ok(());
            }
            let booted = boot(&ctx, &record, None, Purpose::Run).await?;
            if let Err(e) = booted
                .client
                .start(ProcessRef::init(record.id.clone()))
                .await
            {
                vm::shutdown(Some(&booted.client), Some(booted.vmm)).await;
                finish(&ctx, &record, None, Some(e.to_string()))?;
                return Err(e.into());
            }
            spawn_monitor(&record)
        }
        .await;
        match result {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: cannot start {name}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// The monitor of a detached container: keeps its output in the host-side log, waits
/// for it to exit, powers its VM off and records the exit code.
pub async fn monitor(id: &str) -> Result<i32> {
    let ctx = Ctx::open()?;
    let record = ctx.store.resolve(id)?;
    let files = ctx.files(&record);
    let vmm = record.state.vmm;
    let client = match vm::connect_agent(&files, vmm, Duration::from_secs(30)).await {
        Ok(c) => c,
        Err(e) => {
            finish(&ctx, &record, None, Some(format!("{e:#}")))?;
            return Err(e);
        }
    };
    let mut log = LogWriter::open(&files.logs())?;
    let mut stream = vm::open_stream(
        &files,
        StreamTarget::Logs {
            container: record.id.clone(),
            follow: true,
            tail: None,
        },
    )
    .await?;
    let logs = tokio::spawn(async move {
        while let Ok(Some(chunk)) = read_chunk(&mut stream).await {
            match chunk {
                Chunk::Log(rec) => {
                    if log.write(&rec).is_err() {
                        break;
                    }
                }
                Chunk::End | Chunk::Error(_) => break,
                Chunk::Data(_) => {}
            }
        }
    });
    let waited = client.wait(ProcessRef::init(record.id.clone())).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), logs).await;
    // A `stop` or `rm` may have powered the VM off already.
    vm::shutdown(Some(&client), vmm).await;
    let current = match ctx.store.resolve(&record.id) {
        Ok(r) => r,
        Err(_) => return Ok(0),
    };
    match waited {
        Ok(code) => finish(&ctx, &current, Some(code), None)?,
        Err(e) => finish(
            &ctx,
            &current,
            None,
            Some(format!(
                "the micro-VM stopped unexpectedly: {e}{}",
                files.last_words()
            )),
        )?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        create: CreateArgs,
    }

    fn args(argv: &[&str]) -> CreateArgs {
        Wrap::try_parse_from(std::iter::once("berth").chain(argv.iter().copied()))
            .unwrap()
            .create
    }

    fn image() -> PreparedImage {
        PreparedImage {
            id: "sha256:abc".into(),
            layers: Vec::new(),
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            workdir: "/srv".into(),
            user: "app".into(),
        }
    }

    #[test]
    fn memory_sizes_parse_like_docker() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("64MB").unwrap(), 64 << 20);
        assert_eq!(parse_memory("10485760").unwrap(), 10 << 20);
        assert!(parse_memory("1k").is_err(), "below docker's 6 MB minimum");
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("-5m").is_err());
    }

    #[test]
    fn entrypoint_and_command_combine_like_docker() {
        let img = image();
        let s = build_spec(&args(&["img"]), &img).unwrap();
        assert_eq!(s.args, ["/entry", "default"]);
        let s = build_spec(&args(&["img", "x", "-y"]), &img).unwrap();
        assert_eq!(s.args, ["/entry", "x", "-y"]);
        let s = build_spec(
            &args(&["--entrypoint", "/bin/sh", "img", "-c", "true"]),
            &img,
        )
        .unwrap();
        assert_eq!(s.args, ["/bin/sh", "-c", "true"]);
        let s = build_spec(&args(&["--entrypoint", "", "img", "ls"]), &img).unwrap();
        assert_eq!(s.args, ["ls"]);
        let mut bare = image();
        bare.entrypoint.clear();
        bare.cmd.clear();
        assert!(
            build_spec(&args(&["img"]), &bare).is_err(),
            "no command at all"
        );
    }

    #[test]
    fn options_override_image_defaults() {
        let img = image();
        let s = build_spec(
            &args(&[
                "-e", "A=2", "-e", "B=3", "-w", "/tmp", "-u", "0:0", "--cpus", "1.5", "-m", "256m",
                "--rm", "img",
            ]),
            &img,
        )
        .unwrap();
        assert_eq!(s.env, ["PATH=/bin", "A=2", "B=3"]);
        assert_eq!(s.workdir, "/tmp");
        assert_eq!(s.user, "0:0");
        assert_eq!(s.cpus, 1.5);
        assert_eq!(s.memory_mib, 256);
        assert!(s.auto_remove);
        let s = build_spec(&args(&["img"]), &img).unwrap();
        assert_eq!((s.workdir.as_str(), s.user.as_str()), ("/srv", "app"));
        assert!(build_spec(&args(&["--cpus", "0", "img"]), &img).is_err());
        assert!(build_spec(&args(&["-e", "=x", "img"]), &img).is_err());
    }

    #[test]
    fn layers_and_scratch_map_to_virtio_disks_in_order() {
        let img = image();
        let spec = build_spec(&args(&["--pids-limit", "20", "img"]), &img).unwrap();
        let record = ContainerRecord {
            id: "ab".repeat(32),
            name: "n".into(),
            created: 0,
            spec,
            state: Default::default(),
        };
        let req = create_request(&record, 2).unwrap();
        let paths: Vec<_> = req
            .layers
            .iter()
            .chain(req.scratch.iter())
            .map(|s| match s {
                Source::Device { path, .. } => path.clone(),
                Source::Dir { path } => path.clone(),
            })
            .collect();
        assert_eq!(paths, ["/dev/vda", "/dev/vdb", "/dev/vdc"]);
        assert_eq!(req.user.as_deref(), Some("app"));
        let pids = req
            .spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .pids()
            .as_ref()
            .unwrap()
            .limit();
        assert_eq!(pids, 20);
        assert!(
            create_request(&record, 26).is_err(),
            "too many layers for vda..vdz"
        );
    }
}

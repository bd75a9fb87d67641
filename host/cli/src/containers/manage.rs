//! Commands on existing containers: `exec`, `ps`, `logs`, `stop`, `kill`, `wait`, `rm`,
//! `inspect`, `stats`, `cp`, `top` and `commit`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_containers::{now, ContainerRecord, Status};
use berth_protocol::chunk::{receive_all, send_all, LogStream};
use berth_protocol::spec::{docker_spec, RunConfig};
use berth_protocol::{Client, ExecRequest, ProcessRef, StdioOptions, StreamTarget};

use super::image;
use super::lifecycle::{finish, merge_env, Ctx, FilesAccess};
use super::logfile;
use super::stdio;
use super::vm::{self, VmFiles};
use super::ExecArgs;

/// A running container and its agent.
async fn running(ctx: &Ctx, name: &str) -> Result<(ContainerRecord, VmFiles, Client)> {
    let record = ctx.store.resolve(name)?;
    if record.status() != Status::Running {
        bail!("container {} is not running", record.name);
    }
    let files = ctx.files(&record);
    let client = vm::connect_agent(&files, record.state.vmm, Duration::from_secs(10)).await?;
    Ok((record, files, client))
}

/// `berth exec`.
pub async fn exec(a: ExecArgs) -> Result<i32> {
    let ctx = Ctx::open()?;
    let (record, files, client) = running(&ctx, &a.container).await?;
    let spec = &record.spec;
    let oci = docker_spec(&RunConfig {
        args: a.command.clone(),
        env: merge_env(&spec.env, &a.env),
        cwd: a.workdir.clone().unwrap_or_else(|| spec.workdir.clone()),
        hostname: String::new(),
        tty: a.tty,
        memory_bytes: None,
        cpus: None,
        pids_limit: None,
    });
    let process = oci
        .process()
        .clone()
        .context("the default spec has a process")?;
    let exec_id = berth_containers::generate_id()?[..16].to_string();
    let user = a
        .user
        .clone()
        .or_else(|| (!spec.user.is_empty()).then(|| spec.user.clone()));
    client
        .exec(ExecRequest {
            container: record.id.clone(),
            exec: exec_id.clone(),
            process,
            user,
            stdio: StdioOptions {
                tty: a.tty,
                open_stdin: a.interactive,
            },
        })
        .await?;
    let p = ProcessRef::exec(record.id.clone(), exec_id);
    if a.detach {
        client.start(p).await?;
        return Ok(0);
    }
    stdio::attach(
        &files,
        &client,
        p,
        stdio::Mode {
            tty: a.tty,
            interactive: a.interactive,
            start: true,
        },
        None,
    )
    .await
}

fn age(secs: u64) -> String {
    let d = now().saturating_sub(secs);
    match d {
        0..=1 => "Less than a second".into(),
        2..=59 => format!("{d} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", d / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", d / 3600),
        _ => format!("{} days", d / 86400),
    }
}

fn status_text(r: &ContainerRecord) -> String {
    match r.status() {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", age(r.state.started_at.unwrap_or(r.created))),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            r.state.exit_code.unwrap_or(lifecycle_crash()),
            age(r
                .state
                .finished_at
                .or(r.state.started_at)
                .unwrap_or(r.created))
        ),
    }
}

fn lifecycle_crash() -> i32 {
    super::lifecycle::EXIT_VM_CRASHED
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// `berth ps`.
pub fn ps(all: bool, quiet: bool) -> Result<i32> {
    let ctx = Ctx::open()?;
    let records: Vec<_> = ctx
        .store
        .list()?
        .into_iter()
        .filter(|r| all || r.status() == Status::Running)
        .collect();
    let mut out = std::io::stdout().lock();
    if quiet {
        for r in &records {
            writeln!(out, "{}", r.short_id())?;
        }
        return Ok(0);
    }
    writeln!(
        out,
        "{:<14}{:<24}{:<24}{:<18}{:<28}NAMES",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS"
    )?;
    for r in &records {
        writeln!(
            out,
            "{:<14}{:<24}{:<24}{:<18}{:<28}{}",
            r.short_id(),
            truncate(&r.spec.image, 22),
            truncate(&format!("\"{}\"", r.spec.args.join(" ")), 22),
            format!("{} ago", age(r.created)),
            status_text(r),
            r.name
        )?;
    }
    Ok(0)
}

fn format_time(ns: u64) -> String {
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = ns % 1_000_000_000;
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `berth logs`.
pub async fn logs(name: &str, follow: bool, tail: Option<&str>, timestamps: bool) -> Result<i32> {
    let ctx = Ctx::open()?;
    let record = ctx.store.resolve(name)?;
    let path = ctx.files(&record).logs();
    let tail =
        match tail {
            None | Some("all") => None,
            Some(n) => Some(n.parse::<usize>().with_context(|| {
                format!("invalid --tail \"{n}\": give a number of lines or all")
            })?),
        };
    let print = |recs: Vec<berth_protocol::chunk::LogRecord>| -> Result<()> {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for r in recs {
            let w: &mut dyn Write = match r.stream {
                LogStream::Stdout => &mut out,
                LogStream::Stderr => &mut err,
            };
            if timestamps {
                write!(w, "{} ", format_time(r.time_ns))?;
            }
            w.write_all(&r.data)?;
        }
        out.flush()?;
        Ok(())
    };
    let (recs, mut offset) = logfile::read_from(&path, 0)?;
    let mut lines = logfile::lines(recs);
    if let Some(n) = tail {
        lines = lines.split_off(lines.len().saturating_sub(n));
    }
    print(lines)?;
    if follow {
        loop {
            let running = ctx
                .store
                .resolve(&record.id)
                .map(|r| r.status() == Status::Running)
                .unwrap_or(false);
            let (recs, next) = logfile::read_from(&path, offset)?;
            offset = next;
            print(logfile::lines(recs))?;
            if !running {
                // One more read after the end, for what the monitor wrote last.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let (recs, _) = logfile::read_from(&path, offset)?;
                print(logfile::lines(recs))?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(0)
}

/// Stops one container: SIGTERM, SIGKILL after `grace`, then power off.
async fn stop_one(ctx: &Ctx, name: &str, grace: Duration, signal: i32) -> Result<()> {
    let record = ctx.store.resolve(name)?;
    if record.status() != Status::Running {
        return Ok(());
    }
    let files = ctx.files(&record);
    let vmm = record.state.vmm;
    let init = ProcessRef::init(record.id.clone());
    let mut code = None;
    if let Ok(client) = vm::connect_agent(&files, vmm, Duration::from_secs(10)).await {
        let _ = client.signal(init.clone(), signal).await;
        code = match tokio::time::timeout(grace, client.wait(init.clone())).await {
            Ok(Ok(c)) => Some(c),
            _ => {
                let _ = client.signal(init.clone(), libc::SIGKILL).await;
                tokio::time::timeout(Duration::from_secs(10), client.wait(init))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
            }
        };
        vm::shutdown(Some(&client), vmm).await;
    } else if let Some(vmm) = vmm {
        vm::kill_vmm(vmm);
    }
    let record = ctx.store.resolve(&record.id)?;
    if record.state.finished_at.is_none() || record.state.exit_code.is_none() {
        finish(ctx, &record, code.or(Some(137)), None)?;
    }
    Ok(())
}

/// `berth stop`.
pub async fn stop_all(names: &[String], secs: u64) -> Result<i32> {
    let ctx = Ctx::open()?;
    let mut failed = false;
    for name in names {
        match stop_one(&ctx, name, Duration::from_secs(secs), libc::SIGTERM).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: cannot stop {name}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// A signal from its name (`KILL`, `SIGKILL`) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "ALRM" => libc::SIGALRM,
        "WINCH" => libc::SIGWINCH,
        _ => bail!("invalid signal \"{s}\": give a name like TERM or KILL, or a number"),
    };
    Ok(n)
}

/// `berth kill`.
pub async fn kill_all(names: &[String], signal: &str) -> Result<i32> {
    let sig = parse_signal(signal)?;
    let ctx = Ctx::open()?;
    let mut failed = false;
    for name in names {
        let result = async {
            let (_, _, client) = running(&ctx, name).await?;
            let record = ctx.store.resolve(name)?;
            client
                .signal(ProcessRef::init(record.id.clone()), sig)
                .await?;
            Ok::<_, anyhow::Error>(())
        }
        .await;
        match result {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: cannot kill {name}: {e:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// `berth wait`.
pub async fn wait_all(names: &[String]) -> Result<i32> {
    let ctx = Ctx::open()?;
    for name in names {
        let id = ctx.store.resolve(name)?.id;
        loop {
            let r = ctx.store.resolve(&id)?;
            if r.status() != Status::Running
                && (r.state.finished_at.is_some() || r.state.started_at.is_none())
            {
                println!("{}", r.state.exit_code.unwrap_or(0));
                break;
            }
            if r.status() != Status::Running {
                // The VMM is gone but its end is not recorded yet: give the monitor a moment.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let r = ctx.store.resolve(&id)?;
                if r.state.finished_at.is_none() {
                    finish(
                        &ctx,
                        &r,
                        None,
                        Some("the micro-VM stopped unexpectedly".into()),
                    )?;
                }
                continue;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(0)
}

/// `berth rm`.
pub async fn rm_all(names: &[String], force: bool) -> Result<i32> {
    let ctx = Ctx::open()?;
    let mut failed = false;
    for name in names {
        let result = async {
            let record = ctx.store.resolve(name)?;
            if record.status() == Status::Running {
                if !force {
                    bail!(
                        "you cannot remove a running container {}: stop the container before removing it, or use rm -f",
                        record.short_id()
                    );
                }
                if let Some(vmm) = record.state.vmm {
                    vm::kill_vmm(vmm);
                }
            }
            ctx.files(&record).remove_sockets();
            ctx.store.remove(&record.id)?;
            image::unpin(&ctx.root, &record.id)?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: {e:#}");
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// `berth inspect`: containers first, then images.
pub fn inspect(names: &[String]) -> Result<i32> {
    let ctx = Ctx::open()?;
    let mut out = Vec::new();
    for name in names {
        match ctx.store.resolve(name) {
            Ok(r) => {
                let files = ctx.files(&r);
                out.push(serde_json::json!({
                    "Id": r.id,
                    "Name": r.name,
                    "Created": r.created,
                    "Image": r.spec.image_id,
                    "Config": {
                        "Image": r.spec.image,
                        "Cmd": r.spec.args,
                        "Env": r.spec.env,
                        "WorkingDir": r.spec.workdir,
                        "User": r.spec.user,
                        "Hostname": if r.spec.hostname.is_empty() { r.short_id().to_string() } else { r.spec.hostname.clone() },
                        "Tty": r.spec.tty,
                        "OpenStdin": r.spec.interactive,
                    },
                    "HostConfig": {
                        "NanoCpus": (r.spec.cpus * 1e9) as u64,
                        "Memory": r.spec.memory_mib << 20,
                        "AutoRemove": r.spec.auto_remove,
                    },
                    "State": {
                        "Status": r.status().to_string(),
                        "Running": r.status() == Status::Running,
                        "ExitCode": r.state.exit_code.unwrap_or(0),
                        "Error": r.state.error.clone().unwrap_or_default(),
                        "StartedAt": r.state.started_at,
                        "FinishedAt": r.state.finished_at,
                        "VmmPid": r.state.vmm.filter(|v| v.is_alive()).map(|v| v.pid),
                    },
                    "VM": {
                        "VCpus": vm::vcpus(r.spec.cpus),
                        "MemoryMiB": vm::vm_memory_mib(r.spec.memory_mib),
                        "Console": files.console(),
                        "LogPath": files.logs(),
                    },
                }));
            }
            Err(berth_containers::Error::NotFound(_)) => match image::inspect_json(&ctx.root, name)
            {
                Ok(v) => out.push(v),
                Err(_) => bail!("no such object: {name}"),
            },
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

fn human_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", units[i])
}

/// `berth stats`.
pub async fn stats(names: &[String], no_stream: bool) -> Result<i32> {
    let ctx = Ctx::open()?;
    let names: Vec<String> = if names.is_empty() {
        ctx.store
            .list()?
            .into_iter()
            .filter(|r| r.status() == Status::Running)
            .map(|r| r.id)
            .collect()
    } else {
        names.to_vec()
    };
    let mut targets = Vec::new();
    for n in &names {
        let (record, _, client) = running(&ctx, n).await?;
        targets.push((record, client));
    }
    let mut previous: Vec<Option<berth_protocol::ContainerStats>> = vec![None; targets.len()];
    loop {
        let mut rows = Vec::new();
        for (i, (record, client)) in targets.iter().enumerate() {
            let s = client.stats(&record.id).await?;
            let cpu = match &previous[i] {
                Some(p) if s.timestamp_ns > p.timestamp_ns => {
                    let used = s.cpu_usage_usec.saturating_sub(p.cpu_usage_usec) as f64 * 1e3;
                    used / (s.timestamp_ns - p.timestamp_ns) as f64 * 100.0
                }
                _ => 0.0,
            };
            rows.push(format!(
                "{:<14}{:<24}{:>8.2}%   {} / {:<12}{:>6}",
                record.short_id(),
                truncate(&record.name, 22),
                cpu,
                human_bytes(s.memory_current),
                s.memory_max
                    .map(human_bytes)
                    .unwrap_or_else(|| "unlimited".into()),
                s.pids_current
            ));
            previous[i] = Some(s);
        }
        if !no_stream || previous.iter().all(|p| p.is_some()) {
            println!(
                "{:<14}{:<24}{:>9}   {:<28}{:>6}",
                "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "PIDS"
            );
            for r in rows {
                println!("{r}");
            }
        }
        if no_stream {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `berth top`.
pub async fn top(name: &str) -> Result<i32> {
    let ctx = Ctx::open()?;
    let (record, _, client) = running(&ctx, name).await?;
    let procs = client.top(&record.id).await?;
    println!(
        "{:<8}{:<8}{:<8}{:<6}{:<10}CMD",
        "PID", "PPID", "UID", "STAT", "RSS"
    );
    for p in procs {
        println!(
            "{:<8}{:<8}{:<8}{:<6}{:<10}{}",
            p.pid, p.ppid, p.uid, p.state, p.rss_kib, p.cmd
        );
    }
    Ok(0)
}

/// Splits `CONTAINER:PATH`; `None` for a host path.
fn container_path(arg: &str) -> Option<(&str, &str)> {
    let (c, p) = arg.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

/// `berth cp`.
pub async fn cp(src: &str, dst: &str) -> Result<i32> {
    let ctx = Ctx::open()?;
    match (container_path(src), container_path(dst)) {
        (Some((c, path)), None) => {
            let access = FilesAccess::open(&ctx, c).await?;
            let (record, files) = (access.record.clone(), access.files.clone());
            access.run(&ctx, async {
            let mut stream = vm::open_stream(
                &files,
                StreamTarget::CopyOut {
                    container: record.id.clone(),
                    path: path.to_string(),
                },
            )
            .await?;
            let mut tar_bytes = Vec::new();
            receive_all(&mut stream, &mut tar_bytes)
                .await
                .map_err(|e| match e {
                    Ok(w) => anyhow::Error::new(w),
                    Err(f) => anyhow::Error::new(f),
                })
                .with_context(|| format!("copy {path} out of {}", record.name))?;
            unpack_to(&tar_bytes, Path::new(dst))
            })
            .await?;
        }
        (None, Some((c, path))) => {
            let (dir, tar_bytes) = pack_for(Path::new(src), path)?;
            let access = FilesAccess::open(&ctx, c).await?;
            let (record, files) = (access.record.clone(), access.files.clone());
            access.run(&ctx, async {
            let mut stream = vm::open_stream(
                &files,
                StreamTarget::CopyIn {
                    container: record.id.clone(),
                    path: dir,
                },
            )
            .await?;
            let mut reader: &[u8] = &tar_bytes;
            send_all(&mut reader, &mut stream).await?;
            if let Some(berth_protocol::chunk::Chunk::Error(w)) =
                berth_protocol::chunk::read_chunk(&mut stream).await?
            {
                return Err(anyhow::Error::new(w).context(format!("copy into {}", record.name)));
            }
            Ok(())
            })
            .await?;
        }
        _ => bail!("copying needs exactly one side in CONTAINER:PATH form, like `berth cp web:/etc/hosts ./hosts`"),
    }
    Ok(0)
}

/// Packs host path `src` for copying to container path `dst`: the destination directory
/// and a tar whose single entry has the destination's file name.
fn pack_for(src: &Path, dst: &str) -> Result<(String, Vec<u8>)> {
    let meta = std::fs::metadata(src)
        .with_context(|| format!("no such file or directory: {}", src.display()))?;
    let (dir, name) = if dst.ends_with('/') {
        let name = src
            .file_name()
            .context("the source has no file name")?
            .to_string_lossy()
            .to_string();
        (dst.trim_end_matches('/').to_string(), name)
    } else {
        let p = Path::new(dst);
        (
            p.parent()
                .map(|d| d.to_string_lossy().to_string())
                .unwrap_or_else(|| "/".into()),
            p.file_name()
                .context("the destination has no file name")?
                .to_string_lossy()
                .to_string(),
        )
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    if meta.is_dir() {
        builder.append_dir_all(&name, src)?;
    } else {
        builder.append_path_with_name(src, &name)?;
    }
    let dir = if dir.is_empty() { "/".into() } else { dir };
    Ok((dir, builder.into_inner()?))
}

/// Unpacks a tar from the agent at host path `dst` (a directory to put it in, or the new name).
fn unpack_to(tar_bytes: &[u8], dst: &Path) -> Result<()> {
    let target: PathBuf = if dst.is_dir() {
        dst.to_path_buf()
    } else {
        let staging = dst.with_extension("berth-cp.tmp");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        tar::Archive::new(tar_bytes).unpack(&staging)?;
        let mut entries = std::fs::read_dir(&staging)?;
        let first = entries.next().context("the copy was empty")??.path();
        std::fs::rename(&first, dst).with_context(|| format!("write {}", dst.display()))?;
        std::fs::remove_dir_all(&staging)?;
        return Ok(());
    };
    tar::Archive::new(tar_bytes)
        .unpack(&target)
        .with_context(|| format!("write into {}", target.display()))?;
    Ok(())
}

/// `berth commit`: the container's upper layer becomes a new image layer.
pub async fn commit(name: &str, image_ref: &str) -> Result<i32> {
    let ctx = Ctx::open()?;
    let access = FilesAccess::open(&ctx, name).await?;
    let (record, files) = (access.record.clone(), access.files.clone());
    let layer = access
        .run(&ctx, async {
            let mut stream = vm::open_stream(
                &files,
                StreamTarget::Commit {
                    container: record.id.clone(),
                },
            )
            .await?;
            let mut layer = Vec::new();
            receive_all(&mut stream, &mut layer)
                .await
                .map_err(|e| match e {
                    Ok(w) => anyhow::Error::new(w),
                    Err(f) => anyhow::Error::new(f),
                })
                .with_context(|| format!("read the changes of {}", record.name))?;
            Ok(layer)
        })
        .await?;
    let id = image::commit(&ctx.root, &record, &layer, image_ref)?;
    println!("{id}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("0").is_err());
    }

    #[test]
    fn container_paths_need_a_name_before_the_colon() {
        assert_eq!(
            container_path("web:/etc/hosts"),
            Some(("web", "/etc/hosts"))
        );
        assert_eq!(container_path("./a:b"), None);
        assert_eq!(container_path("/tmp/x"), None);
        assert_eq!(container_path(":/x"), None);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_time(1_795_910_400_123_000_000),
            "2026-11-29T00:00:00.123000000Z"
        );
    }
}

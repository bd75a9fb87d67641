//! Commands on existing containers: `exec`, `ps`, `logs`, `stop`, `kill`, `wait`, `rm`,
//! `inspect`, `stats`, `cp`, `top` and `commit`.

use crate::format::truncate;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use berth_containers::now;
use berth_engine::{
    parse_signal, vm, ContainerRecord, Engine, ExecOptions, LogOptions, PortMapping, Status,
    WaitCondition, EXIT_VM_CRASHED,
};
use berth_protocol::chunk::LogStream;
use berth_units::human_bytes;

use super::stdio;
use super::ExecArgs;

/// `berth exec`.
pub async fn exec(a: ExecArgs) -> Result<i32> {
    let engine = Engine::open()?;
    let process = engine
        .exec(
            &a.container,
            &ExecOptions {
                command: a.command.clone(),
                env: a.env.clone(),
                workdir: a.workdir.clone(),
                user: a.user.clone(),
                tty: a.tty,
                interactive: a.interactive,
            },
        )
        .await?;
    if a.detach {
        process.start().await?;
        return Ok(0);
    }
    let streams = process.streams(a.tty, a.interactive).await?;
    stdio::attach(
        streams,
        &process.client,
        process.process.clone(),
        stdio::Mode {
            tty: a.tty,
            interactive: a.interactive,
        },
        true,
        None,
    )
    .await
}

fn age(secs: u64) -> String {
    let d = now().saturating_sub(secs);
    berth_units::human_duration(std::time::Duration::from_secs(d))
}

fn status_text(r: &ContainerRecord) -> String {
    match r.status() {
        Status::Created => "Created".into(),
        Status::Running => format!("Up {}", age(r.state.started_at.unwrap_or(r.created))),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            r.state.exit_code.unwrap_or(EXIT_VM_CRASHED),
            age(r
                .state
                .finished_at
                .or(r.state.started_at)
                .unwrap_or(r.created))
        ),
    }
}

/// The published ports of a running container, docker's way: `0.0.0.0:8080->80/tcp, ...`.
fn ports_text(r: &ContainerRecord) -> String {
    live_ports(r)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ports a container publishes now (none unless it runs).
fn live_ports(r: &ContainerRecord) -> &[PortMapping] {
    if r.status() == Status::Running {
        &r.state.ports
    } else {
        &[]
    }
}

/// `berth port`: `80/tcp -> 0.0.0.0:8080` lines, or the host addresses of one container
/// port, as docker prints them.
pub fn port(name: &str, private: Option<&str>) -> Result<i32> {
    let engine = Engine::open()?;
    let r = engine.container(name)?;
    let want = private
        .map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            port.parse::<u16>()
                .ok()
                .filter(|_| matches!(proto, "tcp" | "udp"))
                .map(|n| (n, proto.to_string()))
                .with_context(|| format!("invalid port \"{p}\": give PORT or PORT/tcp or PORT/udp"))
        })
        .transpose()?;
    let ports: Vec<&PortMapping> = live_ports(&r)
        .iter()
        .filter(|m| {
            want.as_ref()
                .is_none_or(|(n, proto)| m.container_port == *n && m.protocol.to_string() == *proto)
        })
        .collect();
    if ports.is_empty() {
        if let Some(p) = private {
            bail!("no public port '{p}' published for {}", r.name);
        }
    }
    for m in ports {
        let host = std::net::SocketAddr::new(m.host_ip, m.host_port);
        // docker prints only the host address when asked about one port.
        match private {
            Some(_) => println!("{host}"),
            None => println!("{}/{} -> {host}", m.container_port, m.protocol),
        }
    }
    Ok(0)
}

/// docker's port map: `{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}`.
fn port_map(mappings: &[PortMapping]) -> serde_json::Value {
    let mut ports = serde_json::Map::new();
    for m in mappings {
        let key = format!("{}/{}", m.container_port, m.protocol);
        let binding = serde_json::json!({
            "HostIp": m.host_ip.to_string(),
            "HostPort": if m.host_port == 0 { String::new() } else { m.host_port.to_string() },
        });
        if let Some(a) = ports
            .entry(key)
            .or_insert_with(|| serde_json::json!([]))
            .as_array_mut()
        {
            a.push(binding);
        }
    }
    serde_json::Value::Object(ports)
}

/// docker's `NetworkSettings` of `inspect`.
fn network_settings(r: &ContainerRecord) -> serde_json::Value {
    let ports = port_map(live_ports(r));
    let (ip, gateway, prefix) = match berth_engine::net::layout(r) {
        Some(l) => (l.guest.to_string(), l.gateway.to_string(), l.prefix),
        None => (String::new(), String::new(), 0),
    };
    serde_json::json!({
        "IPAddress": ip,
        "IPPrefixLen": prefix,
        "Gateway": gateway,
        "Ports": ports,
        "NetworkMode": r.spec.network,
    })
}

/// `berth ps`.
pub fn ps(all: bool, quiet: bool) -> Result<i32> {
    let engine = Engine::open()?;
    let records: Vec<_> = engine
        .containers()?
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
    let ports: Vec<String> = records.iter().map(ports_text).collect();
    let width = ports.iter().map(String::len).max().unwrap_or(0).max(5) + 3;
    writeln!(
        out,
        "{:<14}{:<24}{:<24}{:<18}{:<28}{:<width$}NAMES",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS"
    )?;
    for (r, ports) in records.iter().zip(&ports) {
        writeln!(
            out,
            "{:<14}{:<24}{:<24}{:<18}{:<28}{:<width$}{}",
            r.short_id(),
            truncate(&r.spec.image, 22),
            truncate(&format!("\"{}\"", r.spec.args.join(" ")), 22),
            format!("{} ago", age(r.created)),
            status_text(r),
            ports,
            r.name
        )?;
    }
    Ok(0)
}

/// `berth logs`.
pub async fn logs(name: &str, follow: bool, tail: Option<&str>, timestamps: bool) -> Result<i32> {
    let engine = Engine::open()?;
    let tail =
        match tail {
            None | Some("all") => None,
            Some(n) => Some(n.parse::<usize>().with_context(|| {
                format!("invalid --tail \"{n}\": give a number of lines or all")
            })?),
        };
    let mut cursor = engine.logs(
        name,
        LogOptions {
            follow,
            tail,
            ..Default::default()
        },
    )?;
    while let Some(recs) = cursor.next(&engine).await? {
        let mut out = std::io::stdout().lock();
        let mut err = std::io::stderr().lock();
        for r in recs {
            let w: &mut dyn Write = match r.stream {
                LogStream::Stdout => &mut out,
                LogStream::Stderr => &mut err,
            };
            if timestamps {
                write!(w, "{} ", berth_units::rfc3339_nano_fixed(r.time_ns))?;
            }
            w.write_all(&r.data)?;
        }
        out.flush()?;
    }
    Ok(0)
}

/// Runs `op` on each container, printing its name on success as docker does; returns 1
/// when any failed.
async fn each<F, Fut>(names: &[String], what: &str, op: F) -> Result<i32>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = berth_engine::Result<()>>,
{
    let mut failed = false;
    for name in names {
        match op(name.clone()).await {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: cannot {what} {name}: {}", e.message());
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// `berth stop`.
pub async fn stop_all(names: &[String], secs: u64) -> Result<i32> {
    let engine = Engine::open()?;
    each(names, "stop", |n| {
        let engine = &engine;
        async move { engine.stop(&n, Duration::from_secs(secs), None).await }
    })
    .await
}

/// `berth kill`.
pub async fn kill_all(names: &[String], signal: &str) -> Result<i32> {
    let sig = parse_signal(signal)?;
    let engine = Engine::open()?;
    each(names, "kill", |n| {
        let engine = &engine;
        async move { engine.kill(&n, sig).await }
    })
    .await
}

/// `berth wait`.
pub async fn wait_all(names: &[String]) -> Result<i32> {
    let engine = Engine::open()?;
    for name in names {
        let code = engine.wait(name, WaitCondition::NotRunning).await?;
        println!("{code}");
    }
    Ok(0)
}

/// `berth rm`.
pub async fn rm_all(names: &[String], force: bool, volumes: bool) -> Result<i32> {
    let engine = Engine::open()?;
    each(names, "remove", |n| {
        let engine = &engine;
        async move { engine.remove(&n, force, volumes).await }
    })
    .await
}

/// `berth inspect`: containers first, then images.
pub fn inspect(names: &[String]) -> Result<i32> {
    let engine = Engine::open()?;
    let mut out = Vec::new();
    for name in names {
        // Through the engine, so that a container whose monitor died is repaired first.
        match engine.container(name) {
            Ok(r) => {
                let files = engine.files(&r);
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
                        "Hostname": berth_engine::spec::hostname(&r),
                        "Labels": r.spec.labels,
                        "Tty": r.spec.tty,
                        "OpenStdin": r.spec.interactive,
                    },
                    "HostConfig": {
                        "NanoCpus": (r.spec.cpus * 1e9) as u64,
                        "Memory": r.spec.memory_mib << 20,
                        "AutoRemove": r.spec.auto_remove,
                        "NetworkMode": r.spec.network,
                        "Dns": r.spec.dns,
                        "ExtraHosts": r.spec.add_hosts.iter().map(|h| format!(
                            "{}:{}",
                            h.name,
                            h.ip.map_or("host-gateway".to_string(), |ip| ip.to_string())
                        )).collect::<Vec<_>>(),
                        "PortBindings": port_map(&r.spec.publish),
                    },
                    "NetworkSettings": network_settings(&r),
                    "Mounts": berth_engine::mounts::mount_points(engine.root(), &r.spec)
                        .into_iter()
                        .map(|m| serde_json::json!({
                            "Type": m.kind,
                            "Name": m.name,
                            "Source": m.source,
                            "Destination": m.destination,
                            "Driver": if m.kind == "volume" { "local" } else { "" },
                            "Mode": if m.rw { "" } else { "ro" },
                            "RW": m.rw,
                            "Propagation": if m.kind == "bind" { "rprivate" } else { "" },
                        }))
                        .collect::<Vec<_>>(),
                    "State": {
                        "Status": r.status().to_string(),
                        "Running": r.status() == Status::Running,
                        "ExitCode": r.state.exit_code.unwrap_or(0),
                        "Error": r.state.error.clone().unwrap_or_default(),
                        "StartedAt": r.state.started_at,
                        "FinishedAt": r.state.finished_at,
                        "VmmPid": r.state.vmm.filter(|v| v.is_alive()).map(|v| v.pid),
                        "MonitorPid": r.state.monitor.map(|m| m.process)
                            .filter(|p| p.is_alive()).map(|p| p.pid),
                    },
                    "VM": {
                        "VCpus": vm::vcpus(r.spec.cpus),
                        "MemoryMiB": vm::vm_memory_mib(r.spec.memory_mib),
                        "Console": files.console(),
                        "VmmLog": files.vmm_log(),
                        "MonitorLog": files.monitor_log(),
                        "LogPath": files.logs(),
                    },
                }));
            }
            Err(e) if e.kind() == berth_engine::ErrorKind::NotFound => {
                let store = engine.images();
                match store.resolve(name) {
                    Ok(img) => out.push(berth_image::ops::inspect(store, &img)?),
                    Err(_) => bail!("no such object: {name}"),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

/// `berth stats`.
pub async fn stats(names: &[String], no_stream: bool) -> Result<i32> {
    let engine = Engine::open()?;
    let names: Vec<String> = if names.is_empty() {
        engine
            .containers()?
            .into_iter()
            .filter(|r| r.status() == Status::Running)
            .map(|r| r.id)
            .collect()
    } else {
        names.to_vec()
    };
    let mut targets = Vec::new();
    for n in &names {
        let (record, _, client) = engine.running(n).await?;
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
    let procs = Engine::open()?.top(name).await?;
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
    let engine = Engine::open()?;
    match (container_path(src), container_path(dst)) {
        (Some((c, path)), None) => {
            let tar_bytes = engine.copy_out(c, path).await?;
            unpack_to(&tar_bytes, Path::new(dst))?;
        }
        (None, Some((c, path))) => {
            let (dir, tar_bytes) = pack_for(Path::new(src), path)?;
            engine.copy_in(c, &dir, &tar_bytes).await?;
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
        // A fresh staging folder beside `dst` (so the rename stays on one filesystem),
        // never one that something else made; it goes away however this ends.
        let parent = match dst.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let staging = tempfile::Builder::new()
            .prefix(".berth-cp")
            .tempdir_in(parent)
            .with_context(|| format!("make a staging folder in {}", parent.display()))?;
        tar::Archive::new(tar_bytes).unpack(staging.path())?;
        let mut entries = std::fs::read_dir(staging.path())?;
        let first = entries.next().context("the copy was empty")??.path();
        std::fs::rename(&first, dst).with_context(|| format!("write {}", dst.display()))?;
        return Ok(());
    };
    tar::Archive::new(tar_bytes)
        .unpack(&target)
        .with_context(|| format!("write into {}", target.display()))?;
    Ok(())
}

/// `berth commit`: the container's upper layer becomes a new image layer.
pub async fn commit(name: &str, image_ref: &str) -> Result<i32> {
    let id = Engine::open()?.commit(name, image_ref).await?;
    println!("{id}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn tar_of(name: &str, body: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, body).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn copying_out_to_a_new_name_leaves_what_was_beside_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        // What an older berth used as its staging folder: someone's data now.
        let bystander = dir.path().join("out.berth-cp.tmp");
        std::fs::create_dir(&bystander).unwrap();
        std::fs::write(bystander.join("keep"), b"mine").unwrap();
        let dst = dir.path().join("out.txt");
        unpack_to(&tar_of("hosts", b"127.0.0.1 localhost\n"), &dst).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"127.0.0.1 localhost\n");
        assert_eq!(std::fs::read(bystander.join("keep")).unwrap(), b"mine");
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["out.berth-cp.tmp", "out.txt"],
            "no staging folder is left"
        );
    }

    #[test]
    fn an_empty_copy_is_an_error_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let empty = tar::Builder::new(Vec::new()).into_inner().unwrap();
        let err = unpack_to(&empty, &dir.path().join("out")).unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

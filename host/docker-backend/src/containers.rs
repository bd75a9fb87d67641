//! Containers: engine records as docker's summaries and details, docker's create body
//! as engine options, and wait, stop, logs, stats, top and archives.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use berth_docker_api::{
    BackendError, ByteStream, ContainerDetails, ContainerState, ContainerStatus, ContainerSummary,
    CreateConfig, Created, LogOptions, LogRecord, LogStream, PathStat, PortBinding, StatsSample,
    SystemInfo, TopResult, VersionInfo, WaitCondition, WaitFuture, WaitResult,
};
use berth_engine::{ContainerRecord, CreateOptions, Engine, PortMapping, Protocol, Status};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;

use crate::{api_error, image_error};

/// The largest archive `docker cp` may upload in one request.
const MAX_UPLOAD_BYTES: usize = 1 << 30;

const NS: u64 = 1_000_000_000;

/// What `/version` reports.
pub fn version() -> VersionInfo {
    VersionInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: String::new(),
        kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        os: "linux".into(),
        arch: match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        }
        .to_string(),
        build_time: String::new(),
    }
}

/// What `/info` reports.
pub async fn info(engine: &Engine) -> Result<SystemInfo, BackendError> {
    let records = engine.containers().map_err(api_error)?;
    let running = records
        .iter()
        .filter(|r| r.status() == Status::Running)
        .count() as u64;
    let images = engine
        .images()
        .list()
        .map_err(|e| api_error(e.into()))?
        .len() as u64;
    Ok(SystemInfo {
        id: "berth".into(),
        name: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "berth".into()),
        containers_running: running,
        containers_paused: 0,
        containers_stopped: records.len() as u64 - running,
        images,
        ncpu: std::thread::available_parallelism()
            .map(|n| n.get() as u64)
            .unwrap_or(1),
        mem_total: 0,
        driver: "berth-erofs".into(),
        operating_system: "berth (a micro-VM per container)".into(),
        root_dir: engine.root().display().to_string(),
    })
}

fn status(r: &ContainerRecord) -> ContainerStatus {
    match r.status() {
        Status::Created => ContainerStatus::Created,
        Status::Running => ContainerStatus::Running,
        Status::Exited => ContainerStatus::Exited,
    }
}

fn summary(r: &ContainerRecord) -> ContainerSummary {
    ContainerSummary {
        id: r.id.clone(),
        name: r.name.clone(),
        image: r.spec.image.clone(),
        image_id: r.spec.image_id.clone(),
        command: r.spec.args.join(" "),
        created_ns: r.created * NS,
        status: status(r),
        exit_code: i64::from(r.state.exit_code.unwrap_or(0)),
        started_at_ns: r.state.started_at.map(|s| s * NS),
        finished_at_ns: r.state.finished_at.map(|s| s * NS),
        labels: r.spec.labels.clone(),
        ports: ports_of(r),
        network_mode: r.spec.network.clone(),
    }
}

/// `GET /containers/json`.
pub fn list(engine: &Engine, all: bool) -> Result<Vec<ContainerSummary>, BackendError> {
    Ok(engine
        .containers()
        .map_err(api_error)?
        .iter()
        .filter(|r| all || r.status() == Status::Running)
        .map(summary)
        .collect())
}

/// `GET /containers/{id}/json`.
pub fn inspect(
    engine: &Engine,
    id: &str,
    exec_ids: Vec<String>,
) -> Result<ContainerDetails, BackendError> {
    let r = engine.container(id).map_err(api_error)?;
    let s = &r.spec;
    let running = r.status() == Status::Running;
    let (binds, tmpfs, volumes) = crate::mounts::asked(&s.mounts);
    let networked = berth_engine::net::layout(&r);
    Ok(ContainerDetails {
        id: r.id.clone(),
        name: r.name.clone(),
        created_ns: r.created * NS,
        image_id: s.image_id.clone(),
        path: s.args.first().cloned().unwrap_or_default(),
        args: s.args.iter().skip(1).cloned().collect(),
        state: ContainerState {
            status: status(&r),
            pid: r
                .state
                .vmm
                .filter(|v| running && v.is_alive())
                .map(|v| i64::from(v.pid))
                .unwrap_or(0),
            exit_code: i64::from(r.state.exit_code.unwrap_or(0)),
            error: r.state.error.clone().unwrap_or_default(),
            oom_killed: false,
            started_at_ns: r.state.started_at.map(|t| t * NS),
            finished_at_ns: r.state.finished_at.map(|t| t * NS),
        },
        config: CreateConfig {
            image: s.image.clone(),
            cmd: Some(s.args.clone()),
            entrypoint: None,
            env: s.env.clone(),
            working_dir: s.workdir.clone(),
            user: s.user.clone(),
            hostname: berth_engine::spec::hostname(&r),
            tty: s.tty,
            open_stdin: s.interactive,
            labels: s.labels.clone(),
            cpus: Some(s.cpus),
            memory_bytes: (s.memory_mib > 0).then_some((s.memory_mib << 20) as i64),
            pids_limit: s.pids_limit,
            auto_remove: s.auto_remove,
            network_mode: s.network.clone(),
            port_bindings: bindings(&s.publish),
            extra_hosts: s
                .add_hosts
                .iter()
                .map(|h| match h.ip {
                    Some(ip) => format!("{}:{ip}", h.name),
                    None => format!("{}:host-gateway", h.name),
                })
                .collect(),
            dns: s.dns.iter().map(|d| d.to_string()).collect(),
            binds,
            tmpfs,
            volumes,
            ..Default::default()
        },
        exec_ids,
        restart_count: 0,
        log_path: engine.files(&r).logs().display().to_string(),
        ports: ports_of(&r),
        ip_address: networked.map(|l| l.guest.to_string()).unwrap_or_default(),
        endpoint: crate::networks::container_endpoint(engine, &r),
        gateway: networked.map(|l| l.gateway.to_string()).unwrap_or_default(),
        mac_address: String::new(),
        mounts: crate::mounts::points(engine.root(), s),
    })
}

/// docker's port bindings as berth's published ports.
fn publish(bindings: &[PortBinding]) -> Result<Vec<PortMapping>, BackendError> {
    bindings
        .iter()
        .map(|b| {
            let host_ip = if b.host_ip.is_empty() {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                b.host_ip.parse().map_err(|_| {
                    BackendError::InvalidArgument(format!(
                        "invalid HostIp {:?} for port {}: give an IP address",
                        b.host_ip, b.container_port
                    ))
                })?
            };
            let protocol = match b.protocol.as_str() {
                "udp" => Protocol::Udp,
                _ => Protocol::Tcp,
            };
            Ok(PortMapping {
                host_ip,
                host_port: b.host_port,
                container_port: b.container_port,
                protocol,
            })
        })
        .collect()
}

/// berth's published ports as docker's.
fn bindings(ports: &[PortMapping]) -> Vec<PortBinding> {
    ports
        .iter()
        .map(|p| PortBinding {
            container_port: p.container_port,
            protocol: p.protocol.to_string(),
            host_ip: p.host_ip.to_string(),
            host_port: p.host_port,
        })
        .collect()
}

/// A container's published ports: as bound while it runs, else as asked.
fn ports_of(r: &ContainerRecord) -> Vec<PortBinding> {
    if r.status() == Status::Running && !r.state.ports.is_empty() {
        bindings(&r.state.ports)
    } else {
        bindings(&r.spec.publish)
    }
}

/// A malformed create option, as docker's 400.
fn invalid(e: impl std::fmt::Display) -> BackendError {
    BackendError::InvalidArgument(e.to_string())
}

/// docker's create body as the engine's options.
fn create_options(name: Option<String>, cfg: CreateConfig) -> Result<CreateOptions, BackendError> {
    let nonempty = |s: String| (!s.is_empty()).then_some(s);
    let dns = cfg
        .dns
        .iter()
        .map(|d| {
            d.parse::<IpAddr>().map_err(|_| {
                BackendError::InvalidArgument(format!(
                    "invalid Dns server {d:?}: give an IP address"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let add_hosts = cfg
        .extra_hosts
        .iter()
        .map(|h| berth_engine::net::parse_add_host(h).map_err(invalid))
        .collect::<Result<Vec<_>, _>>()?;
    let publish = publish(&cfg.port_bindings)?;
    berth_engine::net::check_publish(&publish).map_err(invalid)?;
    let mounts = crate::mounts::from_config(&cfg.binds, &cfg.mounts, &cfg.tmpfs, &cfg.volumes)?;
    Ok(CreateOptions {
        publish_all: cfg.publish_all,
        mounts,
        network: nonempty(cfg.network_mode),
        network_aliases: cfg.network_aliases,
        dns,
        add_hosts,
        publish,
        name,
        entrypoint: cfg.entrypoint.map(|e| {
            // `--entrypoint ""` arrives as `[""]`: no entrypoint at all.
            if e.iter().all(String::is_empty) {
                Vec::new()
            } else {
                e
            }
        }),
        command: cfg.cmd.unwrap_or_default(),
        env: cfg.env,
        workdir: nonempty(cfg.working_dir),
        user: nonempty(cfg.user),
        hostname: nonempty(cfg.hostname),
        cpus: cfg.cpus.unwrap_or(1.0),
        memory_bytes: cfg.memory_bytes.filter(|&m| m > 0).map(|m| m as u64),
        pids_limit: cfg.pids_limit,
        interactive: cfg.open_stdin,
        tty: cfg.tty,
        auto_remove: cfg.auto_remove,
        labels: cfg.labels,
        image: cfg.image,
    })
}

/// `POST /containers/create`: a missing image is docker's 404 "No such image", so that
/// the client pulls it and asks again.
pub async fn create(
    engine: &Engine,
    name: Option<String>,
    cfg: CreateConfig,
) -> Result<Created, BackendError> {
    let opts = create_options(name, cfg)?;
    let store = engine.images();
    match store.resolve(&opts.image) {
        Ok(_) => {}
        Err(berth_image::Error::ImageNotFound { .. }) => {
            return Err(BackendError::NotFound(format!(
                "No such image: {}",
                opts.image
            )))
        }
        Err(e) => return Err(image_error(e)),
    }
    let record = engine.create(opts).await.map_err(api_error)?;
    Ok(Created {
        id: record.id,
        warnings: Vec::new(),
    })
}

/// `POST /containers/{id}/wait`: the container is looked up now, so that a `next-exit`
/// waiter registered before a start sees that start's exit.
pub fn wait(
    engine: &Arc<Engine>,
    id: &str,
    condition: WaitCondition,
) -> Result<WaitFuture, BackendError> {
    let first = engine.container(id).map_err(api_error)?;
    let condition = match condition {
        WaitCondition::NotRunning => berth_engine::WaitCondition::NotRunning,
        WaitCondition::NextExit => berth_engine::WaitCondition::NextExit,
        WaitCondition::Removed => berth_engine::WaitCondition::Removed,
    };
    let engine = engine.clone();
    Ok(Box::pin(async move {
        let code = engine
            .wait_from(&first, condition)
            .await
            .map_err(api_error)?;
        Ok(WaitResult {
            status_code: i64::from(code),
            error: None,
        })
    }))
}

/// `POST /containers/{id}/stop`: not-running is docker's 304.
pub async fn stop(
    engine: &Engine,
    id: &str,
    timeout_secs: Option<i64>,
    signal: Option<String>,
) -> Result<(), BackendError> {
    let r = engine.container(id).map_err(api_error)?;
    if r.status() != Status::Running {
        return Err(BackendError::NotModified);
    }
    let signal = signal
        .as_deref()
        .map(berth_engine::parse_signal)
        .transpose()
        .map_err(api_error)?;
    // docker's -1 waits forever; berth caps the grace period at an hour.
    let grace = match timeout_secs {
        None => 10,
        Some(t) if t < 0 => 3600,
        Some(t) => t.min(3600) as u64,
    };
    engine
        .stop(&r.id, Duration::from_secs(grace), signal)
        .await
        .map_err(api_error)
}

/// `GET /containers/{id}/logs`: the engine's cursor as a stream of records.
pub fn logs(
    engine: &Arc<Engine>,
    id: &str,
    opts: LogOptions,
) -> Result<BoxStream<'static, Result<LogRecord, BackendError>>, BackendError> {
    let cursor = engine
        .logs(
            id,
            berth_engine::LogOptions {
                follow: opts.follow,
                tail: opts.tail.map(|t| t as usize),
                since_ns: opts.since_ns,
                until_ns: opts.until_ns,
            },
        )
        .map_err(api_error)?;
    let (stdout, stderr) = (opts.stdout, opts.stderr);
    let state = (engine.clone(), cursor, VecDeque::new());
    let stream =
        futures_util::stream::unfold(state, move |(engine, mut cursor, mut queue)| async move {
            loop {
                if let Some(r) = queue.pop_front() {
                    return Some((Ok(r), (engine, cursor, queue)));
                }
                match cursor.next(&engine).await {
                    Ok(Some(batch)) => {
                        queue.extend(batch.into_iter().filter_map(|r| {
                            let stream = match r.stream {
                                berth_protocol::chunk::LogStream::Stdout if stdout => {
                                    LogStream::Stdout
                                }
                                berth_protocol::chunk::LogStream::Stderr if stderr => {
                                    LogStream::Stderr
                                }
                                _ => return None,
                            };
                            Some(LogRecord {
                                stream,
                                time_ns: r.time_ns,
                                data: r.data,
                            })
                        }));
                    }
                    Ok(None) => return None,
                    Err(e) => return Some((Err(api_error(e)), (engine, cursor, queue))),
                }
            }
        });
    // An error ends the stream after it is reported.
    let mut failed = false;
    Ok(stream
        .take_while(move |r| {
            let go = !failed;
            failed |= r.is_err();
            std::future::ready(go)
        })
        .boxed())
}

/// `GET /containers/{id}/top`.
pub async fn top(engine: &Engine, id: &str) -> Result<TopResult, BackendError> {
    let procs = engine.top(id).await.map_err(api_error)?;
    Ok(TopResult {
        titles: ["PID", "PPID", "UID", "STAT", "RSS", "CMD"]
            .map(String::from)
            .to_vec(),
        processes: procs
            .into_iter()
            .map(|p| {
                vec![
                    p.pid.to_string(),
                    p.ppid.to_string(),
                    p.uid.to_string(),
                    p.state,
                    p.rss_kib.to_string(),
                    p.cmd,
                ]
            })
            .collect(),
    })
}

/// `GET /containers/{id}/stats`: the guest clock stands for the host's CPU time, per
/// CPU, so docker's percentage is the container's share of its VM.
pub async fn stats(engine: &Engine, id: &str) -> Result<StatsSample, BackendError> {
    let (record, s) = engine.stats(id).await.map_err(api_error)?;
    let vm_bytes = berth_engine::vm::vm_memory_mib(record.spec.memory_mib) << 20;
    Ok(StatsSample {
        time_ns: chrono::Utc::now()
            .timestamp_nanos_opt()
            .map(|n| n as u64)
            .unwrap_or(0),
        cpu_total_ns: s.cpu_usage_usec.saturating_mul(1000),
        system_cpu_ns: s
            .timestamp_ns
            .saturating_mul(u64::from(s.online_cpus.max(1))),
        online_cpus: s.online_cpus.max(1),
        memory_usage: s.memory_current,
        memory_limit: s.memory_max.unwrap_or(vm_bytes),
        pids: s.pids_current,
    })
}

/// The stat of the first entry of a tar the agent made of a path.
fn first_entry_stat(tar_bytes: &[u8], path: &str) -> Result<PathStat, BackendError> {
    let mut archive = tar::Archive::new(tar_bytes);
    let entry = archive
        .entries()
        .ok()
        .and_then(|mut e| e.next())
        .and_then(|e| e.ok())
        .ok_or_else(|| {
            BackendError::NotFound(format!("Could not find the file {path} in container"))
        })?;
    let h = entry.header();
    let kind = h.entry_type();
    let type_bits = if kind.is_dir() {
        0o040000
    } else if kind.is_symlink() {
        0o120000
    } else {
        0o100000
    };
    let name = std::path::Path::new(path.trim_end_matches('/'))
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "/".into());
    Ok(PathStat {
        name,
        size: h.size().unwrap_or(0) as i64,
        mode: type_bits | (h.mode().unwrap_or(0o644) & 0o7777),
        mtime_ns: h.mtime().unwrap_or(0) * NS,
        link_target: h
            .link_name()
            .ok()
            .flatten()
            .map(|l| l.to_string_lossy().to_string())
            .unwrap_or_default(),
    })
}

/// `GET /containers/{id}/archive`: the path as a tar, with its stat.
pub async fn archive_get(
    engine: &Engine,
    id: &str,
    path: &str,
) -> Result<(PathStat, Vec<u8>), BackendError> {
    let tar_bytes = engine.copy_out(id, path).await.map_err(api_error)?;
    let stat = first_entry_stat(&tar_bytes, path)?;
    Ok((stat, tar_bytes))
}

/// `PUT /containers/{id}/archive`: the uploaded tar unpacked into directory `path`.
pub async fn archive_put(
    engine: &Engine,
    id: &str,
    path: &str,
    mut tar: ByteStream,
) -> Result<(), BackendError> {
    let mut body = Vec::new();
    while let Some(chunk) = tar.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_UPLOAD_BYTES {
            return Err(BackendError::InvalidArgument(format!(
                "the archive is larger than {} MiB: copy it in parts",
                MAX_UPLOAD_BYTES >> 20
            )));
        }
        body.extend_from_slice(&chunk);
    }
    engine.copy_in(id, path, &body).await.map_err(api_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_create_bodies_become_engine_options() {
        let o = create_options(
            Some("web".into()),
            CreateConfig {
                image: "busybox".into(),
                cmd: Some(vec!["echo".into(), "hi".into()]),
                entrypoint: Some(vec![String::new()]),
                working_dir: String::new(),
                user: "1:1".into(),
                memory_bytes: Some(64 << 20),
                cpus: None,
                open_stdin: true,
                network_mode: "none".into(),
                extra_hosts: vec!["db:10.0.0.5".into()],
                dns: vec!["1.1.1.1".into()],
                port_bindings: vec![PortBinding {
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                    host_port: 8080,
                }],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(o.name.as_deref(), Some("web"));
        assert_eq!(o.entrypoint, Some(vec![]), "[\"\"] clears the entrypoint");
        assert_eq!(o.command, ["echo", "hi"]);
        assert_eq!(o.workdir, None, "an empty WorkingDir keeps the image's");
        assert_eq!(o.user.as_deref(), Some("1:1"));
        assert_eq!(o.memory_bytes, Some(64 << 20));
        assert_eq!(o.cpus, 1.0);
        assert!(o.interactive);
        assert_eq!(o.network.as_deref(), Some("none"));
        assert_eq!(o.add_hosts[0].name, "db");
        assert_eq!(o.dns, ["1.1.1.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(o.publish[0].to_string(), "0.0.0.0:8080->80/tcp");
        assert_eq!(bindings(&o.publish)[0].host_ip, "0.0.0.0");
        for bad in [
            CreateConfig {
                dns: vec!["resolver".into()],
                ..Default::default()
            },
            CreateConfig {
                extra_hosts: vec!["nocolon".into()],
                ..Default::default()
            },
            CreateConfig {
                port_bindings: vec![
                    PortBinding {
                        container_port: 80,
                        protocol: "tcp".into(),
                        host_ip: String::new(),
                        host_port: 8080,
                    };
                    2
                ],
                ..Default::default()
            },
        ] {
            assert!(create_options(None, bad).is_err());
        }
        let o = create_options(None, CreateConfig::default()).unwrap();
        assert_eq!(o.entrypoint, None, "null keeps the image's entrypoint");
        assert!(o.command.is_empty());
    }

    #[test]
    fn archive_stats_come_from_the_first_tar_entry() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(7);
        b.append_data(&mut h, "etc", std::io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        let s = first_entry_stat(&bytes, "/etc/").unwrap();
        assert_eq!(s.name, "etc");
        assert_eq!(s.mode, 0o040755);
        assert_eq!(s.mtime_ns, 7 * NS);
        assert!(matches!(
            first_entry_stat(&[], "/nope"),
            Err(BackendError::NotFound(_))
        ));
    }
}

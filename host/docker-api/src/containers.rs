//! `/containers/...` handlers, and turning Docker's create body into a
//! [`CreateConfig`].
//!
//! Create-body policy: fields the backend supports are carried over;
//! `HostConfig` fields it does not support are refused with 400 when they
//! hold a non-default value (so `docker run --privileged` fails loudly
//! instead of silently running unprivileged). `Config.ExposedPorts` is
//! accepted and ignored: without publishing, Docker itself only records it.
//! `HostConfig.Binds`, `HostConfig.Tmpfs` and `Config.Volumes` go to the
//! backend as given; `HostConfig.Mounts` entries are checked against
//! Docker's rules (which fields each type takes) and passed on as
//! [`MountRequest`]s.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::TryStreamExt;
use http::{HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::backend::{
    AttachOptions, BackendError, ContainerDetails, ContainerStatus, ContainerSummary, CreateConfig,
    LogOptions, LogStream, MountRequest, PathStat, PortBinding, StatsSample, WaitCondition,
};
use crate::error::ApiError;
use crate::filters::{container_matches, validate_container_filters, Filters};
use crate::hijack::{self, encode_frame, STDERR, STDOUT};
use crate::request::{body_stream, read_json, Query};
use crate::response::{self, channel_body, json_line, streamed, ApiResult};
use crate::router::Ctx;
use crate::time::{now_ns, parse_timestamp, rfc3339_nano, rfc3339_nano_fixed};
use crate::types::{self, CreateBody, HostConfigBody, MountBody, StrSlice};
use serde_json::Value;

/// Header carrying a path's stat on archive requests.
pub const PATH_STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::BadRequest(msg.into())
}

fn unsupported(field: &str) -> ApiError {
    bad(format!("berth does not support HostConfig.{field} yet"))
}

fn refuse_host_config(h: &HostConfigBody) -> Result<(), ApiError> {
    fn set<T>(v: &Option<Vec<T>>) -> bool {
        v.as_ref().is_some_and(|v| !v.is_empty())
    }
    let host = |m: &Option<String>| m.as_deref() == Some("host");
    let checks: [(&str, bool); 12] = [
        ("Privileged", h.privileged == Some(true)),
        (
            "NetworkMode",
            h.network_mode
                .as_deref()
                .is_some_and(|m| m == "host" || m.starts_with("container:")),
        ),
        ("CapAdd", set(&h.cap_add)),
        ("Devices", set(&h.devices)),
        ("DeviceRequests", set(&h.device_requests)),
        ("VolumesFrom", set(&h.volumes_from)),
        ("Links", set(&h.links)),
        ("PidMode", host(&h.pid_mode)),
        ("IpcMode", host(&h.ipc_mode)),
        ("UTSMode", host(&h.uts_mode)),
        ("UsernsMode", host(&h.userns_mode)),
        (
            "RestartPolicy",
            h.restart_policy
                .as_ref()
                .is_some_and(|r| !matches!(r.name.as_str(), "" | "no")),
        ),
    ];
    if let Some((field, _)) = checks.iter().find(|(_, on)| *on) {
        return Err(unsupported(field));
    }
    Ok(())
}

/// Docker's wording for a `HostConfig.Mounts` entry it refuses.
fn mount_error(typ: &str, why: impl std::fmt::Display) -> ApiError {
    bad(format!("invalid mount config for type {typ:?}: {why}"))
}

/// One `HostConfig.Mounts` entry, checked as Docker checks it: a target from
/// `/` (not `/` itself); a bind's source from `/`; no source for a tmpfs; no
/// options of another type; a volume driver other than the local one, a
/// volume subpath and the `image`, `npipe` and `cluster` types refused.
pub fn mount_request(entry: &Value) -> Result<MountRequest, ApiError> {
    let m: MountBody = serde_json::from_value(entry.clone())
        .map_err(|e| bad(format!("invalid HostConfig.Mounts entry {entry}: {e}")))?;
    let typ = m.typ.unwrap_or_default();
    let source = m.source.unwrap_or_default();
    let target = m.target.unwrap_or_default();
    let err = |why: &dyn std::fmt::Display| mount_error(&typ, why);
    if target.is_empty() {
        return Err(err(&"field Target must not be empty"));
    }
    if target.trim_end_matches('/').is_empty() {
        return Err(err(&"invalid specification: destination can't be '/'"));
    }
    if !target.starts_with('/') {
        return Err(err(&format!(
            "invalid mount path: '{target}' mount path must be absolute"
        )));
    }
    let extra = |field: &str| err(&format!("field {field} must not be specified"));
    let mut req = MountRequest {
        read_only: m.read_only.unwrap_or(false),
        ..MountRequest::default()
    };
    match typ.as_str() {
        "bind" => {
            if source.is_empty() {
                return Err(err(&"field Source must not be empty"));
            }
            if !source.starts_with('/') {
                return Err(err(&format!(
                    "invalid mount path: '{source}' mount path must be absolute"
                )));
            }
            if m.volume_options.is_some() {
                return Err(extra("VolumeOptions"));
            }
            if m.tmpfs_options.is_some() {
                return Err(extra("TmpfsOptions"));
            }
            if let Some(b) = &m.bind_options {
                if let Some(p) = b.propagation.as_deref().filter(|p| !p.is_empty()) {
                    if !matches!(
                        p,
                        "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
                    ) {
                        return Err(err(&format!("invalid propagation mode: {p}")));
                    }
                }
                req.create_mountpoint = b.create_mountpoint.unwrap_or(false);
            }
        }
        "volume" => {
            if m.bind_options.is_some() {
                return Err(extra("BindOptions"));
            }
            if m.tmpfs_options.is_some() {
                return Err(extra("TmpfsOptions"));
            }
            if source.is_empty() && req.read_only {
                return Err(err(
                    &"must not set ReadOnly mode when using anonymous volumes",
                ));
            }
            if let Some(v) = &m.volume_options {
                if let Some(d) = v.driver_config.as_ref() {
                    let name = d.name.as_deref().unwrap_or("");
                    if !matches!(name, "" | "local") {
                        return Err(bad(format!(
                            "berth does not support the volume driver \"{name}\": berth has the local driver"
                        )));
                    }
                    if d.options.as_ref().is_some_and(|o| !o.is_empty()) {
                        return Err(bad(
                            "berth does not support volume driver options: its volumes are folders",
                        ));
                    }
                }
                if v.subpath.as_deref().is_some_and(|s| !s.is_empty()) {
                    return Err(bad("berth does not support VolumeOptions.Subpath yet"));
                }
                req.no_copy = v.no_copy.unwrap_or(false);
            }
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(extra("Source"));
            }
            if m.bind_options.is_some() {
                return Err(extra("BindOptions"));
            }
            if m.volume_options.is_some() {
                return Err(extra("VolumeOptions"));
            }
            if let Some(t) = &m.tmpfs_options {
                match t.size_bytes {
                    Some(n) if n < 0 => {
                        return Err(err(&format!("invalid tmpfs size: {n} bytes")));
                    }
                    Some(n) if n > 0 => req.tmpfs_size_bytes = Some(n as u64),
                    _ => {}
                }
                req.tmpfs_mode = t.mode.filter(|m| *m != 0);
                for opt in t.options.iter().flatten() {
                    match opt.as_slice() {
                        [flag] => req.tmpfs_options.push(flag.clone()),
                        [key, value] => req.tmpfs_options.push(format!("{key}={value}")),
                        _ => {
                            return Err(err(&format!(
                            "invalid tmpfs option {opt:?}: use [\"flag\"] or [\"key\", \"value\"]"
                        )))
                        }
                    }
                }
            }
        }
        "image" | "npipe" | "cluster" => {
            return Err(bad(format!(
                "berth does not support mounts of type \"{typ}\": use bind, volume or tmpfs"
            )))
        }
        _ => return Err(err(&"mount type unknown")),
    }
    req.typ = typ;
    req.source = source;
    req.target = target;
    Ok(req)
}

/// `MountRequest`s as inspect's `HostConfig.Mounts`.
fn mounts_json(mounts: &[MountRequest]) -> Vec<Value> {
    mounts
        .iter()
        .map(|m| {
            let mut v = serde_json::json!({
                "Type": m.typ,
                "Target": m.target,
            });
            if !m.source.is_empty() {
                v["Source"] = m.source.clone().into();
            }
            if m.read_only {
                v["ReadOnly"] = true.into();
            }
            if m.typ == "tmpfs" && (m.tmpfs_size_bytes.is_some() || m.tmpfs_mode.is_some()) {
                let mut t = serde_json::json!({});
                if let Some(n) = m.tmpfs_size_bytes {
                    t["SizeBytes"] = n.into();
                }
                if let Some(mode) = m.tmpfs_mode {
                    t["Mode"] = mode.into();
                }
                v["TmpfsOptions"] = t;
            }
            if m.no_copy {
                v["VolumeOptions"] = serde_json::json!({"NoCopy": true});
            }
            if m.create_mountpoint {
                v["BindOptions"] = serde_json::json!({"CreateMountpoint": true});
            }
            v
        })
        .collect()
}

/// `HostConfig.PortBindings` (`{"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}`) as
/// bindings; a key without bindings, or an empty `HostPort`, asks for a free port.
pub fn port_bindings(map: &BTreeMap<String, Value>) -> Result<Vec<PortBinding>, ApiError> {
    let mut out = Vec::new();
    for (key, value) in map {
        let (port, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
        let container_port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad(format!("invalid port in PortBindings: {key:?}")))?;
        if !matches!(protocol, "tcp" | "udp") {
            return Err(bad(format!(
                "invalid protocol in PortBindings: {key:?}: use tcp or udp"
            )));
        }
        let hosts: Vec<&serde_json::Map<String, Value>> = match value {
            Value::Null => Vec::new(),
            Value::Array(a) => a
                .iter()
                .map(|b| {
                    b.as_object()
                        .ok_or_else(|| bad(format!("invalid binding for {key} in PortBindings")))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(bad(format!("invalid bindings for {key} in PortBindings"))),
        };
        let field = |b: &serde_json::Map<String, Value>, name: &str| -> String {
            b.get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let one = |host_ip: String, host_port: &str| -> Result<PortBinding, ApiError> {
            let host_port = if host_port.is_empty() {
                0
            } else {
                host_port.parse::<u16>().map_err(|_| {
                    bad(format!(
                        "invalid HostPort {host_port:?} for {key} in PortBindings"
                    ))
                })?
            };
            Ok(PortBinding {
                container_port,
                protocol: protocol.to_string(),
                host_ip,
                host_port,
            })
        };
        if hosts.is_empty() {
            out.push(one(String::new(), "")?);
        }
        for b in hosts {
            out.push(one(field(b, "HostIp"), &field(b, "HostPort"))?);
        }
    }
    Ok(out)
}

/// The address docker shows for a binding on every address.
fn shown_ip(p: &PortBinding) -> String {
    if p.host_ip.is_empty() {
        "0.0.0.0".into()
    } else {
        p.host_ip.clone()
    }
}

/// Published ports as a list row's `Ports`.
fn list_ports(ports: &[PortBinding]) -> Vec<Value> {
    ports
        .iter()
        .map(|p| {
            serde_json::json!({
                "IP": shown_ip(p),
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": p.protocol,
            })
        })
        .collect()
}

/// Published ports as inspect's `NetworkSettings.Ports` / `HostConfig.PortBindings`.
fn port_map(ports: &[PortBinding]) -> BTreeMap<String, Value> {
    let mut out: BTreeMap<String, Value> = BTreeMap::new();
    for p in ports {
        let entry = out
            .entry(format!("{}/{}", p.container_port, p.protocol))
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = entry {
            a.push(serde_json::json!({
                "HostIp": shown_ip(p),
                "HostPort": p.host_port.to_string(),
            }));
        }
    }
    out
}

/// The network of a create body and the container's aliases there: `NetworkMode`, or
/// the one network of `NetworkingConfig` when the mode names none (as the SDKs send).
fn networking(
    mode: Option<String>,
    config: Option<types::NetworkingConfigBody>,
) -> Result<(String, Vec<String>), ApiError> {
    let endpoints = config.and_then(|c| c.endpoints_config).unwrap_or_default();
    let mode = mode.unwrap_or_default();
    let mode = match (mode.as_str(), endpoints.len()) {
        ("" | "default", 1) => endpoints.keys().next().cloned().unwrap_or_default(),
        _ => mode,
    };
    if endpoints.keys().any(|n| *n != mode) {
        return Err(bad(
            "berth gives each container one network: NetworkingConfig may name only the \
             network of HostConfig.NetworkMode",
        ));
    }
    let aliases = endpoints
        .get(&mode)
        .and_then(|e| e.aliases.clone())
        .unwrap_or_default();
    Ok((mode, aliases))
}

/// Validates a create body and converts it; returns the config and the
/// warnings to hand back to the client.
pub fn create_config(body: CreateBody) -> Result<(CreateConfig, Vec<String>), ApiError> {
    if body.image.is_empty() {
        return Err(bad(
            "config cannot be empty in order to create a container: no image given",
        ));
    }
    let h = body.host_config.unwrap_or_default();
    refuse_host_config(&h)?;
    let (network_mode, network_aliases) =
        networking(h.network_mode.clone(), body.networking_config)?;
    let warnings = Vec::new();
    let mounts = h
        .mounts
        .iter()
        .flatten()
        .map(mount_request)
        .collect::<Result<Vec<_>, _>>()?;
    let cpus = match (h.nano_cpus, h.cpu_quota, h.cpu_period) {
        (Some(n), _, _) if n > 0 => Some(n as f64 / 1e9),
        (_, Some(q), p) if q > 0 => Some(q as f64 / p.filter(|p| *p > 0).unwrap_or(100_000) as f64),
        _ => None,
    };
    let cfg = CreateConfig {
        image: body.image,
        cmd: body.cmd.map(StrSlice::into_vec),
        entrypoint: body.entrypoint.map(StrSlice::into_vec),
        env: body.env.unwrap_or_default(),
        working_dir: body.working_dir,
        user: body.user,
        hostname: body.hostname,
        domainname: body.domainname,
        tty: body.tty,
        open_stdin: body.open_stdin,
        stdin_once: body.stdin_once,
        attach_stdin: body.attach_stdin,
        attach_stdout: body.attach_stdout,
        attach_stderr: body.attach_stderr,
        labels: body.labels.unwrap_or_default(),
        stop_signal: body.stop_signal.filter(|s| !s.is_empty()),
        stop_timeout: body.stop_timeout,
        cpus,
        memory_bytes: h.memory.filter(|m| *m > 0),
        pids_limit: h.pids_limit.filter(|p| *p > 0),
        auto_remove: h.auto_remove.unwrap_or(false),
        network_aliases,
        network_mode,
        port_bindings: port_bindings(&h.port_bindings.unwrap_or_default())?,
        publish_all: h.publish_all_ports.unwrap_or(false),
        extra_hosts: h.extra_hosts.unwrap_or_default(),
        dns: h.dns.unwrap_or_default(),
        binds: h.binds.unwrap_or_default(),
        mounts,
        tmpfs: h.tmpfs.unwrap_or_default(),
        volumes: body.volumes.unwrap_or_default().into_keys().collect(),
    };
    Ok((cfg, warnings))
}

fn valid_name(name: &str) -> bool {
    let n = name.strip_prefix('/').unwrap_or(name);
    let mut chars = n.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `POST /containers/create?name=`.
pub async fn create(ctx: &Ctx, q: &Query, req: Request<Incoming>) -> ApiResult {
    let name = q.string("name");
    if let Some(n) = &name {
        if !valid_name(n) {
            return Err(bad(format!(
                "Invalid container name ({n}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
    }
    let body: CreateBody = read_json(req.into_body(), ctx.limits.max_json_body).await?;
    let (cfg, mut warnings) = create_config(body)?;
    let name = name.map(|n| n.trim_start_matches('/').to_string());
    let created = ctx.backend.create_container(name, cfg).await?;
    warnings.extend(created.warnings);
    Ok(response::json(
        StatusCode::CREATED,
        &types::CreateResponse {
            id: created.id,
            warnings,
        },
    ))
}

fn status_text(c: &ContainerSummary, now: u64) -> String {
    let since = |t: Option<u64>| {
        berth_units::human_duration(Duration::from_nanos(now.saturating_sub(t.unwrap_or(now))))
    };
    match c.status {
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Running => format!("Up {}", since(c.started_at_ns)),
        ContainerStatus::Paused => format!("Up {} (Paused)", since(c.started_at_ns)),
        ContainerStatus::Restarting => format!(
            "Restarting ({}) {} ago",
            c.exit_code,
            since(c.finished_at_ns)
        ),
        ContainerStatus::Removing => "Removal In Progress".into(),
        ContainerStatus::Exited => {
            format!("Exited ({}) {} ago", c.exit_code, since(c.finished_at_ns))
        }
        ContainerStatus::Dead => "Dead".into(),
    }
}

/// Docker's list row for a container.
pub fn list_entry(c: ContainerSummary, now: u64) -> types::ContainerListEntry {
    types::ContainerListEntry {
        status: status_text(&c, now),
        id: c.id,
        names: vec![format!("/{}", c.name)],
        image: c.image,
        image_id: c.image_id,
        command: c.command,
        created: (c.created_ns / 1_000_000_000) as i64,
        ports: list_ports(&c.ports),
        labels: c.labels,
        state: c.status.as_str().into(),
        host_config: types::ListHostConfig {
            network_mode: c.network_mode,
        },
        network_settings: types::ListNetworkSettings {
            networks: Default::default(),
        },
        mounts: vec![],
    }
}

/// `GET /containers/json?all=&limit=&filters=`.
pub async fn list(ctx: &Ctx, q: &Query) -> ApiResult {
    let filters = Filters::parse(q.get("filters"))?;
    validate_container_filters(&filters)?;
    let limit = q.int("limit")?.filter(|l| *l > 0);
    let all = q.bool("all") || limit.is_some();
    let mut list = ctx.backend.list_containers(all).await?;
    list.retain(|c| container_matches(&filters, c));
    list.sort_by_key(|c| std::cmp::Reverse(c.created_ns));
    if let Some(l) = limit {
        list.truncate(l as usize);
    }
    let now = now_ns();
    let rows: Vec<_> = list.into_iter().map(|c| list_entry(c, now)).collect();
    Ok(response::json(StatusCode::OK, &rows))
}

/// Docker's inspect JSON for a container.
pub fn inspect_json(d: ContainerDetails) -> types::ContainerInspect {
    let s = &d.state;
    let c = d.config;
    let ports = port_map(&d.ports);
    let nano_cpus = c.cpus.map(|c| (c * 1e9) as i64).unwrap_or(0);
    types::ContainerInspect {
        id: d.id,
        created: rfc3339_nano(Some(d.created_ns)),
        path: d.path,
        args: d.args,
        state: types::ContainerStateJson {
            status: s.status.as_str().into(),
            running: matches!(s.status, ContainerStatus::Running | ContainerStatus::Paused),
            paused: s.status == ContainerStatus::Paused,
            restarting: s.status == ContainerStatus::Restarting,
            oom_killed: s.oom_killed,
            dead: s.status == ContainerStatus::Dead,
            pid: s.pid,
            exit_code: s.exit_code,
            error: s.error.clone(),
            started_at: rfc3339_nano(s.started_at_ns),
            finished_at: rfc3339_nano(s.finished_at_ns),
        },
        image: d.image_id,
        resolv_conf_path: String::new(),
        hostname_path: String::new(),
        hosts_path: String::new(),
        log_path: d.log_path,
        name: format!("/{}", d.name),
        restart_count: d.restart_count,
        driver: "berth".into(),
        platform: "linux".into(),
        mount_label: String::new(),
        process_label: String::new(),
        app_armor_profile: String::new(),
        exec_ids: (!d.exec_ids.is_empty()).then_some(d.exec_ids),
        host_config: types::HostConfigJson {
            binds: (!c.binds.is_empty()).then(|| c.binds.clone()),
            network_mode: if c.network_mode.is_empty() {
                "default".into()
            } else {
                c.network_mode.clone()
            },
            port_bindings: ports.clone(),
            restart_policy: types::RestartPolicy {
                name: "no".into(),
                maximum_retry_count: 0,
            },
            auto_remove: c.auto_remove,
            log_config: types::LogConfig {
                // docker-py reads a container's output only for these
                // drivers; berth's logs endpoint serves the same content.
                typ: "json-file".into(),
                config: Default::default(),
            },
            privileged: false,
            publish_all_ports: false,
            readonly_rootfs: false,
            memory: c.memory_bytes.unwrap_or(0),
            nano_cpus,
            cpu_shares: 0,
            cpu_period: 0,
            cpu_quota: 0,
            pids_limit: c.pids_limit,
            cap_add: None,
            cap_drop: None,
            dns: c.dns.clone(),
            extra_hosts: (!c.extra_hosts.is_empty()).then(|| c.extra_hosts.clone()),
            volumes_from: None,
            links: None,
            ipc_mode: "private".into(),
            pid_mode: String::new(),
            devices: vec![],
            mounts: (!c.mounts.is_empty()).then(|| mounts_json(&c.mounts)),
            tmpfs: (!c.tmpfs.is_empty()).then(|| c.tmpfs.clone()),
            init: None,
        },
        graph_driver: types::GraphDriver {
            name: "berth".into(),
            data: None,
        },
        mounts: d
            .mounts
            .into_iter()
            .map(|m| types::MountPointJson {
                typ: m.typ,
                name: m.name,
                source: m.source,
                destination: m.destination,
                driver: m.driver,
                mode: m.mode,
                rw: m.rw,
                propagation: m.propagation,
            })
            .collect(),
        config: types::ContainerConfigJson {
            hostname: c.hostname,
            domainname: c.domainname,
            user: c.user,
            attach_stdin: c.attach_stdin,
            attach_stdout: c.attach_stdout,
            attach_stderr: c.attach_stderr,
            tty: c.tty,
            open_stdin: c.open_stdin,
            stdin_once: c.stdin_once,
            env: c.env,
            cmd: c.cmd,
            image: c.image,
            volumes: (!c.volumes.is_empty()).then(|| {
                c.volumes
                    .iter()
                    .map(|v| (v.clone(), serde_json::json!({})))
                    .collect()
            }),
            working_dir: c.working_dir,
            entrypoint: c.entrypoint,
            on_build: None,
            labels: c.labels,
            stop_signal: c.stop_signal,
            stop_timeout: c.stop_timeout,
        },
        network_settings: types::NetworkSettingsJson {
            bridge: String::new(),
            sandbox_id: String::new(),
            ports,
            sandbox_key: String::new(),
            ip_address: d.ip_address,
            gateway: d.gateway,
            mac_address: d.mac_address,
            networks: d
                .endpoint
                .into_iter()
                .map(|e| {
                    let v = serde_json::json!({
                        "Aliases": e.aliases,
                        "NetworkID": e.network_id,
                        "EndpointID": e.container_id,
                        "Gateway": e.gateway,
                        "IPAddress": e.address,
                        "IPPrefixLen": e.prefix,
                        "MacAddress": "",
                        "IPv6Gateway": "",
                        "GlobalIPv6Address": "",
                        "GlobalIPv6PrefixLen": 0,
                        "DNSNames": e.aliases,
                    });
                    (e.network, v)
                })
                .collect(),
        },
    }
}

/// `DELETE /containers/{id}?force=&v=`.
pub async fn remove(ctx: &Ctx, id: &str, q: &Query) -> ApiResult {
    if q.bool("link") {
        return Err(bad("berth does not support links"));
    }
    ctx.backend
        .remove_container(id, q.bool("force"), q.bool("v"))
        .await?;
    Ok(response::status(StatusCode::NO_CONTENT))
}

/// `/containers/{id}/{action}`; `None` when there is no such endpoint.
pub async fn action(
    ctx: &Ctx,
    id: &str,
    action: &str,
    method: &Method,
    q: &Query,
    req: Request<Incoming>,
) -> Option<ApiResult> {
    let b = &ctx.backend;
    let no_content = |r: Result<(), BackendError>| {
        r.map(|()| response::status(StatusCode::NO_CONTENT))
            .map_err(ApiError::from)
    };
    let r = match (action, method) {
        ("json", &Method::GET) => b
            .inspect_container(id)
            .await
            .map(|d| response::json(StatusCode::OK, &inspect_json(d)))
            .map_err(ApiError::from),
        ("start", &Method::POST) => no_content(b.start_container(id).await),
        ("stop", &Method::POST) => match q.int("t") {
            Ok(t) => no_content(b.stop_container(id, t, q.string("signal")).await),
            Err(e) => Err(e),
        },
        ("kill", &Method::POST) => {
            let signal = q.string("signal").unwrap_or_else(|| "KILL".into());
            no_content(b.kill_container(id, &signal).await)
        }
        ("restart", &Method::POST) => match q.int("t") {
            Ok(t) => no_content(b.restart_container(id, t).await),
            Err(e) => Err(e),
        },
        ("wait", &Method::POST) => wait(ctx, id, q).await,
        ("resize", &Method::POST) => resize(ctx, id, q).await,
        ("attach", &Method::POST) => attach(ctx, id, q, req).await,
        ("top", &Method::GET) => b
            .top(id, q.string("ps_args"))
            .await
            .map(|t| {
                response::json(
                    StatusCode::OK,
                    &types::TopResponse {
                        titles: t.titles,
                        processes: t.processes,
                    },
                )
            })
            .map_err(ApiError::from),
        ("stats", &Method::GET) => stats(ctx, id, q).await,
        ("logs", &Method::GET) => logs(ctx, id, q).await,
        ("archive", &Method::GET | &Method::HEAD | &Method::PUT) => {
            archive(ctx, id, method, q, req).await
        }
        ("exec", &Method::POST) => crate::exec::create(ctx, id, req).await,
        _ => return None,
    };
    Some(r)
}

/// Reads `h` and `w`.
pub fn size(q: &Query) -> Result<(u16, u16), ApiError> {
    let dim = |k: &str| -> Result<u16, ApiError> {
        let v = q.int(k)?.unwrap_or(0);
        u16::try_from(v).map_err(|_| bad(format!("invalid value for {k}: {v}")))
    };
    Ok((dim("h")?, dim("w")?))
}

async fn resize(ctx: &Ctx, id: &str, q: &Query) -> ApiResult {
    let (rows, cols) = size(q)?;
    ctx.backend.resize_container_tty(id, rows, cols).await?;
    Ok(response::status(StatusCode::OK))
}

/// `POST /containers/{id}/wait?condition=`: headers go out at once (the
/// client sends `start` only after it has them), the body
/// `{"StatusCode":N,"Error":null}` when the condition is met.
async fn wait(ctx: &Ctx, id: &str, q: &Query) -> ApiResult {
    let condition = match q.get("condition").unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => return Err(bad(format!("invalid condition: {other:?}"))),
    };
    let waiting = ctx.backend.wait_container(id, condition).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let result = tokio::select! {
            r = waiting => r,
            () = tx.closed() => return,
        };
        let body = match result {
            Ok(w) => types::WaitResponse {
                status_code: w.status_code,
                error: w.error.map(|message| types::WaitError { message }),
            },
            Err(e) => types::WaitResponse {
                status_code: -1,
                error: Some(types::WaitError {
                    message: e.to_string(),
                }),
            },
        };
        let _ = tx.send(json_line(&body)).await;
    });
    Ok(response::with_type(
        StatusCode::OK,
        "application/json",
        channel_body(rx),
    ))
}

/// `POST /containers/{id}/attach`: hijacked; answered before the
/// container starts, streaming once it does.
async fn attach(ctx: &Ctx, id: &str, q: &Query, mut req: Request<Incoming>) -> ApiResult {
    let details = ctx.backend.inspect_container(id).await?;
    let opts = AttachOptions {
        stdin: q.bool("stdin"),
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        logs: q.bool("logs"),
        stream: q.bool("stream"),
    };
    let streams = ctx.backend.attach_container(&details.id, opts).await?;
    Ok(hijack::hijack(
        hijack::take_upgrade(&mut req),
        details.config.tty,
        streams,
    ))
}

/// One log record as bytes on the wire.
pub fn log_bytes(
    stream: LogStream,
    time_ns: u64,
    data: &[u8],
    tty: bool,
    timestamps: bool,
) -> Bytes {
    let mut payload = Vec::with_capacity(data.len() + 32);
    if timestamps {
        payload.extend_from_slice(rfc3339_nano_fixed(time_ns).as_bytes());
        payload.push(b' ');
    }
    payload.extend_from_slice(data);
    if tty {
        Bytes::from(payload)
    } else {
        let n = match stream {
            LogStream::Stdout => STDOUT,
            LogStream::Stderr => STDERR,
        };
        encode_frame(n, &payload)
    }
}

async fn logs(ctx: &Ctx, id: &str, q: &Query) -> ApiResult {
    let ts = |k: &str| -> Result<Option<u64>, ApiError> {
        match q.string(k) {
            None => Ok(None),
            Some(v) if v == "0" => Ok(None),
            Some(v) => parse_timestamp(&v)
                .map(Some)
                .ok_or_else(|| bad(format!("invalid value for {k}: {v:?}"))),
        }
    };
    let tail = match q.get("tail").unwrap_or("all") {
        "" | "all" => None,
        n => match n.parse::<i64>() {
            Ok(n) if n < 0 => None,
            Ok(n) => Some(n as u64),
            Err(_) => return Err(bad(format!("invalid value for tail: {n:?}"))),
        },
    };
    let opts = LogOptions {
        follow: q.bool("follow"),
        stdout: q.bool("stdout"),
        stderr: q.bool("stderr"),
        since_ns: ts("since")?,
        until_ns: ts("until")?,
        tail,
        timestamps: q.bool("timestamps"),
    };
    if !opts.stdout && !opts.stderr {
        return Err(bad("Bad parameters: you must choose at least one stream"));
    }
    let details = ctx.backend.inspect_container(id).await?;
    let tty = details.config.tty;
    let timestamps = opts.timestamps;
    let records = ctx.backend.logs(&details.id, opts).await?;
    let body = records
        .map_ok(move |r| log_bytes(r.stream, r.time_ns, &r.data, tty, timestamps))
        .map_err(|e| std::io::Error::other(e.to_string()));
    Ok(response::with_type(
        StatusCode::OK,
        hijack::content_type(tty),
        streamed(body),
    ))
}

fn cpu_stats(s: Option<&StatsSample>) -> types::CpuStats {
    match s {
        None => types::CpuStats::default(),
        Some(s) => types::CpuStats {
            cpu_usage: types::CpuUsage {
                total_usage: s.cpu_total_ns,
                ..Default::default()
            },
            system_cpu_usage: Some(s.system_cpu_ns),
            online_cpus: Some(s.online_cpus),
            throttling_data: Default::default(),
        },
    }
}

/// Docker's stats JSON from a sample and the one before it.
pub fn stats_json(
    name: &str,
    id: &str,
    cur: &StatsSample,
    prev: Option<&StatsSample>,
) -> types::StatsJson {
    types::StatsJson {
        read: rfc3339_nano(Some(cur.time_ns)),
        preread: rfc3339_nano(prev.map(|p| p.time_ns)),
        pids_stats: types::PidsStats { current: cur.pids },
        blkio_stats: types::BlkioStats {
            io_service_bytes_recursive: None,
            io_serviced_recursive: None,
        },
        num_procs: 0,
        storage_stats: Default::default(),
        cpu_stats: cpu_stats(Some(cur)),
        precpu_stats: cpu_stats(prev),
        memory_stats: types::MemoryStats {
            usage: cur.memory_usage,
            stats: Default::default(),
            limit: cur.memory_limit,
        },
        name: format!("/{name}"),
        id: id.to_string(),
    }
}

/// `GET /containers/{id}/stats?stream=&one-shot=`: one sample a second
/// while streaming; without streaming, two samples a second apart (so
/// `precpu_stats` is filled) unless `one-shot`.
async fn stats(ctx: &Ctx, id: &str, q: &Query) -> ApiResult {
    let details = ctx.backend.inspect_container(id).await?;
    let first = ctx.backend.stats(&details.id).await?;
    let stream = q.bool_or("stream", true);
    if !stream {
        let (cur, prev) = if q.bool("one-shot") {
            (first, None)
        } else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            (ctx.backend.stats(&details.id).await?, Some(first))
        };
        let body = stats_json(&details.name, &details.id, &cur, prev.as_ref());
        return Ok(response::json(StatusCode::OK, &body));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let backend = ctx.backend.clone();
    tokio::spawn(async move {
        let mut prev: Option<StatsSample> = None;
        let mut cur = first;
        loop {
            let line = json_line(&stats_json(&details.name, &details.id, &cur, prev.as_ref()));
            if tx.send(line).await.is_err() {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = tx.closed() => return,
            }
            match backend.stats(&details.id).await {
                Ok(next) => prev = Some(std::mem::replace(&mut cur, next)),
                Err(e) => {
                    tracing::debug!("stats of {}: {e}", details.id);
                    return;
                }
            }
        }
    });
    Ok(response::with_type(
        StatusCode::OK,
        "application/json",
        channel_body(rx),
    ))
}

/// Unix `st_mode` to Go's `os.FileMode` bits, which Docker sends.
pub fn go_file_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut m = mode & 0o777;
    m |= match mode & 0o170000 {
        0o040000 => DIR,
        0o120000 => SYMLINK,
        0o060000 => DEVICE,
        0o020000 => DEVICE | CHAR_DEVICE,
        0o010000 => NAMED_PIPE,
        0o140000 => SOCKET,
        _ => 0,
    };
    if mode & 0o4000 != 0 {
        m |= SETUID;
    }
    if mode & 0o2000 != 0 {
        m |= SETGID;
    }
    if mode & 0o1000 != 0 {
        m |= STICKY;
    }
    m
}

/// The `X-Docker-Container-Path-Stat` value: base64 of the stat JSON.
pub fn path_stat_header(s: &PathStat) -> String {
    let json = types::PathStatJson {
        name: s.name.clone(),
        size: s.size,
        mode: go_file_mode(s.mode),
        mtime: rfc3339_nano(Some(s.mtime_ns)),
        link_target: s.link_target.clone(),
    };
    base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&json).unwrap_or_default())
}

async fn archive(
    ctx: &Ctx,
    id: &str,
    method: &Method,
    q: &Query,
    req: Request<Incoming>,
) -> ApiResult {
    let Some(path) = q.string("path") else {
        return Err(bad("path is required"));
    };
    let stat_header = |s: &PathStat| {
        HeaderValue::from_str(&path_stat_header(s)).map_err(|e| ApiError::Internal(e.to_string()))
    };
    match *method {
        Method::HEAD => {
            let s = ctx.backend.archive_stat(id, &path).await?;
            let mut r = response::status(StatusCode::OK);
            r.headers_mut().insert(PATH_STAT_HEADER, stat_header(&s)?);
            Ok(r)
        }
        Method::GET => {
            let (s, tar) = ctx.backend.archive_get(id, &path).await?;
            let body = tar.map_err(|e| std::io::Error::other(e.to_string()));
            let mut r = response::with_type(StatusCode::OK, "application/x-tar", streamed(body));
            r.headers_mut().insert(PATH_STAT_HEADER, stat_header(&s)?);
            Ok(r)
        }
        _ => {
            ctx.backend
                .archive_put(id, &path, body_stream(req.into_body()))
                .await?;
            Ok(response::status(StatusCode::OK))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_json;

    fn parse(s: &str) -> Result<(CreateConfig, Vec<String>), ApiError> {
        create_config(parse_json::<CreateBody>(s.as_bytes())?)
    }

    #[test]
    fn create_keeps_null_vs_empty() {
        let (c, w) = parse(r#"{"Image":"busybox","Cmd":["echo","hi"],"Entrypoint":null}"#).unwrap();
        assert_eq!(c.cmd, Some(vec!["echo".to_string(), "hi".to_string()]));
        assert_eq!(c.entrypoint, None);
        assert!(w.is_empty());
        let (c, _) = parse(r#"{"Image":"busybox","Entrypoint":[]}"#).unwrap();
        assert_eq!(c.entrypoint, Some(vec![]));
        assert_eq!(c.cmd, None);
        let (c, _) = parse(r#"{"Image":"busybox","Cmd":"date"}"#).unwrap();
        assert_eq!(c.cmd, Some(vec!["date".to_string()]));
    }

    #[test]
    fn create_reads_resources_and_ignores_zero_fields() {
        let body = r#"{"Image":"b","Tty":true,"OpenStdin":true,"Labels":{"x":"y"},
            "ExposedPorts":{"80/tcp":{}},"Unknown":7,
            "HostConfig":{"NanoCpus":1500000000,"Memory":1048576,"PidsLimit":0,"AutoRemove":true,
              "Binds":null,"Mounts":[],"PortBindings":{},"Privileged":false,"NetworkMode":"bridge",
              "CapAdd":null,"Devices":[],"PidMode":"","IpcMode":"private",
              "RestartPolicy":{"Name":"no","MaximumRetryCount":0},"ConsoleSize":[24,80]}}"#;
        let (c, w) = parse(body).unwrap();
        assert_eq!(c.cpus, Some(1.5));
        assert_eq!(c.memory_bytes, Some(1_048_576));
        assert_eq!(c.pids_limit, None);
        assert!(c.auto_remove && c.tty && c.open_stdin);
        assert_eq!(c.labels["x"], "y");
        assert!(w.is_empty());
        let (c, _) =
            parse(r#"{"Image":"b","HostConfig":{"CpuQuota":50000,"CpuPeriod":100000}}"#).unwrap();
        assert_eq!(c.cpus, Some(0.5));
        let (c, w) = parse(r#"{"Image":"b","Volumes":{"/data":{}}}"#).unwrap();
        assert_eq!(c.volumes, ["/data"]);
        assert!(w.is_empty());
    }

    #[test]
    fn binds_mounts_tmpfs_and_volumes_reach_the_backend() {
        let (c, _) = parse(
            r#"{"Image":"b","Volumes":{"/anon":{}},"HostConfig":{
              "Binds":["/h:/c:ro","data:/d"],"Tmpfs":{"/x":"size=2m","/y":""},
              "Mounts":[
                {"Type":"tmpfs","Target":"/t","TmpfsOptions":{"SizeBytes":1048576,"Mode":1023,"Options":[["noexec"]]}},
                {"Type":"bind","Source":"/src","Target":"/src","ReadOnly":true,"BindOptions":{"Propagation":"rprivate","CreateMountpoint":true}},
                {"Type":"volume","Source":"","Target":"/v","VolumeOptions":{"NoCopy":true}},
                {"Type":"volume","Source":"cache","Target":"/cache","Source":null,"ReadOnly":null}
              ]}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.binds, ["/h:/c:ro", "data:/d"]);
        assert_eq!(c.tmpfs["/x"], "size=2m");
        assert_eq!(c.tmpfs["/y"], "");
        assert_eq!(c.volumes, ["/anon"]);
        let t = &c.mounts[0];
        assert_eq!(
            (
                t.typ.as_str(),
                t.target.as_str(),
                t.tmpfs_size_bytes,
                t.tmpfs_mode
            ),
            ("tmpfs", "/t", Some(1 << 20), Some(0o1777))
        );
        assert_eq!(t.tmpfs_options, ["noexec"]);
        let b = &c.mounts[1];
        assert_eq!(
            (b.source.as_str(), b.read_only, b.create_mountpoint),
            ("/src", true, true)
        );
        assert!(c.mounts[2].no_copy && c.mounts[2].source.is_empty());
        assert_eq!(c.mounts[3].source, "", "a null Source is an empty one");
        let shown = serde_json::to_value(inspect_json(ContainerDetails {
            config: c,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(shown["HostConfig"]["Binds"][0], "/h:/c:ro");
        assert_eq!(shown["HostConfig"]["Tmpfs"]["/x"], "size=2m");
        assert_eq!(
            shown["HostConfig"]["Mounts"][0]["TmpfsOptions"]["SizeBytes"],
            1 << 20
        );
        assert!(shown["Config"]["Volumes"]["/anon"].is_object());
    }

    #[test]
    fn malformed_mounts_are_refused_in_dockers_words() {
        for (mount, why) in [
            (
                r#"{"Type":"bind","Source":"/h"}"#,
                r#"invalid mount config for type "bind": field Target must not be empty"#,
            ),
            (
                r#"{"Type":"bind","Target":"/c"}"#,
                r#"invalid mount config for type "bind": field Source must not be empty"#,
            ),
            (
                r#"{"Type":"bind","Source":"rel","Target":"/c"}"#,
                r#"invalid mount config for type "bind": invalid mount path: 'rel' mount path must be absolute"#,
            ),
            (
                r#"{"Type":"bind","Source":"/h","Target":"c"}"#,
                r#"invalid mount config for type "bind": invalid mount path: 'c' mount path must be absolute"#,
            ),
            (
                r#"{"Type":"volume","Target":"/"}"#,
                r#"invalid mount config for type "volume": invalid specification: destination can't be '/'"#,
            ),
            (
                r#"{"Type":"tmpfs","Source":"/h","Target":"/t"}"#,
                r#"invalid mount config for type "tmpfs": field Source must not be specified"#,
            ),
            (
                r#"{"Type":"bind","Source":"/h","Target":"/c","VolumeOptions":{}}"#,
                r#"invalid mount config for type "bind": field VolumeOptions must not be specified"#,
            ),
            (
                r#"{"Type":"volume","Target":"/c","BindOptions":{}}"#,
                r#"invalid mount config for type "volume": field BindOptions must not be specified"#,
            ),
            (
                r#"{"Type":"volume","Target":"/c","ReadOnly":true}"#,
                r#"invalid mount config for type "volume": must not set ReadOnly mode when using anonymous volumes"#,
            ),
            (
                r#"{"Type":"nfs","Target":"/c"}"#,
                r#"invalid mount config for type "nfs": mount type unknown"#,
            ),
            (
                r#"{"Type":"bind","Source":"/h","Target":"/c","BindOptions":{"Propagation":"sideways"}}"#,
                r#"invalid mount config for type "bind": invalid propagation mode: sideways"#,
            ),
            (
                r#"{"Type":"tmpfs","Target":"/t","TmpfsOptions":{"SizeBytes":-1}}"#,
                r#"invalid mount config for type "tmpfs": invalid tmpfs size: -1 bytes"#,
            ),
        ] {
            let body = format!(r#"{{"Image":"b","HostConfig":{{"Mounts":[{mount}]}}}}"#);
            let err = parse(&body).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{mount}");
            assert_eq!(err.to_string(), why, "{mount}");
        }
        for mount in [
            r#"{"Type":"volume","Source":"x","Target":"/c","VolumeOptions":{"DriverConfig":{"Name":"nfs"}}}"#,
            r#"{"Type":"volume","Source":"x","Target":"/c","VolumeOptions":{"Subpath":"a"}}"#,
            r#"{"Type":"image","Source":"busybox","Target":"/c"}"#,
            r#"{"Type":"bind","Source":5,"Target":"/c"}"#,
            r#""bind""#,
        ] {
            let body = format!(r#"{{"Image":"b","HostConfig":{{"Mounts":[{mount}]}}}}"#);
            assert!(
                matches!(parse(&body), Err(ApiError::BadRequest(_))),
                "{mount}"
            );
        }
    }

    #[test]
    fn port_bindings_parse_like_dockers() {
        let (c, _) = parse(
            r#"{"Image":"b","HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"},{"HostIp":"127.0.0.1","HostPort":""}],"53/udp":null},"NetworkMode":"none","ExtraHosts":["db:10.0.0.5"],"Dns":["1.1.1.1"]}}"#,
        )
        .unwrap();
        let ports: Vec<_> = c
            .port_bindings
            .iter()
            .map(|p| {
                (
                    p.container_port,
                    p.protocol.as_str(),
                    p.host_ip.as_str(),
                    p.host_port,
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                (53, "udp", "", 0),
                (80, "tcp", "", 8080),
                (80, "tcp", "127.0.0.1", 0)
            ]
        );
        assert_eq!(c.network_mode, "none");
        assert_eq!((c.extra_hosts.len(), c.dns.len()), (1, 1));
        for bad in [
            r#"{"x/tcp":[]}"#,
            r#"{"0/tcp":[]}"#,
            r#"{"80/sctp":[]}"#,
            r#"{"80/tcp":[{"HostPort":"99999"}]}"#,
            r#"{"80/tcp":"8080"}"#,
        ] {
            let body = format!(r#"{{"Image":"b","HostConfig":{{"PortBindings":{bad}}}}}"#);
            assert!(parse(&body).is_err(), "{bad}");
        }
        let shown = port_map(&c.port_bindings);
        assert_eq!(shown["80/tcp"][0]["HostIp"], "0.0.0.0");
        assert_eq!(shown["80/tcp"][1]["HostIp"], "127.0.0.1");
        assert_eq!(list_ports(&c.port_bindings)[1]["PublicPort"], 8080);
    }

    #[test]
    fn create_refuses_unsupported_host_config() {
        for (hc, field) in [
            (r#"{"Privileged":true}"#, "Privileged"),
            (r#"{"NetworkMode":"host"}"#, "NetworkMode"),
            (r#"{"CapAdd":["NET_ADMIN"]}"#, "CapAdd"),
            (r#"{"Devices":[{"PathOnHost":"/dev/kvm"}]}"#, "Devices"),
            (r#"{"VolumesFrom":["x"]}"#, "VolumesFrom"),
            (r#"{"Links":["a:b"]}"#, "Links"),
            (r#"{"PidMode":"host"}"#, "PidMode"),
            (r#"{"IpcMode":"host"}"#, "IpcMode"),
            (r#"{"RestartPolicy":{"Name":"always"}}"#, "RestartPolicy"),
        ] {
            let err = parse(&format!(r#"{{"Image":"b","HostConfig":{hc}}}"#)).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{hc}");
            assert_eq!(
                err.to_string(),
                format!("berth does not support HostConfig.{field} yet")
            );
        }
        assert!(matches!(
            parse(r#"{"Cmd":["x"]}"#),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse(r#"{"Image":"b","Cmd":5}"#),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn names() {
        assert!(valid_name("web-1"));
        assert!(valid_name("/a.b_c"));
        assert!(!valid_name("-x"));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a"));
    }

    #[test]
    fn path_stat_encoding() {
        let s = PathStat {
            name: "etc".into(),
            size: 4096,
            mode: 0o040755,
            mtime_ns: 1_000_000_000,
            link_target: String::new(),
        };
        let h = path_stat_header(&s);
        let raw = base64::engine::general_purpose::STANDARD.decode(h).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name":"etc","size":4096,"mode":2147484141u32,
                "mtime":"1970-01-01T00:00:01Z","linkTarget":""})
        );
        assert_eq!(go_file_mode(0o120777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(0o100644), 0o644);
        assert_eq!(go_file_mode(0o104755), (1 << 23) | 0o755);
    }

    #[test]
    fn log_framing() {
        let b = log_bytes(LogStream::Stderr, 0, b"x\n", false, true);
        assert_eq!(&b[..8], &[2, 0, 0, 0, 0, 0, 0, 33]);
        assert_eq!(&b[8..], b"1970-01-01T00:00:00.000000000Z x\n");
        assert_eq!(
            &log_bytes(LogStream::Stdout, 0, b"raw", true, false)[..],
            b"raw"
        );
    }

    #[test]
    fn inspect_field_names() {
        let d = ContainerDetails {
            id: "abc".into(),
            name: "web".into(),
            state: crate::backend::ContainerState {
                status: ContainerStatus::Exited,
                exit_code: 3,
                ..Default::default()
            },
            ..Default::default()
        };
        let v = serde_json::to_value(inspect_json(d)).unwrap();
        assert_eq!(v["Id"], "abc");
        assert_eq!(v["Name"], "/web");
        assert_eq!(v["State"]["ExitCode"], 3);
        assert_eq!(v["State"]["Status"], "exited");
        assert_eq!(v["State"]["Running"], false);
        assert_eq!(v["State"]["OOMKilled"], false);
        assert_eq!(v["State"]["StartedAt"], "0001-01-01T00:00:00Z");
        assert!(v["Config"]["Cmd"].is_null());
        assert!(v["Config"]["Labels"].is_object());
        assert!(v["HostConfig"]["RestartPolicy"]["Name"].is_string());
        // docker-py's containers.run() reads output only for json-file.
        assert_eq!(v["HostConfig"]["LogConfig"]["Type"], "json-file");
        assert!(v["NetworkSettings"]["Networks"].is_object());
        assert!(v.get("ExecIDs").is_some());
        let row = serde_json::to_value(list_entry(
            ContainerSummary {
                id: "abc".into(),
                name: "web".into(),
                status: ContainerStatus::Exited,
                exit_code: 3,
                finished_at_ns: Some(0),
                ..Default::default()
            },
            5_000_000_000,
        ))
        .unwrap();
        assert_eq!(row["Names"], serde_json::json!(["/web"]));
        assert_eq!(row["Status"], "Exited (3) 5 seconds ago");
        assert_eq!(row["State"], "exited");
        assert!(row.get("ImageID").is_some());
    }

    #[test]
    fn stats_shape() {
        let cur = StatsSample {
            time_ns: 2_000_000_000,
            cpu_total_ns: 10,
            system_cpu_ns: 100,
            online_cpus: 2,
            memory_usage: 5,
            memory_limit: 50,
            pids: 3,
        };
        let v = serde_json::to_value(stats_json("web", "abc", &cur, None)).unwrap();
        assert_eq!(v["cpu_stats"]["cpu_usage"]["total_usage"], 10);
        assert_eq!(v["cpu_stats"]["system_cpu_usage"], 100);
        assert_eq!(v["cpu_stats"]["online_cpus"], 2);
        assert_eq!(v["precpu_stats"]["cpu_usage"]["total_usage"], 0);
        assert_eq!(v["memory_stats"]["usage"], 5);
        assert_eq!(v["memory_stats"]["limit"], 50);
        assert_eq!(v["pids_stats"]["current"], 3);
        assert_eq!(v["name"], "/web");
        assert_eq!(v["preread"], "0001-01-01T00:00:00Z");
    }
}

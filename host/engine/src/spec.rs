//! What a new container runs: the front doors' options merged with the image's defaults
//! the way docker merges them, and the agent's create request for the container's VM.

use std::collections::BTreeMap;

use berth_containers::{ContainerRecord, RunSpec};
use berth_protocol::spec::{docker_spec, RunConfig};
use berth_protocol::{CreateRequest, Source, StdioOptions};

use crate::error::{Error, Result};
use crate::image::PreparedImage;

/// The most layers a container's VM takes: one virtio disk each, plus the scratch disk,
/// within `/dev/vda` to `/dev/vdz`.
pub const MAX_LAYERS: usize = 25;
/// The virtio devices of a container's VM besides its layers and shares: the scratch
/// disk, vsock, rng and the network card.
const OTHER_DEVICES: usize = 4;

/// Refuses, before anything starts, an image and mounts that need more virtio devices
/// than the VM has interrupt lines for.
fn check_devices(layers: usize, shares: usize) -> Result<()> {
    let max = berth_vmm::MAX_VIRTIO_DEVICES;
    if layers.min(MAX_LAYERS + 1) + shares + OTHER_DEVICES > max {
        return Err(Error::InvalidArgument(format!(
            "the image's {layers} layers and {shares} host folders or volumes need {} \
             devices, and a berth micro-VM has {max}: use fewer mounts, or an image with \
             fewer layers (berth run the image, commit it, and run the commit: one layer)",
            layers + shares + OTHER_DEVICES
        )));
    }
    if layers > MAX_LAYERS {
        return Err(Error::InvalidArgument(format!(
            "the image has {layers} layers; berth supports up to {MAX_LAYERS}"
        )));
    }
    Ok(())
}

/// What `create` and `run` ask for, as plain data: the CLI's flags and the Docker API's
/// create body both become this.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CreateOptions {
    /// The container's name; a generated one when `None`.
    pub name: Option<String>,
    /// The image reference.
    pub image: String,
    /// Replaces the image's entrypoint (and drops its command) when set; `Some(vec![])`
    /// clears it.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's command when not empty.
    pub command: Vec<String>,
    /// `KEY=VALUE` entries over the image's environment.
    pub env: Vec<String>,
    /// Working directory; the image's when `None`.
    pub workdir: Option<String>,
    /// `USER[:GROUP]`; the image's when `None`.
    pub user: Option<String>,
    /// Hostname; the short ID when `None`.
    pub hostname: Option<String>,
    /// CPUs: the VM's vCPUs rounded up and the container's `cpu.max`.
    pub cpus: f64,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// `pids.max`; `None` or a value below 1 for no limit.
    pub pids_limit: Option<i64>,
    /// Keep stdin open.
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// Remove the container when it exits.
    pub auto_remove: bool,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// `--network`: `default` (also `bridge`, and when `None`), `none`, or a
    /// user-defined network's name or ID.
    pub network: Option<String>,
    /// `--network-alias`: more names for the container on its user-defined network.
    pub network_aliases: Vec<String>,
    /// `--dns` servers, in place of the gateway's resolver.
    pub dns: Vec<std::net::IpAddr>,
    /// `--add-host` entries ([`crate::net::parse_add_host`]).
    pub add_hosts: Vec<berth_containers::ExtraHost>,
    /// `-p` ports ([`crate::net::parse_publish`]).
    pub publish: Vec<berth_containers::PortMapping>,
    /// `-P`: every TCP port the image exposes, on a free host port.
    pub publish_all: bool,
    /// `-v`, `--mount` and `--tmpfs` ([`berth_containers::mounts`]).
    pub mounts: Vec<berth_containers::MountSpec>,
}

/// Parses a docker memory size: `512m`, `1g`, `1048576`, `64M`.
pub fn parse_memory(text: &str) -> Result<u64> {
    let bytes = berth_units::parse_size(text).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "invalid memory size \"{text}\": use a number with k, m or g, like 512m"
        ))
    })?;
    check_memory(bytes)
}

/// docker's smallest memory limit.
const MIN_MEMORY_BYTES: u64 = 6 << 20;

fn check_memory(bytes: u64) -> Result<u64> {
    if bytes < MIN_MEMORY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "minimum memory limit allowed is 6MB, {bytes} bytes is less"
        )));
    }
    Ok(bytes)
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

/// What the container runs, docker's way: an entrypoint given replaces the image's and
/// drops its command; a command given replaces the image's command.
pub fn build_spec(opts: &CreateOptions, img: &PreparedImage) -> Result<RunSpec> {
    let (entrypoint, cmd) = match &opts.entrypoint {
        Some(e) => (e.clone(), opts.command.clone()),
        None if opts.command.is_empty() => (img.entrypoint.clone(), img.cmd.clone()),
        None => (img.entrypoint.clone(), opts.command.clone()),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no command specified: the image {} has none, give one after the image name",
            opts.image
        )));
    }
    let max_cpus = f64::from(berth_vmm::config::MAX_CPUS);
    if !opts.cpus.is_finite() || opts.cpus <= 0.0 || opts.cpus > max_cpus {
        return Err(Error::InvalidArgument(format!(
            "invalid --cpus {}: give a number of CPUs between 0.01 and {max_cpus} (a micro-VM \
             has at most {max_cpus} vCPUs)",
            opts.cpus
        )));
    }
    if let Some(e) = opts.env.iter().find(|e| e.is_empty() || e.starts_with('=')) {
        return Err(Error::InvalidArgument(format!(
            "invalid environment variable \"{e}\": the name is empty"
        )));
    }
    let network = crate::net::network_mode(opts.network.as_deref())?;
    let mut publish = opts.publish.clone();
    if opts.publish_all {
        publish.extend(crate::net::exposed_to_publish(&img.exposed_ports, &publish));
    }
    crate::net::check(&network, &opts.dns, &opts.add_hosts, &publish)?;
    let mounts = crate::mounts::with_image_volumes(&opts.mounts, &img.volumes)?;
    check_devices(
        img.layers.len(),
        mounts.iter().filter(|m| crate::mounts::is_share(m)).count(),
    )?;
    let memory_mib = match opts.memory_bytes {
        Some(b) => check_memory(b)?.div_ceil(1 << 20),
        None => 0,
    };
    Ok(RunSpec {
        image: opts.image.clone(),
        image_id: img.id.clone(),
        args: argv,
        env: merge_env(&img.env, &opts.env),
        workdir: opts
            .workdir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| img.workdir.clone()),
        user: opts.user.clone().unwrap_or_else(|| img.user.clone()),
        hostname: opts.hostname.clone().unwrap_or_default(),
        tty: opts.tty,
        interactive: opts.interactive,
        cpus: opts.cpus,
        memory_mib,
        pids_limit: opts.pids_limit.filter(|&n| n > 0),
        auto_remove: opts.auto_remove,
        labels: opts.labels.clone(),
        network,
        attachment: None,
        dns: opts.dns.clone(),
        add_hosts: opts.add_hosts.clone(),
        publish,
        mounts,
    })
}

/// The container's hostname: the one asked for, else its short ID, as in docker.
pub fn hostname(record: &ContainerRecord) -> String {
    if record.spec.hostname.is_empty() {
        record.short_id().to_string()
    } else {
        record.spec.hostname.clone()
    }
}

/// The create request for a container whose VM has `layers` disks, then the scratch disk,
/// and a network device when `networked`.
pub fn create_request(
    record: &ContainerRecord,
    layer_count: usize,
    networked: bool,
) -> Result<CreateRequest> {
    let spec = &record.spec;
    if layer_count > MAX_LAYERS {
        return Err(Error::InvalidArgument(format!(
            "the image has {layer_count} layers; berth supports up to {MAX_LAYERS}"
        )));
    }
    let oci = docker_spec(&RunConfig {
        args: spec.args.clone(),
        env: spec.env.clone(),
        cwd: spec.workdir.clone(),
        hostname: hostname(record),
        tty: spec.tty,
        memory_bytes: (spec.memory_mib > 0).then_some((spec.memory_mib << 20) as i64),
        cpus: Some(spec.cpus),
        pids_limit: spec.pids_limit,
    });
    let disk = |i: usize| format!("/dev/vd{}", (b'a' + i as u8) as char);
    let layers = (0..layer_count)
        .map(|i| Source::Device {
            path: disk(i),
            fstype: Some("erofs".into()),
        })
        .collect();
    let (network, extra_hosts) = crate::net::guest_config(record, networked);
    Ok(CreateRequest {
        network,
        extra_hosts,
        mounts: crate::mounts::guest_mounts(spec),
        id: record.id.clone(),
        spec: oci,
        layers,
        scratch: Some(Source::Device {
            path: disk(layer_count),
            fstype: Some("ext4".into()),
        }),
        user: (!spec.user.is_empty()).then(|| spec.user.clone()),
        stdio: StdioOptions {
            tty: spec.tty,
            open_stdin: spec.interactive,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> PreparedImage {
        PreparedImage {
            id: "sha256:abc".into(),
            layers: Vec::new(),
            entrypoint: vec!["/entry".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            workdir: "/srv".into(),
            user: "app".into(),
            volumes: vec!["/var/lib/app".into()],
            exposed_ports: vec!["80/tcp".into(), "53/udp".into(), "bogus".into()],
        }
    }

    fn record(spec: RunSpec) -> ContainerRecord {
        ContainerRecord {
            id: "ab".repeat(32),
            name: "n".into(),
            created: 0,
            spec,
            state: Default::default(),
        }
    }

    fn opts(command: &[&str]) -> CreateOptions {
        CreateOptions {
            image: "img".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            cpus: 1.0,
            ..Default::default()
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
    fn layers_and_shares_must_fit_the_vms_devices() {
        check_devices(10, 5).unwrap();
        let e = check_devices(10, 6).unwrap_err().to_string();
        assert!(e.contains("10 layers and 6 host folders"), "{e}");
        assert!(check_devices(MAX_LAYERS + 1, 0).is_err());
    }

    #[test]
    fn publish_all_maps_the_exposed_ports_to_free_host_ports() {
        let img = image();
        let mut o = opts(&[]);
        o.publish_all = true;
        let s = build_spec(&o, &img).unwrap();
        let shown: Vec<String> = s.publish.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["0.0.0.0:0->80/tcp", "0.0.0.0:0->53/udp"],
            "malformed entries are skipped"
        );
        o.publish = vec![crate::net::parse_publish("8080:80").unwrap()];
        let s = build_spec(&o, &img).unwrap();
        assert_eq!(s.publish.len(), 2, "a port mapped by -p keeps its mapping");
        assert_eq!(s.publish[0].host_port, 8080);
        assert!(build_spec(&opts(&[]), &img).unwrap().publish.is_empty());
    }

    #[test]
    fn entrypoint_and_command_combine_like_docker() {
        let img = image();
        assert_eq!(
            build_spec(&opts(&[]), &img).unwrap().args,
            ["/entry", "default"]
        );
        assert_eq!(
            build_spec(&opts(&["x", "-y"]), &img).unwrap().args,
            ["/entry", "x", "-y"]
        );
        let mut o = opts(&["-c", "true"]);
        o.entrypoint = Some(vec!["/bin/sh".into()]);
        assert_eq!(
            build_spec(&o, &img).unwrap().args,
            ["/bin/sh", "-c", "true"]
        );
        let mut o = opts(&["ls"]);
        o.entrypoint = Some(vec![]);
        assert_eq!(build_spec(&o, &img).unwrap().args, ["ls"]);
        let mut bare = image();
        bare.entrypoint.clear();
        bare.cmd.clear();
        assert!(build_spec(&opts(&[]), &bare).is_err(), "no command at all");
    }

    #[test]
    fn options_override_image_defaults() {
        let img = image();
        let mut o = opts(&[]);
        o.env = vec!["A=2".into(), "B=3".into()];
        o.workdir = Some("/tmp".into());
        o.user = Some("0:0".into());
        o.cpus = 1.5;
        o.memory_bytes = Some(256 << 20);
        o.auto_remove = true;
        o.labels.insert("k".into(), "v".into());
        let s = build_spec(&o, &img).unwrap();
        assert_eq!(s.env, ["PATH=/bin", "A=2", "B=3"]);
        assert_eq!((s.workdir.as_str(), s.user.as_str()), ("/tmp", "0:0"));
        assert_eq!((s.cpus, s.memory_mib), (1.5, 256));
        assert!(s.auto_remove);
        assert_eq!(s.labels["k"], "v");
        let s = build_spec(&opts(&[]), &img).unwrap();
        assert_eq!((s.workdir.as_str(), s.user.as_str()), ("/srv", "app"));
        let mut o = opts(&[]);
        o.cpus = 0.0;
        assert!(build_spec(&o, &img).is_err());
        let mut o = opts(&[]);
        o.env = vec!["=x".into()];
        assert!(build_spec(&o, &img).is_err());
        let mut o = opts(&[]);
        o.memory_bytes = Some(1024);
        assert!(build_spec(&o, &img).is_err(), "below 6 MB");
    }

    #[test]
    fn layers_and_scratch_map_to_virtio_disks_in_order() {
        let mut o = opts(&[]);
        o.pids_limit = Some(20);
        let spec = build_spec(&o, &image()).unwrap();
        let record = record(spec);
        let req = create_request(&record, 2, false).unwrap();
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
        assert!(create_request(&record, 25, false).is_ok());
        assert!(
            create_request(&record, 26, false).is_err(),
            "too many layers for vda..vdz"
        );
    }

    #[test]
    fn a_networked_container_gets_eth0_resolver_and_host_names() {
        let mut o = opts(&[]);
        o.dns = vec!["9.9.9.9".parse().unwrap()];
        o.add_hosts = vec![
            crate::net::parse_add_host("db:10.0.0.5").unwrap(),
            crate::net::parse_add_host("gw:host-gateway").unwrap(),
        ];
        o.publish = vec![crate::net::parse_publish("8080:80").unwrap()];
        let spec = build_spec(&o, &image()).unwrap();
        assert_eq!(spec.network, "default");
        let record = record(spec);
        let req = create_request(&record, 1, true).unwrap();
        let net = req.network.unwrap();
        net.validate().unwrap();
        assert_eq!(net.address.to_string(), "192.168.249.2");
        assert_eq!(net.gateway.to_string(), "192.168.249.1");
        assert_eq!(
            net.nameservers,
            ["9.9.9.9".parse::<std::net::IpAddr>().unwrap()]
        );
        let hosts: Vec<String> = req
            .extra_hosts
            .iter()
            .map(|h| format!("{} {}", h.name, h.address))
            .collect();
        assert_eq!(
            hosts,
            [
                "host.docker.internal 192.168.249.254",
                "host.berth.internal 192.168.249.254",
                "db 10.0.0.5",
                "gw 192.168.249.254"
            ]
        );
        // A VM booted only to reach the files has no network device.
        assert!(create_request(&record, 1, false).unwrap().network.is_none());
        let mut o = opts(&[]);
        o.network = Some("none".into());
        o.publish = vec![crate::net::parse_publish("80").unwrap()];
        assert!(build_spec(&o, &image()).is_err(), "-p needs a network");
        // On a user-defined network the container has its own address and gateway.
        let mut on_net = record.clone();
        on_net.spec.network = "backend".into();
        on_net.spec.attachment = Some(berth_containers::NetworkAttachment {
            network_id: "cd".repeat(32),
            subnet: "10.89.3.0".parse().unwrap(),
            prefix: 24,
            address: "10.89.3.7".parse().unwrap(),
            aliases: vec!["db".into()],
        });
        let net = create_request(&on_net, 1, true).unwrap().network.unwrap();
        net.validate().unwrap();
        assert_eq!(net.address.to_string(), "10.89.3.7");
        assert_eq!(net.gateway.to_string(), "10.89.3.1");
        assert_eq!(
            net.nameservers,
            ["9.9.9.9".parse::<std::net::IpAddr>().unwrap()],
            "its --dns kept"
        );
    }
}

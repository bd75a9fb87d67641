//! What a new container runs: the front doors' options merged with the image's defaults
//! the way docker merges them, and the agent's create request for the container's VM.

use std::collections::BTreeMap;

use berth_containers::{ContainerRecord, RunSpec};
use berth_protocol::spec::{docker_spec, RunConfig};
use berth_protocol::{ByteRange, CreateRequest, Source, StdioOptions};

use crate::error::{Error, Result};
use crate::image::PreparedImage;

/// The most layers of an image, as in docker. They all go on one read-only disk
/// (the VMM's most files on a disk, less the one a commit adds on top), each layer a byte
/// range of it, so the count costs no interrupt lines.
pub const MAX_LAYERS: usize = berth_vmm::config::MAX_DISK_FILES - 1;
/// The serial of the disk that holds an image's layers, one after another: the agent
/// finds it by that, so the host needs no guess at guest device names.
pub const LAYERS_SERIAL: &str = "berth-layers";
/// The serial of a container's scratch disk.
pub const SCRATCH_SERIAL: &str = "berth-scratch";
/// The virtio devices of a container's VM besides its layer disk and shares: the scratch
/// disk, vsock, rng and the network card.
const OTHER_DEVICES: usize = 4;

/// Refuses, before anything starts, an image with more layers than berth runs, and
/// mounts that need more virtio devices than the VM has interrupt lines for.
fn check_devices(layers: usize, shares: usize) -> Result<()> {
    if layers > MAX_LAYERS {
        return Err(Error::InvalidArgument(format!(
            "the image has {layers} layers; berth runs images of up to {MAX_LAYERS} \
             layers, as docker does: rebuild it with fewer"
        )));
    }
    let max = berth_vmm::MAX_VIRTIO_DEVICES;
    let devices = usize::from(layers > 0) + shares + OTHER_DEVICES;
    if devices > max {
        return Err(Error::InvalidArgument(format!(
            "{shares} host folders or volumes need {devices} virtio devices with the \
             container's own, and a berth micro-VM has {max}: use at most {} mounts",
            max - OTHER_DEVICES - 1
        )));
    }
    Ok(())
}

/// Where each of the layers of `sizes` bytes lies on the layer disk: one after another,
/// lowest first, as [`crate::vm::spawn_vmm`] lays out their files.
pub fn layer_ranges(sizes: &[u64]) -> Vec<ByteRange> {
    let mut offset = 0u64;
    sizes
        .iter()
        .map(|&length| {
            let r = ByteRange { offset, length };
            offset = offset.saturating_add(length);
            r
        })
        .collect()
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

/// The create request for a container whose VM has its layers at `layers` on the layer
/// disk, then the scratch disk, and a network device when `networked`.
pub fn create_request(
    record: &ContainerRecord,
    layers: &[ByteRange],
    networked: bool,
) -> Result<CreateRequest> {
    let spec = &record.spec;
    check_devices(layers.len(), 0)?;
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
    let layers = layers
        .iter()
        .map(|r| Source::Disk {
            serial: LAYERS_SERIAL.into(),
            range: Some(*r),
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
        scratch: Some(Source::Disk {
            serial: SCRATCH_SERIAL.into(),
            range: None,
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
            layer_bytes: Vec::new(),
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
        let max = berth_vmm::MAX_VIRTIO_DEVICES;
        let shares = max - OTHER_DEVICES - 1;
        check_devices(MAX_LAYERS, shares).unwrap();
        check_devices(0, shares + 1).unwrap();
        let e = check_devices(1, shares + 1).unwrap_err().to_string();
        let need = format!("{} host folders or volumes need {}", shares + 1, max + 1);
        assert!(e.contains(&need), "{e}");
        let e = check_devices(MAX_LAYERS + 1, 0).unwrap_err().to_string();
        assert!(
            e.contains("has 128 layers; berth runs images of up to 127"),
            "{e}"
        );
    }

    #[test]
    fn layers_lie_one_after_another_on_their_disk() {
        let r = layer_ranges(&[4096, 0, 8192, 512]);
        let pairs: Vec<_> = r.iter().map(|r| (r.offset, r.length)).collect();
        assert_eq!(pairs, [(0, 4096), (4096, 0), (4096, 8192), (12288, 512)]);
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
        let ranges = layer_ranges(&[4096, 8192]);
        let req = create_request(&record, &ranges, false).unwrap();
        let disks: Vec<_> = req
            .layers
            .iter()
            .chain(req.scratch.iter())
            .map(|s| match s {
                Source::Disk { serial, range, .. } => (serial.as_str(), range.map(|r| r.offset)),
                other => panic!("{other:?} is not a disk by serial"),
            })
            .collect();
        assert_eq!(
            disks,
            [
                (LAYERS_SERIAL, Some(0)),
                (LAYERS_SERIAL, Some(4096)),
                (SCRATCH_SERIAL, None)
            ]
        );
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
        let many = layer_ranges(&[4096; MAX_LAYERS]);
        assert_eq!(
            create_request(&record, &many, false).unwrap().layers.len(),
            127
        );
        let too_many = layer_ranges(&[4096; MAX_LAYERS + 1]);
        assert!(create_request(&record, &too_many, false).is_err());
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
        let req = create_request(&record, &layer_ranges(&[4096]), true).unwrap();
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
        assert!(create_request(&record, &layer_ranges(&[4096]), false)
            .unwrap()
            .network
            .is_none());
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
        let net = create_request(&on_net, &layer_ranges(&[4096]), true)
            .unwrap()
            .network
            .unwrap();
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

//! A container's network: docker's `--network` names, `--dns`, `--add-host` and `-p`
//! checked and mapped onto user-mode NAT in the container's VMM (`berth-net`), on the
//! default network or a user-defined one ([`crate::networks`]), and what the VMM and the
//! agent are told about it.
//!
//! Published ports listen on the host address asked for, docker's `0.0.0.0` unless told
//! otherwise, in the VMM process, so they live exactly as long as the container's VM.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use berth_containers::{ContainerRecord, ExtraHost, PortMapping, Protocol, NETWORK_DEFAULT};
use berth_protocol::{HostEntry, NetworkConfig, MAX_NAMESERVERS};

use crate::error::{Error, Result};

pub use berth_containers::ports::{check_publish, parse_add_host, parse_publish};
pub use berth_containers::NETWORK_NONE;

/// The host names a networked container resolves to the host (its loopback, through the
/// gateway's NAT), in `/etc/hosts` as in the gateway's DNS.
pub const HOST_NAMES: [&str; 2] = ["host.docker.internal", "host.berth.internal"];

/// The recorded network for a `--network` value: `default` and docker's `bridge` are
/// the user-mode NAT network, `none` is loopback only, `host` is refused; any other name
/// is a user-defined network (which [`crate::Engine::create`] looks up).
pub fn network_mode(name: Option<&str>) -> Result<String> {
    match name.unwrap_or(NETWORK_DEFAULT) {
        "" | "default" | "bridge" => Ok(NETWORK_DEFAULT.into()),
        "host" => Err(Error::InvalidArgument(
            "--network host is not possible: each container runs in its own micro-VM; \
             publish ports with -p instead"
                .into(),
        )),
        other if other.starts_with("container:") => Err(Error::InvalidArgument(format!(
            "--network {other} is not possible: each container runs in its own micro-VM; \
             put both on one user-defined network instead"
        ))),
        other => Ok(other.to_string()),
    }
}

/// Whether a recorded network is a user-defined one.
pub fn is_user_network(network: &str) -> bool {
    network != NETWORK_DEFAULT && network != NETWORK_NONE
}

/// `-P`: a free host port on every address for each port of `exposed` (`PORT/PROTO` as
/// images list them) that `published` does not already map. Malformed entries and
/// protocols other than TCP and UDP are skipped, with a warning.
pub fn exposed_to_publish(exposed: &[String], published: &[PortMapping]) -> Vec<PortMapping> {
    let mut out: Vec<PortMapping> = Vec::new();
    for e in exposed {
        let (port, proto) = e.split_once('/').unwrap_or((e.as_str(), "tcp"));
        let Ok(port) = port.parse::<u16>() else {
            tracing::warn!("the image exposes \"{e}\", which is not a port: skipped by -P");
            continue;
        };
        let protocol = match proto {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            _ => {
                tracing::warn!("-P publishes TCP and UDP ports: {e} is not published");
                continue;
            }
        };
        if port == 0
            || published
                .iter()
                .chain(&out)
                .any(|p| p.container_port == port && p.protocol == protocol)
        {
            continue;
        }
        out.push(PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED.into(),
            host_port: 0,
            container_port: port,
            protocol,
        });
    }
    out
}

/// Checks the network options together, as `create` records them.
pub fn check(
    network: &str,
    dns: &[IpAddr],
    add_hosts: &[ExtraHost],
    publish: &[PortMapping],
) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    if network == NETWORK_NONE {
        if !publish.is_empty() {
            return bad("conflicting options: port publishing and --network none".into());
        }
        if !dns.is_empty() {
            return bad("conflicting options: --dns and --network none".into());
        }
        if let Some(h) = add_hosts.iter().find(|h| h.ip.is_none()) {
            return bad(format!(
                "--add-host {}:host-gateway needs a network: --network none has none",
                h.name
            ));
        }
    }
    if dns.len() > MAX_NAMESERVERS {
        return bad(format!(
            "{} --dns servers given: the resolver uses at most {MAX_NAMESERVERS}",
            dns.len()
        ));
    }
    check_publish(publish).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok(())
}

/// Whether the container has a network (else only `lo`).
pub fn networked(record: &ContainerRecord) -> bool {
    record.spec.network != NETWORK_NONE
}

/// The addresses of a container's user-mode network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The container's address.
    pub guest: Ipv4Addr,
    /// Its gateway (and DNS server).
    pub gateway: Ipv4Addr,
    /// The host's loopback as the container sees it.
    pub host: Ipv4Addr,
    /// The subnet's network address.
    pub subnet: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
    /// Link MTU.
    pub mtu: u16,
}

/// berth-net's layout of `subnet`/`prefix` with the guest at `guest` (unset: the second
/// address).
pub(crate) fn user_net(
    subnet: Ipv4Addr,
    prefix: u8,
    guest: Option<Ipv4Addr>,
) -> berth_net::UserNetConfig {
    berth_net::UserNetConfig {
        subnet,
        prefix,
        mtu: berth_net::DEFAULT_MTU,
        hosts: Vec::new(),
        dns_upstream: Vec::new(),
        max_tcp: berth_net::DEFAULT_MAX_TCP,
        max_udp: berth_net::DEFAULT_MAX_UDP,
        tcp_buffer: berth_net::DEFAULT_TCP_BUFFER,
        forwards: Vec::new(),
        guest,
        peers: None,
    }
}

/// The layout of `record`'s network: on the default network each VM has the same one
/// (and its own gateway); on a user-defined network the container has its own address.
/// `None` without a network.
pub fn layout(record: &ContainerRecord) -> Option<Layout> {
    if !networked(record) {
        return None;
    }
    let c = match &record.spec.attachment {
        Some(a) => user_net(a.subnet, a.prefix, Some(a.address)),
        None => user_net(berth_net::DEFAULT_SUBNET, berth_net::DEFAULT_PREFIX, None),
    };
    Some(Layout {
        guest: c.guest_addr(),
        gateway: c.gateway(),
        host: c.host_addr(),
        subnet: c.subnet,
        prefix: c.prefix,
        mtu: c.mtu,
    })
}

/// The gateway (and DNS server) of the containers on network `n`.
pub fn gateway_of(n: &berth_containers::Network) -> Ipv4Addr {
    user_net(n.subnet, n.prefix, None).gateway()
}

/// Checks a subnet for a network: berth-net's rules (a private IPv4 network address,
/// prefix 16 to 29).
pub fn check_subnet(subnet: Ipv4Addr, prefix: u8) -> Result<()> {
    user_net(subnet, prefix, None)
        .validate()
        .map_err(|e| Error::InvalidArgument(e.to_string()))
}

/// The published ports with every host port 0 replaced by a free one of the host
/// address. The VMM binds them again (a port taken meanwhile fails its start).
pub fn resolve_ports(publish: &[PortMapping]) -> Result<Vec<PortMapping>> {
    publish
        .iter()
        .map(|p| {
            if p.host_port != 0 {
                return Ok(*p);
            }
            let addr = SocketAddr::new(p.host_ip, 0);
            let bound = match p.protocol {
                Protocol::Tcp => TcpListener::bind(addr).and_then(|l| l.local_addr()),
                Protocol::Udp => UdpSocket::bind(addr).and_then(|s| s.local_addr()),
            };
            let port = bound
                .map_err(|e| {
                    Error::Vm(format!(
                        "cannot find a free host port on {} for container port {}/{}: {e}",
                        p.host_ip, p.container_port, p.protocol
                    ))
                })?
                .port();
            Ok(PortMapping {
                host_port: port,
                ..*p
            })
        })
        .collect()
}

/// What the agent sets up for a networked container, and the `/etc/hosts` entries of
/// every container (with no network, only the user's).
pub fn guest_config(
    record: &ContainerRecord,
    networked: bool,
) -> (Option<NetworkConfig>, Vec<HostEntry>) {
    let l = layout(record).filter(|_| networked);
    let mut hosts = Vec::new();
    if let Some(l) = l {
        hosts.extend(HOST_NAMES.iter().map(|n| HostEntry {
            name: n.to_string(),
            address: IpAddr::V4(l.host),
        }));
    }
    hosts.extend(record.spec.add_hosts.iter().filter_map(|h| {
        Some(HostEntry {
            name: h.name.clone(),
            // host-gateway: refused without a network at create.
            address: h.ip.or(l.map(|l| IpAddr::V4(l.host)))?,
        })
    }));
    let network = l.map(|l| NetworkConfig {
        address: l.guest,
        prefix: l.prefix,
        gateway: l.gateway,
        mtu: l.mtu,
        nameservers: if record.spec.dns.is_empty() {
            vec![IpAddr::V4(l.gateway)]
        } else {
            record.spec.dns.clone()
        },
        search: Vec::new(),
    });
    (network, hosts)
}

/// The VMM's network device for `record` with published ports `ports` (host ports
/// resolved): its subnet and address, and on a user-defined network the peer folder
/// where it meets the network's other VMs.
pub fn vmm_config(record: &ContainerRecord, ports: &[PortMapping]) -> Result<berth_vmm::NetConfig> {
    let l = layout(record).ok_or_else(|| {
        Error::InvalidArgument(format!("container {} has no network", record.name))
    })?;
    let peers = match &record.spec.attachment {
        Some(a) => Some(crate::networks::peer_dir(&a.network_id)?),
        None => None,
    };
    Ok(berth_vmm::NetConfig {
        backend: berth_vmm::NetBackendConfig::User {
            subnet: format!("{}/{}", l.subnet, l.prefix),
            mtu: l.mtu,
            hosts: Default::default(),
            dns: None,
            max_tcp: berth_net::DEFAULT_MAX_TCP,
            max_udp: berth_net::DEFAULT_MAX_UDP,
            ports: ports
                .iter()
                .map(|p| berth_vmm::PublishedPort {
                    host: SocketAddr::new(p.host_ip, p.host_port),
                    guest_port: p.container_port,
                    protocol: match p.protocol {
                        Protocol::Tcp => berth_vmm::PortProtocol::Tcp,
                        Protocol::Udp => berth_vmm::PortProtocol::Udp,
                    },
                })
                .collect(),
            address: record.spec.attachment.as_ref().map(|a| a.address),
            peers,
        },
        ..berth_vmm::NetConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortMapping {
        parse_publish(s).unwrap()
    }

    #[test]
    fn network_names_like_docker_and_a_clear_refusal() {
        assert_eq!(network_mode(None).unwrap(), NETWORK_DEFAULT);
        assert_eq!(network_mode(Some("bridge")).unwrap(), NETWORK_DEFAULT);
        assert_eq!(network_mode(Some("none")).unwrap(), NETWORK_NONE);
        assert_eq!(network_mode(Some("backend")).unwrap(), "backend");
        assert!(is_user_network("backend") && !is_user_network(NETWORK_DEFAULT));
        for refused in ["host", "container:web"] {
            let e = network_mode(Some(refused)).unwrap_err();
            assert!(e.to_string().contains("micro-VM"), "{e}");
            assert_eq!(e.exit_code(), crate::EXIT_BERTH_FAILED);
        }
    }

    #[test]
    fn options_are_checked_together() {
        check(NETWORK_DEFAULT, &[], &[], &[p("8080:80"), p("81")]).unwrap();
        assert!(check(NETWORK_NONE, &[], &[], &[p("8080:80")]).is_err());
        let dns: IpAddr = "1.1.1.1".parse().unwrap();
        assert!(check(NETWORK_NONE, &[dns], &[], &[]).is_err());
        assert!(check(NETWORK_DEFAULT, &[dns; 4], &[], &[]).is_err());
        let gw = parse_add_host("gw:host-gateway").unwrap();
        assert!(check(NETWORK_NONE, &[], std::slice::from_ref(&gw), &[]).is_err());
        check(NETWORK_DEFAULT, &[], &[gw], &[]).unwrap();
        check(NETWORK_DEFAULT, &[], &[], &[p("53:53/udp"), p("53:53")]).unwrap();
        assert!(check(NETWORK_DEFAULT, &[], &[], &[p("8080:80"), p("8080:81")]).is_err());
    }

    #[test]
    fn free_host_ports_are_picked_and_fixed_ones_kept() {
        let got = resolve_ports(&[
            p("127.0.0.1::80"),
            p("127.0.0.1:8080:81"),
            p("127.0.0.1::53/udp"),
        ])
        .unwrap();
        assert_ne!(got[0].host_port, 0);
        assert_ne!(got[2].host_port, 0);
        assert_eq!(got[1].host_port, 8080);
        let record = ContainerRecord {
            id: "a".repeat(64),
            name: "web".into(),
            created: 0,
            spec: berth_containers::RunSpec {
                network: NETWORK_DEFAULT.into(),
                ..Default::default()
            },
            state: Default::default(),
        };
        let vmm = vmm_config(&record, &got).unwrap();
        let berth_vmm::NetBackendConfig::User { ports, .. } = &vmm.backend;
        assert_eq!(ports[1].host, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(ports[1].guest_port, 81);
        vmm.user_config().unwrap();
    }
}

//! `berth-net`: user-mode networking for berth micro-VMs, portable to every host OS.
//!
//! [`UserNet`] is a [`NetBackend`] for berth's virtio-net device. It plays a virtual
//! gateway on a private subnet (by default `192.168.249.0/24`: gateway `.1`, guest `.2`,
//! host `.254`), so the guest needs no host privileges, no TAP device and no bridge:
//!
//! * **ARP** for the gateway and host addresses, and **ICMP echo** to them, are answered.
//! * **TCP** from the guest is terminated here and re-opened as an ordinary host socket to
//!   the same destination. The guest-facing side is [smoltcp]: a small, pure-Rust stack
//!   with window scaling (it derives the scale from the receive buffer) and configurable
//!   buffers. Both matter for throughput: a 64 KiB window without scaling caps one stream
//!   at window/RTT, which is where slirp's ~200 Mbit/s at 10 ms comes from, so every flow
//!   gets [`UserNetConfig::tcp_buffer`] bytes each way (256 KiB by default).
//! * **UDP** datagrams are relayed through one connected host socket per flow.
//! * **NAT of the gateway and host addresses** to the host's `127.0.0.1`: the guest reaches
//!   host loopback services at `.254` (what `host.docker.internal` resolves to) or `.1`.
//! * **DNS** on the gateway's UDP port 53: names of a static table (container names,
//!   `host.docker.internal`) are answered here, every other query is forwarded to the
//!   host's resolver (from `/etc/resolv.conf` unless configured).
//!
//! * **Published ports**: [`UserNetConfig::forwards`] lists host TCP addresses to listen
//!   on. The listeners are bound in [`UserNet::new`], before the VM exists, so a port in
//!   use fails the VM's start and names the port. A host client accepted there is
//!   connected through the stack to the guest's address and port, from the gateway's
//!   address, as docker's proxy does.
//!
//! * **Peers on a berth network** ([`peers`]): with [`UserNetConfig::peers`] set, the
//!   other addresses of the subnet are the guests of other VMs on the same network,
//!   reached by TCP and UDP through Unix sockets in a shared folder, and named by its
//!   links in the gateway's DNS.
//!
//! Everything the guest controls is bounded: frames (MTU), queued frames each way, TCP
//! connections and UDP flows per VM, and bytes buffered per flow. A guest at a cap gets
//! RSTs for new connections, and its oldest idle UDP flow is recycled.

pub mod dns;
pub mod peers;
mod stack;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub use berth_devices::virtio::net::{NetBackend, NetBackendError, Readiness};
pub use stack::{UserNet, UserNetCounters, MAX_UDP_CLIENTS};

#[cfg(test)]
mod tests;

/// Default subnet: a private /24 that common tools (Docker's 172.17/16, slirp's 10.0.2/24,
/// gvisor-tap-vsock's 192.168.127/24, Tailscale's 100.64/10) leave alone.
pub const DEFAULT_SUBNET: Ipv4Addr = Ipv4Addr::new(192, 168, 249, 0);
/// Default subnet prefix length.
pub const DEFAULT_PREFIX: u8 = 24;
/// Default link MTU.
pub const DEFAULT_MTU: u16 = 1500;
/// Default cap on concurrent TCP connections per VM.
pub const DEFAULT_MAX_TCP: usize = 256;
/// Default cap on concurrent UDP flows per VM.
pub const DEFAULT_MAX_UDP: usize = 256;
/// Default bytes buffered per TCP connection in each direction.
pub const DEFAULT_TCP_BUFFER: usize = 256 * 1024;
/// Most names in the static DNS table.
pub const MAX_STATIC_HOSTS: usize = 1024;
/// Largest configurable per-direction TCP buffer.
pub const MAX_TCP_BUFFER: usize = 16 * 1024 * 1024;
/// Largest configurable connection or flow cap.
pub const MAX_FLOWS: usize = 65_536;
/// Most published ports per VM.
pub const MAX_FORWARDS: usize = 256;
/// The gateway's MAC address (locally administered, unicast).
pub const GATEWAY_MAC: [u8; 6] = [0x5a, 0x94, 0xef, 0xe4, 0x0c, 0xee];

/// How the user-mode network is laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserNetConfig {
    /// The subnet's network address.
    pub subnet: Ipv4Addr,
    /// The subnet's prefix length (16 to 29).
    pub prefix: u8,
    /// Link MTU (the guest's interface should use it; the device offers it).
    pub mtu: u16,
    /// Static DNS names answered by the gateway.
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// Where other DNS queries go (only the first is used); empty: not forwarded.
    pub dns_upstream: Vec<SocketAddr>,
    /// Most TCP connections at once.
    pub max_tcp: usize,
    /// Most UDP flows at once.
    pub max_udp: usize,
    /// Bytes buffered per TCP connection, in each direction.
    pub tcp_buffer: usize,
    /// Published TCP ports: host listeners whose connections go to a guest port.
    pub forwards: Vec<PortForward>,
    /// The guest's address; unset: the subnet's second address.
    pub guest: Option<Ipv4Addr>,
    /// The peer folder of the berth network this guest is on ([`peers`]); unset: the
    /// rest of the subnet is empty.
    pub peers: Option<PathBuf>,
}

/// Which addresses of a subnet can be peers: all but the network and broadcast
/// addresses, the gateway and the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRange {
    net: u32,
    mask: u32,
    gateway: Ipv4Addr,
    host: Ipv4Addr,
}

impl PeerRange {
    /// Whether `ip` is in the subnet at all.
    pub fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask == self.net
    }
    /// Whether `ip` can be a guest's address.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        self.in_subnet(ip)
            && n != self.net
            && n != self.net | !self.mask
            && ip != self.gateway
            && ip != self.host
    }
}

/// One published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortForward {
    /// Where the host listens (a port, not 0: pick a free one before).
    pub host: SocketAddr,
    /// The guest port its connections (or datagrams) reach, on the guest's address.
    pub guest_port: u16,
    /// TCP or UDP.
    pub transport: Transport,
}

/// The transport of a published port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// TCP: each host connection becomes one into the guest.
    #[default]
    Tcp,
    /// UDP: each host client gets a gateway port, and the guest's answers to it go
    /// back to that client.
    Udp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        })
    }
}

impl Default for UserNetConfig {
    fn default() -> Self {
        let mut c = UserNetConfig {
            subnet: DEFAULT_SUBNET,
            prefix: DEFAULT_PREFIX,
            mtu: DEFAULT_MTU,
            hosts: Vec::new(),
            dns_upstream: host_resolvers(),
            max_tcp: DEFAULT_MAX_TCP,
            max_udp: DEFAULT_MAX_UDP,
            tcp_buffer: DEFAULT_TCP_BUFFER,
            forwards: Vec::new(),
            guest: None,
            peers: None,
        };
        c.hosts.push(("host.docker.internal".into(), c.host_addr()));
        c.hosts.push(("host.berth.internal".into(), c.host_addr()));
        c
    }
}

impl UserNetConfig {
    fn offset(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet).wrapping_add(n))
    }
    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix.clamp(1, 31)))
    }
    /// The gateway: the subnet's first address.
    pub fn gateway(&self) -> Ipv4Addr {
        self.offset(1)
    }
    /// The guest: [`Self::guest`], else the subnet's second address.
    pub fn guest_addr(&self) -> Ipv4Addr {
        self.guest.unwrap_or_else(|| self.offset(2))
    }
    /// The addresses guests can have.
    pub fn peer_range(&self) -> PeerRange {
        let mask = u32::from(self.netmask());
        PeerRange {
            net: u32::from(self.subnet) & mask,
            mask,
            gateway: self.gateway(),
            host: self.host_addr(),
        }
    }
    /// The host's loopback, as the guest sees it: the subnet's last usable address.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.offset(self.size() - 2)
    }
    /// The subnet mask.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(!(self.size() - 1))
    }

    /// Checks the layout and the caps.
    pub fn validate(&self) -> Result<(), UserNetError> {
        if !(16..=29).contains(&self.prefix)
            || u32::from(self.subnet) & (self.size() - 1) != 0
            || !self.subnet.is_private()
        {
            return Err(UserNetError::Subnet {
                subnet: self.subnet,
                prefix: self.prefix,
            });
        }
        if !self.peer_range().contains(self.guest_addr()) {
            return Err(UserNetError::GuestAddress(self.guest_addr()));
        }
        if let Some(dir) = &self.peers {
            if !dir.is_absolute() || dir.as_os_str().len() > peers::MAX_DIR_LEN {
                return Err(UserNetError::PeerDir(dir.clone()));
            }
        }
        if !(berth_devices::virtio::net::MIN_MTU..=berth_devices::virtio::net::MAX_MTU)
            .contains(&self.mtu)
            || self.mtu < 576
        {
            return Err(UserNetError::Mtu(self.mtu));
        }
        if self.hosts.len() > MAX_STATIC_HOSTS {
            return Err(UserNetError::TooManyHosts {
                got: self.hosts.len(),
                max: MAX_STATIC_HOSTS,
            });
        }
        if let Some((name, _)) = self.hosts.iter().find(|(n, _)| !dns::valid_name(n)) {
            return Err(UserNetError::HostName(name.clone()));
        }
        for (what, v) in [("max_tcp", self.max_tcp), ("max_udp", self.max_udp)] {
            if !(1..=MAX_FLOWS).contains(&v) {
                return Err(UserNetError::Cap {
                    what,
                    value: v,
                    min: 1,
                    max: MAX_FLOWS,
                });
            }
        }
        if !(4096..=MAX_TCP_BUFFER).contains(&self.tcp_buffer) {
            return Err(UserNetError::Cap {
                what: "tcp_buffer",
                value: self.tcp_buffer,
                min: 4096,
                max: MAX_TCP_BUFFER,
            });
        }
        if self.forwards.len() > MAX_FORWARDS {
            return Err(UserNetError::TooManyForwards {
                got: self.forwards.len(),
                max: MAX_FORWARDS,
            });
        }
        for (i, f) in self.forwards.iter().enumerate() {
            if f.host.port() == 0 || f.guest_port == 0 {
                return Err(UserNetError::ForwardPort(*f));
            }
            if self.forwards[..i]
                .iter()
                .any(|g| g.host == f.host && g.transport == f.transport)
            {
                return Err(UserNetError::ForwardTwice(f.host));
            }
        }
        Ok(())
    }
}

/// The host's resolvers from `/etc/resolv.conf`, port 53; empty when there is none.
pub fn host_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| dns::parse_resolv_conf(&t))
        .unwrap_or_default()
        .into_iter()
        .map(|ip: IpAddr| SocketAddr::new(ip, 53))
        .collect()
}

/// Why a user-mode network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum UserNetError {
    /// subnet {subnet}/{prefix} is unusable: give a private IPv4 network address with a prefix of 16 to 29
    #[error("subnet {subnet}/{prefix} is unusable: give a private IPv4 network address with a prefix of 16 to 29")]
    Subnet {
        /// The network address given.
        subnet: Ipv4Addr,
        /// The prefix given.
        prefix: u8,
    },
    /// the guest address {0} is not a host address of the subnet (nor its gateway's or the host's)
    #[error("the guest address {0} is not a host address of the subnet (nor its gateway's or the host's)")]
    GuestAddress(Ipv4Addr),
    /// the peer folder {0:?} must be an absolute path of at most 80 bytes (socket paths are short)
    #[error("the peer folder {0:?} must be an absolute path of at most 80 bytes (socket paths are short)")]
    PeerDir(PathBuf),
    /// cannot join the network's peer folder {dir:?}: {source}
    #[error("cannot join the network's peer folder {dir:?}: {source}")]
    Peers {
        /// The folder.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// MTU {0} is out of range: use 576 to 65521
    #[error("MTU {0} is out of range: use 576 to 65521")]
    Mtu(u16),
    /// {got} static DNS names are too many: at most {max}
    #[error("{got} static DNS names are too many: at most {max}")]
    TooManyHosts {
        /// Names given.
        got: usize,
        /// The cap.
        max: usize,
    },
    /// {0:?} is not a valid DNS name
    #[error("{0:?} is not a valid DNS name")]
    HostName(String),
    /// {got} published ports are too many: at most {max}
    #[error("{got} published ports are too many: at most {max}")]
    TooManyForwards {
        /// Ports given.
        got: usize,
        /// The cap.
        max: usize,
    },
    /// published port {0:?} needs a host port and a guest port other than 0
    #[error("published port {0:?} needs a host port and a guest port other than 0")]
    ForwardPort(PortForward),
    /// host address {0} is published twice: give each published port its own host port
    #[error("host address {0} is published twice: give each published port its own host port")]
    ForwardTwice(SocketAddr),
    /// cannot publish host port {addr} ({transport}): {source}; free the port or publish another one
    #[error(
        "cannot publish host port {addr} ({transport}): {source}; free the port or publish another one"
    )]
    Listen {
        /// The host address.
        addr: SocketAddr,
        /// TCP or UDP.
        transport: Transport,
        /// Why the bind failed (`address already in use` when another program has it).
        source: std::io::Error,
    },
    /// {what} = {value} is out of range: use {min} to {max}
    #[error("{what} = {value} is out of range: use {min} to {max}")]
    Cap {
        /// Which setting.
        what: &'static str,
        /// Its value.
        value: usize,
        /// The smallest allowed.
        min: usize,
        /// The largest allowed.
        max: usize,
    },
}

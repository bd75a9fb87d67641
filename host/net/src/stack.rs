//! The gateway itself: a smoltcp interface in "any IP" mode for TCP, hand-made UDP relays,
//! and the host sockets behind both, all driven from the device's poll loop.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry, Token};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpAddress, IpCidr, IpListenEndpoint, IpProtocol, Ipv4Packet,
    Ipv4Repr, TcpPacket, UdpPacket, UdpRepr,
};

use crate::peers::{PeerStream, Peers};
use crate::{
    dns, NetBackend, NetBackendError, Readiness, Transport, UserNetConfig, UserNetError,
    GATEWAY_MAC,
};
use berth_devices::virtio::net::BACKEND_TOKEN_BASE;

/// Host clients of one published UDP port at most; past it, the one idle the longest
/// is forgotten.
pub const MAX_UDP_CLIENTS: usize = 256;

/// Frames queued towards the guest (smoltcp's output and UDP replies) at most.
pub const MAX_QUEUED_TO_GUEST: usize = 1024;
/// Frames from the guest queued for smoltcp at most.
pub const MAX_QUEUED_FROM_GUEST: usize = 1024;
/// Datagrams read from one UDP host socket per poll.
const UDP_READS_PER_POLL: usize = 64;
/// How long a UDP flow lives without traffic (DNS flows: a tenth of it).
const UDP_IDLE: Duration = Duration::from_secs(60);
/// How long a TCP socket waits for the guest's handshake to complete.
const TCP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// Rounds of (stack, host sockets) per poll.
const ROUNDS_PER_POLL: usize = 4;
/// Host connections accepted on one published port per poll.
const ACCEPTS_PER_POLL: usize = 64;
/// The gateway's local ports for connections into the guest (Linux's ephemeral range).
const INBOUND_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;

/// What the backend has done, for tests and diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UserNetCounters {
    /// Guest frames dropped: malformed, not for us, or spoofed.
    pub dropped: u64,
    /// TCP connections refused because the cap was reached.
    pub tcp_refused: u64,
    /// UDP flows recycled because the cap was reached.
    pub udp_evicted: u64,
    /// DNS queries answered from the static table.
    pub dns_static: u64,
    /// Host connections accepted on published ports.
    pub tcp_inbound: u64,
}

/// The smoltcp side of the link: frames from the guest waiting for the stack, and frames
/// the stack (or the UDP relay) made for the guest.
struct Phy {
    from_guest: VecDeque<Vec<u8>>,
    to_guest: VecDeque<Vec<u8>>,
    mtu: usize,
}

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        // `transmit` keeps the queue under its cap; a reply to a received frame may go one
        // over, and twice the cap is the hard stop.
        if self.0.len() < 2 * MAX_QUEUED_TO_GUEST {
            self.0.push_back(buf);
        }
        r
    }
}

impl phy::Device for Phy {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(RxToken, TxToken<'_>)> {
        let frame = self.from_guest.pop_front()?;
        Some((RxToken(frame), TxToken(&mut self.to_guest)))
    }

    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<TxToken<'_>> {
        (self.to_guest.len() < MAX_QUEUED_TO_GUEST).then_some(TxToken(&mut self.to_guest))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu + 14;
        caps
    }
}

/// A guest flow: its source port and its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    guest_port: u16,
    dst: SocketAddrV4,
}

/// The host side of a TCP flow: a socket to a host service, or a stream to the VMM of a
/// peer on the same berth network ([`crate::peers`]).
enum HostStream {
    Tcp(TcpStream),
    Peer(PeerStream),
}

impl HostStream {
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        match self {
            HostStream::Tcp(s) => s.take_error(),
            HostStream::Peer(s) => s.take_error(),
        }
    }
    /// Whether a non-blocking connect has completed (a peer's stream connects at once).
    fn is_connected(&self) -> bool {
        match self {
            HostStream::Tcp(s) => s.peer_addr().is_ok(),
            HostStream::Peer(_) => true,
        }
    }
    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.shutdown(Shutdown::Write),
            HostStream::Peer(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for HostStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            HostStream::Tcp(s) => s.read(buf),
            HostStream::Peer(s) => s.read(buf),
        }
    }
}

impl Write for HostStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            HostStream::Tcp(s) => s.write(buf),
            HostStream::Peer(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.flush(),
            HostStream::Peer(s) => s.flush(),
        }
    }
}

impl mio::event::Source for HostStream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.register(r, t, i),
            HostStream::Peer(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.reregister(r, t, i),
            HostStream::Peer(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            HostStream::Tcp(s) => s.deregister(r),
            HostStream::Peer(s) => s.deregister(r),
        }
    }
}

/// Where a guest destination goes.
enum Target {
    /// A host socket address.
    Host(SocketAddr),
    /// The guest of another VM on the berth network, at this address.
    Peer(Ipv4Addr),
}

struct TcpFlow {
    key: FlowKey,
    handle: SocketHandle,
    stream: HostStream,
    connected: bool,
    readable: bool,
    writable: bool,
    host_eof: bool,
    shut_write: bool,
    dead: bool,
    created: Instant,
}

/// A published port: a host listener whose connections go to `guest_port`.
struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
    guest_port: u16,
    token: Option<Token>,
    readable: bool,
}

/// A published UDP port: a host socket whose clients each get a gateway port, from
/// which their datagrams reach `guest_port` and to which the guest answers.
struct UdpListener {
    socket: UdpSocket,
    addr: SocketAddr,
    guest_port: u16,
    token: Option<Token>,
    readable: bool,
    /// Each client's gateway port, and when it was last heard from or answered.
    clients: HashMap<SocketAddr, (u16, Instant)>,
}

struct UdpFlow {
    key: FlowKey,
    socket: UdpSocket,
    readable: bool,
    last_used: Instant,
    idle: Duration,
}

/// The user-mode network backend (see the crate documentation).
pub struct UserNet {
    config: UserNetConfig,
    gateway: Ipv4Addr,
    guest: Ipv4Addr,
    host: Ipv4Addr,
    guest_mac: Option<EthernetAddress>,
    phy: Phy,
    iface: Interface,
    sockets: SocketSet<'static>,
    registry: Option<Registry>,
    tcp: HashMap<Token, TcpFlow>,
    tcp_keys: HashMap<FlowKey, Token>,
    udp: HashMap<Token, UdpFlow>,
    udp_keys: HashMap<FlowKey, Token>,
    hosts: HashMap<String, Ipv4Addr>,
    listeners: Vec<Listener>,
    udp_listeners: Vec<UdpListener>,
    /// Gateway port of a published UDP port's client: (listener index, client).
    udp_published: HashMap<u16, (usize, SocketAddr)>,
    peers: Option<Peers>,
    next_inbound_port: u16,
    next_token: usize,
    epoch: Instant,
    counters: UserNetCounters,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for UserNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserNet")
            .field("gateway", &self.gateway)
            .field("tcp", &self.tcp.len())
            .field("udp", &self.udp.len())
            .finish_non_exhaustive()
    }
}

impl UserNet {
    /// A gateway laid out by `config` (checked first), with its published ports bound: a
    /// host port that is taken fails here, before any VM runs.
    pub fn new(config: UserNetConfig) -> Result<UserNet, UserNetError> {
        config.validate()?;
        let listen_error = |f: &crate::PortForward| {
            let (addr, transport) = (f.host, f.transport);
            move |source| UserNetError::Listen {
                addr,
                transport,
                source,
            }
        };
        let udp_listeners = config
            .forwards
            .iter()
            .filter(|f| f.transport == Transport::Udp)
            .map(|f| {
                let socket = std::net::UdpSocket::bind(f.host)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(listen_error(f))?;
                Ok(UdpListener {
                    socket: UdpSocket::from_std(socket),
                    addr: f.host,
                    guest_port: f.guest_port,
                    token: None,
                    readable: false,
                    clients: HashMap::new(),
                })
            })
            .collect::<Result<Vec<_>, UserNetError>>()?;
        let listeners = config
            .forwards
            .iter()
            .filter(|f| f.transport == Transport::Tcp)
            .map(|f| {
                let listener = std::net::TcpListener::bind(f.host)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(listen_error(f))?;
                Ok(Listener {
                    listener: TcpListener::from_std(listener),
                    addr: f.host,
                    guest_port: f.guest_port,
                    token: None,
                    readable: false,
                })
            })
            .collect::<Result<Vec<_>, UserNetError>>()?;
        let mut phy = Phy {
            from_guest: VecDeque::new(),
            to_guest: VecDeque::new(),
            mtu: usize::from(config.mtu),
        };
        let epoch = Instant::now();
        let mut iface_config = Config::new(HardwareAddress::Ethernet(EthernetAddress(GATEWAY_MAC)));
        iface_config.random_seed = random_seed();
        let mut iface = Interface::new(iface_config, &mut phy, smoltcp::time::Instant::ZERO);
        let (gateway, host) = (config.gateway(), config.host_addr());
        iface.update_ip_addrs(|addrs| {
            // smoltcp holds two addresses per interface by default: exactly these.
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(gateway), config.prefix));
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(host), config.prefix));
        });
        // "Any IP": accept TCP to every destination routed through ourselves.
        let _ = iface.routes_mut().add_default_ipv4_route(gateway);
        iface.set_any_ip(true);
        let hosts = config
            .hosts
            .iter()
            .map(|(n, a)| (dns::normalize(n), *a))
            .collect();
        let peers = match &config.peers {
            Some(dir) => Some(Peers::bind(dir, config.guest_addr())?),
            None => None,
        };
        Ok(UserNet {
            gateway,
            guest: config.guest_addr(),
            host,
            guest_mac: None,
            phy,
            iface,
            sockets: SocketSet::new(Vec::new()),
            registry: None,
            tcp: HashMap::new(),
            tcp_keys: HashMap::new(),
            udp: HashMap::new(),
            udp_keys: HashMap::new(),
            hosts,
            listeners,
            udp_listeners,
            udp_published: HashMap::new(),
            peers,
            next_inbound_port: *INBOUND_PORTS.start(),
            next_token: BACKEND_TOKEN_BASE,
            epoch,
            counters: UserNetCounters::default(),
            scratch: vec![0; 65_536],
            config,
        })
    }

    /// The layout in use.
    pub fn config(&self) -> &UserNetConfig {
        &self.config
    }

    /// What happened so far.
    pub fn counters(&self) -> UserNetCounters {
        self.counters
    }

    /// TCP connections open (or being set up) now.
    pub fn tcp_connections(&self) -> usize {
        self.tcp.len()
    }

    /// The host addresses of the published ports, as bound: TCP, then UDP.
    pub fn published(&self) -> Vec<SocketAddr> {
        let tcp = self
            .listeners
            .iter()
            .map(|l| l.listener.local_addr().unwrap_or(l.addr));
        let udp = self
            .udp_listeners
            .iter()
            .map(|l| l.socket.local_addr().unwrap_or(l.addr));
        tcp.chain(udp).collect()
    }

    /// Host clients of published UDP ports being served now.
    pub fn udp_clients(&self) -> usize {
        self.udp_published.len()
    }

    /// UDP flows open now.
    pub fn udp_flows(&self) -> usize {
        self.udp.len()
    }

    fn now(&self) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(self.epoch.elapsed().as_micros() as i64)
    }

    fn token(&mut self) -> Token {
        next_token(&mut self.next_token)
    }

    fn drop_frame(&mut self, why: &str) {
        tracing::trace!("user-net: guest frame dropped: {why}");
        self.counters.dropped += 1;
    }

    /// Where a guest destination goes: the gateway and host addresses are the host's
    /// loopback; other addresses of the subnet are peers on a berth network (and go
    /// nowhere without one); broadcast and multicast go nowhere.
    fn target(&self, dst: SocketAddrV4) -> Option<Target> {
        let ip = *dst.ip();
        if dst.port() == 0 {
            return None;
        }
        if ip == self.gateway || ip == self.host {
            return Some(Target::Host(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                dst.port(),
            )));
        }
        if self.config.peer_range().in_subnet(ip) {
            return (self.peers.is_some() && self.config.peer_range().contains(ip))
                .then_some(Target::Peer(ip));
        }
        if ip.is_broadcast() || ip.is_multicast() || ip.is_unspecified() {
            return None;
        }
        Some(Target::Host(SocketAddr::V4(dst)))
    }

    fn queue_for_stack(&mut self, frame: &[u8]) -> Result<(), NetBackendError> {
        if self.phy.from_guest.len() >= MAX_QUEUED_FROM_GUEST {
            return Err(NetBackendError::Full);
        }
        self.phy.from_guest.push_back(frame.to_vec());
        Ok(())
    }

    fn poll_stack(&mut self) -> bool {
        let now = self.now();
        matches!(
            self.iface.poll(now, &mut self.phy, &mut self.sockets),
            smoltcp::iface::PollResult::SocketStateChanged
        )
    }

    // ---- TCP ----

    /// A guest SYN for a flow we do not know yet: open the host side and a listening
    /// socket for the stack to complete the handshake on. At the cap, or when the
    /// destination is unreachable, no socket listens and the stack answers RST.
    fn open_tcp(&mut self, key: FlowKey) {
        if self.tcp.len() >= self.config.max_tcp {
            tracing::debug!(dst = %key.dst, "user-net: TCP connection cap reached; refused");
            self.counters.tcp_refused += 1;
            return;
        }
        let from = SocketAddrV4::new(self.guest, key.guest_port);
        let mut stream = match self.target(key.dst) {
            None => return,
            Some(Target::Host(target)) => match TcpStream::connect(target) {
                Ok(s) => HostStream::Tcp(s),
                Err(e) => {
                    tracing::debug!(%target, "user-net: cannot connect: {e}");
                    return;
                }
            },
            Some(Target::Peer(ip)) => {
                match self
                    .peers
                    .as_ref()
                    .and_then(|p| p.connect(ip, from, key.dst.port()))
                {
                    Some(s) => HostStream::Peer(s),
                    // No such peer running: no socket listens, the stack answers RST.
                    None => return,
                }
            }
        };
        let Some(token) = self.register_stream(&mut stream) else {
            return;
        };
        let mut socket = self.tcp_socket();
        let endpoint = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(*key.dst.ip())),
            port: key.dst.port(),
        };
        if socket.listen(endpoint).is_err() {
            self.deregister_stream(&mut stream);
            return;
        }
        tracing::debug!(guest_port = key.guest_port, dst = %key.dst, "user-net: TCP flow opened");
        self.add_flow(token, key, socket, stream, false);
    }

    /// Registers a flow's host socket for reading and writing, under the next token
    /// (which [`Self::add_flow`] takes).
    fn register_stream(&self, stream: &mut HostStream) -> Option<Token> {
        let token = Token(self.next_token);
        let registry = self.registry.as_ref()?;
        match registry.register(stream, token, Interest::READABLE | Interest::WRITABLE) {
            Ok(()) => Some(token),
            Err(e) => {
                tracing::warn!("user-net: cannot register a host socket: {e}");
                None
            }
        }
    }

    fn deregister_stream(&self, stream: &mut HostStream) {
        if let Some(r) = &self.registry {
            let _ = r.deregister(stream);
        }
    }

    /// A smoltcp socket with this network's buffers, Nagle off.
    fn tcp_socket(&self) -> tcp::Socket<'static> {
        let size = self.config.tcp_buffer;
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; size]),
            tcp::SocketBuffer::new(vec![0; size]),
        );
        socket.set_nagle_enabled(false);
        socket
    }

    /// Tracks a flow whose host socket is registered under `token` (taken here). A host
    /// side already `connected` (a published port's client) is tried at once, since it
    /// may have sent before its registration.
    fn add_flow(
        &mut self,
        token: Token,
        key: FlowKey,
        socket: tcp::Socket<'static>,
        stream: HostStream,
        connected: bool,
    ) {
        self.token();
        let handle = self.sockets.add(socket);
        self.tcp.insert(
            token,
            TcpFlow {
                key,
                handle,
                stream,
                connected,
                readable: connected,
                writable: connected,
                host_eof: false,
                shut_write: false,
                dead: false,
                created: Instant::now(),
            },
        );
        self.tcp_keys.insert(key, token);
    }

    /// Accepts host connections on the published ports and connects each through the
    /// stack to the guest's port, from the gateway's address.
    fn accept_inbound(&mut self) -> bool {
        let mut progress = false;
        for i in 0..self.listeners.len() {
            for _ in 0..ACCEPTS_PER_POLL {
                let l = &mut self.listeners[i];
                if !l.readable {
                    break;
                }
                let (stream, peer) = match l.listener.accept() {
                    Ok(a) => a,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        l.readable = false;
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // ECONNABORTED, EMFILE...: this connection is lost, the port stays.
                        tracing::debug!(addr = %l.addr, "user-net: accept failed: {e}");
                        break;
                    }
                };
                let guest_port = l.guest_port;
                progress = true;
                self.counters.tcp_inbound += 1;
                if self.tcp.len() >= self.config.max_tcp {
                    tracing::debug!(%peer, "user-net: TCP connection cap reached; published-port connection closed");
                    self.counters.tcp_refused += 1;
                    continue;
                }
                let Some(local_port) = self.inbound_port(guest_port) else {
                    self.counters.tcp_refused += 1;
                    continue;
                };
                let from = SocketAddrV4::new(self.gateway, local_port);
                self.open_inbound(HostStream::Tcp(stream), from, guest_port);
            }
        }
        progress
    }

    /// Accepts the streams of peers' flows into this guest and connects each through the
    /// stack to the guest's port, from the peer guest's own address and port.
    fn accept_peers(&mut self) -> bool {
        let Some(mut peers) = self.peers.take() else {
            return false;
        };
        let range = self.config.peer_range();
        let inbound = match self.registry.as_ref() {
            Some(registry) => {
                let next = &mut self.next_token;
                peers.accept(registry, || next_token(next), |ip| range.contains(ip))
            }
            None => Vec::new(),
        };
        let progress = !inbound.is_empty();
        for i in inbound {
            if self.tcp.len() >= self.config.max_tcp {
                tracing::debug!(src = %i.header.src, "user-net: TCP connection cap reached; a peer's connection closed");
                self.counters.tcp_refused += 1;
                continue;
            }
            self.counters.tcp_inbound += 1;
            self.open_inbound(HostStream::Peer(i.stream), i.header.src, i.header.dst_port);
        }
        self.peers = Some(peers);
        progress
    }

    /// Delivers the UDP datagrams peers sent this guest.
    fn pump_peer_datagrams(&mut self) -> bool {
        let Some(mut peers) = self.peers.take() else {
            return false;
        };
        let range = self.config.peer_range();
        let progress = peers.datagrams(
            |ip| range.contains(ip),
            |h, data| {
                let key = FlowKey {
                    guest_port: h.dst_port,
                    dst: h.src,
                };
                self.udp_to_guest(key, data)
            },
        );
        self.peers = Some(peers);
        progress
    }

    /// A gateway port no flow into the guest uses now: no TCP flow to `guest_port`, and
    /// no client of a published UDP port.
    fn inbound_port(&mut self, guest_port: u16) -> Option<u16> {
        let span = usize::from(INBOUND_PORTS.end() - INBOUND_PORTS.start()) + 1;
        for _ in 0..span {
            let port = self.next_inbound_port;
            self.next_inbound_port = if port >= *INBOUND_PORTS.end() {
                *INBOUND_PORTS.start()
            } else {
                port + 1
            };
            let key = FlowKey {
                guest_port,
                dst: SocketAddrV4::new(self.gateway, port),
            };
            if !self.tcp_keys.contains_key(&key) && !self.udp_published.contains_key(&port) {
                return Some(port);
            }
        }
        None
    }

    /// Connects `stream`'s flow through the stack to the guest's `guest_port`, from
    /// `from` (the gateway for published ports, a peer guest's address for peers).
    fn open_inbound(&mut self, mut stream: HostStream, from: SocketAddrV4, guest_port: u16) {
        let key = FlowKey {
            guest_port,
            dst: from,
        };
        if self.tcp_keys.contains_key(&key) {
            tracing::debug!(%from, guest_port, "user-net: a second flow with one address pair refused");
            self.counters.tcp_refused += 1;
            return;
        }
        let Some(token) = self.register_stream(&mut stream) else {
            return;
        };
        let mut socket = self.tcp_socket();
        let remote = (IpAddress::Ipv4(self.guest), guest_port);
        let local = (IpAddress::Ipv4(*from.ip()), from.port());
        if let Err(e) = socket.connect(self.iface.context(), remote, local) {
            tracing::debug!("user-net: cannot connect into the guest: {e}");
            self.deregister_stream(&mut stream);
            return;
        }
        tracing::debug!(%from, guest_port, "user-net: inbound connection opened");
        self.add_flow(token, key, socket, stream, true);
    }

    /// Moves bytes between every TCP flow's smoltcp socket and its host socket.
    fn pump_tcp(&mut self) -> bool {
        let mut progress = false;
        for flow in self.tcp.values_mut() {
            if flow.dead {
                continue;
            }
            let socket = self.sockets.get_mut::<tcp::Socket>(flow.handle);
            if socket.state() == tcp::State::Closed {
                // Reset by the guest, or fully closed: nothing more can move.
                flow.dead = true;
                progress = true;
                continue;
            }
            if !flow.connected {
                match flow.stream.take_error() {
                    Ok(None) => {}
                    Ok(Some(e)) | Err(e) => {
                        tracing::debug!(dst = %flow.key.dst, "user-net: host connect failed: {e}");
                        socket.abort();
                        flow.dead = true;
                        progress = true;
                        continue;
                    }
                }
                if !flow.stream.is_connected() {
                    continue;
                }
                flow.connected = true;
            }
            // Guest to host.
            while flow.writable && socket.can_recv() {
                let stream = &mut flow.stream;
                let r = socket.recv(|buf| match stream.write(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(n)) if n > 0 => progress = true,
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => flow.writable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => {
                        tracing::debug!("user-net: host write failed: {e}");
                        socket.abort();
                        flow.dead = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if flow.dead {
                continue;
            }
            // The guest closed its side and everything it sent is written.
            let guest_done = matches!(
                socket.state(),
                tcp::State::CloseWait
                    | tcp::State::LastAck
                    | tcp::State::Closing
                    | tcp::State::TimeWait
            ) && socket.recv_queue() == 0;
            if guest_done && !flow.shut_write {
                let _ = flow.stream.shutdown_write();
                flow.shut_write = true;
                progress = true;
            }
            // Host to guest.
            while flow.readable && !flow.host_eof && socket.can_send() {
                let stream = &mut flow.stream;
                let r = socket.send(|buf| match stream.read(buf) {
                    Ok(n) => (n, Ok(n)),
                    Err(e) => (0, Err(e)),
                });
                match r {
                    Ok(Ok(0)) => {
                        flow.host_eof = true;
                        socket.close();
                        progress = true;
                    }
                    Ok(Ok(_)) => progress = true,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => flow.readable = false,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(e)) => {
                        tracing::debug!("user-net: host read failed: {e}");
                        socket.abort();
                        flow.dead = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if matches!(socket.state(), tcp::State::Listen | tcp::State::SynSent)
                && flow.created.elapsed() > TCP_HANDSHAKE_TIMEOUT
            {
                socket.abort();
                flow.dead = true;
            }
        }
        progress
    }

    /// Forgets flows whose smoltcp socket is done (after the stack sent its last segment).
    fn sweep_tcp(&mut self) {
        let done: Vec<Token> = self
            .tcp
            .iter()
            .filter(|(_, f)| {
                let s = self.sockets.get::<tcp::Socket>(f.handle);
                matches!(s.state(), tcp::State::Closed | tcp::State::TimeWait)
                    && (f.dead || f.shut_write || f.host_eof || !f.connected)
                    || (f.dead && s.state() == tcp::State::Listen)
            })
            .map(|(t, _)| *t)
            .collect();
        for token in done {
            if let Some(mut flow) = self.tcp.remove(&token) {
                self.tcp_keys.remove(&flow.key);
                self.sockets.remove(flow.handle);
                self.deregister_stream(&mut flow.stream);
                tracing::debug!(dst = %flow.key.dst, "user-net: TCP flow closed");
            }
        }
    }

    // ---- UDP ----

    fn handle_udp(&mut self, ip: &Ipv4Repr, payload: &[u8]) {
        let Ok(packet) = UdpPacket::new_checked(payload) else {
            return self.drop_frame("short UDP header");
        };
        let Ok(repr) = UdpRepr::parse(
            &packet,
            &IpAddress::Ipv4(ip.src_addr),
            &IpAddress::Ipv4(ip.dst_addr),
            &ChecksumCapabilities::default(),
        ) else {
            return self.drop_frame("bad UDP packet");
        };
        let data = packet.payload();
        let key = FlowKey {
            guest_port: repr.src_port,
            dst: SocketAddrV4::new(ip.dst_addr, repr.dst_port),
        };
        if ip.dst_addr == self.gateway && self.answer_udp_client(repr.src_port, repr.dst_port, data)
        {
            return;
        }
        let is_dns = ip.dst_addr == self.gateway && repr.dst_port == 53;
        if is_dns {
            let (hosts, peers) = (&self.hosts, &self.peers);
            let lookup = |n: &str| hosts.get(n).copied().or_else(|| peers.as_ref()?.resolve(n));
            if let Some(reply) = dns::answer_static(data, lookup) {
                self.counters.dns_static += 1;
                self.udp_to_guest(key, &reply);
                return;
            }
        }
        if let Some(Target::Peer(peer)) = self.target(key.dst) {
            if let Some(peers) = &self.peers {
                let from = SocketAddrV4::new(self.guest, repr.src_port);
                peers.send_datagram(peer, from, repr.dst_port, data);
            }
            return;
        }
        let token = match self.udp_keys.get(&key) {
            Some(t) => *t,
            None => match self.open_udp(key, is_dns) {
                Some(t) => t,
                None => return,
            },
        };
        if let Some(flow) = self.udp.get_mut(&token) {
            flow.last_used = Instant::now();
            if let Err(e) = flow.socket.send(data) {
                tracing::debug!(dst = %key.dst, "user-net: UDP send failed: {e}");
            }
        }
    }

    /// A guest datagram from `guest_port` to gateway port `port`: when that port is a
    /// published UDP port's client, it goes back to the client; `false` otherwise.
    fn answer_udp_client(&mut self, guest_port: u16, port: u16, data: &[u8]) -> bool {
        let Some(&(i, client)) = self.udp_published.get(&port) else {
            return false;
        };
        let Some(l) = self
            .udp_listeners
            .get_mut(i)
            .filter(|l| l.guest_port == guest_port)
        else {
            return false;
        };
        if let Some(c) = l.clients.get_mut(&client) {
            c.1 = Instant::now();
        }
        if let Err(e) = l.socket.send_to(data, client) {
            tracing::debug!(%client, "user-net: UDP answer to a published port's client lost: {e}");
        }
        true
    }

    /// Reads datagrams from the published UDP ports' clients into the guest, each
    /// client from its own gateway port; forgets clients idle too long.
    fn pump_udp_listeners(&mut self) -> bool {
        let mut progress = false;
        for i in 0..self.udp_listeners.len() {
            for _ in 0..UDP_READS_PER_POLL {
                let l = &mut self.udp_listeners[i];
                if !l.readable {
                    break;
                }
                let (n, client) = match l.socket.recv_from(&mut self.scratch) {
                    Ok(r) => r,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        l.readable = false;
                        break;
                    }
                    Err(e) => {
                        tracing::debug!(addr = %l.addr, "user-net: published UDP receive: {e}");
                        continue;
                    }
                };
                progress = true;
                let guest_port = l.guest_port;
                let port = match l.clients.get_mut(&client) {
                    Some(c) => {
                        c.1 = Instant::now();
                        c.0
                    }
                    None => {
                        if l.clients.len() >= MAX_UDP_CLIENTS {
                            let oldest = l
                                .clients
                                .iter()
                                .min_by_key(|(_, c)| c.1)
                                .map(|(a, c)| (*a, c.0));
                            if let Some((addr, port)) = oldest {
                                l.clients.remove(&addr);
                                self.udp_published.remove(&port);
                                self.counters.udp_evicted += 1;
                            }
                        }
                        let Some(port) = self.inbound_port(guest_port) else {
                            continue;
                        };
                        self.udp_listeners[i]
                            .clients
                            .insert(client, (port, Instant::now()));
                        self.udp_published.insert(port, (i, client));
                        port
                    }
                };
                let data = self.scratch[..n].to_vec();
                let key = FlowKey {
                    guest_port,
                    dst: SocketAddrV4::new(self.gateway, port),
                };
                if !self.udp_to_guest(key, &data) {
                    break;
                }
            }
        }
        let mut expired = Vec::new();
        for l in &mut self.udp_listeners {
            l.clients.retain(|_, c| {
                let keep = c.1.elapsed() <= UDP_IDLE;
                if !keep {
                    expired.push(c.0);
                }
                keep
            });
        }
        for port in expired {
            self.udp_published.remove(&port);
        }
        progress
    }

    fn open_udp(&mut self, key: FlowKey, is_dns: bool) -> Option<Token> {
        let target = if is_dns {
            *self.config.dns_upstream.first()?
        } else {
            match self.target(key.dst)? {
                Target::Host(addr) => addr,
                Target::Peer(_) => return None,
            }
        };
        if self.udp.len() >= self.config.max_udp {
            // Recycle the flow idle the longest.
            let oldest = self
                .udp
                .iter()
                .min_by_key(|(_, f)| f.last_used)
                .map(|(t, _)| *t)?;
            self.close_udp(oldest);
            self.counters.udp_evicted += 1;
        }
        let bind: SocketAddr = match target {
            SocketAddr::V4(a) if a.ip().is_loopback() => (Ipv4Addr::LOCALHOST, 0).into(),
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let mut socket = UdpSocket::bind(bind)
            .and_then(|s| s.connect(target).map(|()| s))
            .map_err(|e| tracing::debug!(%target, "user-net: cannot open a UDP socket: {e}"))
            .ok()?;
        let token = Token(self.next_token);
        self.registry
            .as_ref()?
            .register(&mut socket, token, Interest::READABLE)
            .map_err(|e| tracing::warn!("user-net: cannot register a UDP socket: {e}"))
            .ok()?;
        self.token();
        self.udp.insert(
            token,
            UdpFlow {
                key,
                socket,
                readable: false,
                last_used: Instant::now(),
                idle: if is_dns { UDP_IDLE / 10 } else { UDP_IDLE },
            },
        );
        self.udp_keys.insert(key, token);
        Some(token)
    }

    fn close_udp(&mut self, token: Token) {
        if let Some(mut flow) = self.udp.remove(&token) {
            self.udp_keys.remove(&flow.key);
            if let Some(r) = &self.registry {
                let _ = r.deregister(&mut flow.socket);
            }
        }
    }

    /// A datagram for the guest, from the flow's destination to its source port.
    fn udp_to_guest(&mut self, key: FlowKey, data: &[u8]) -> bool {
        let Some(guest_mac) = self.guest_mac else {
            return false;
        };
        if self.phy.to_guest.len() >= MAX_QUEUED_TO_GUEST {
            return false;
        }
        if data.len() + 28 > usize::from(self.config.mtu) {
            tracing::debug!(
                len = data.len(),
                "user-net: UDP reply larger than the MTU dropped"
            );
            return true;
        }
        let frame = udp_frame(
            EthernetAddress(GATEWAY_MAC),
            guest_mac,
            key.dst,
            SocketAddrV4::new(self.guest, key.guest_port),
            data,
        );
        self.phy.to_guest.push_back(frame);
        true
    }

    fn pump_udp(&mut self) -> bool {
        let mut progress = false;
        let tokens: Vec<Token> = self.udp.keys().copied().collect();
        for token in tokens {
            for _ in 0..UDP_READS_PER_POLL {
                let Some(flow) = self.udp.get_mut(&token) else {
                    break;
                };
                if !flow.readable {
                    break;
                }
                let key = flow.key;
                match flow.socket.recv(&mut self.scratch) {
                    Ok(n) => {
                        flow.last_used = Instant::now();
                        let data = self.scratch[..n].to_vec();
                        if !self.udp_to_guest(key, &data) {
                            break;
                        }
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => flow.readable = false,
                    Err(e) => {
                        // An ICMP error of an earlier datagram (ECONNREFUSED): keep going.
                        tracing::debug!(dst = %key.dst, "user-net: UDP receive: {e}");
                    }
                }
            }
        }
        let expired: Vec<Token> = self
            .udp
            .iter()
            .filter(|(_, f)| f.last_used.elapsed() > f.idle)
            .map(|(t, _)| *t)
            .collect();
        for token in expired {
            self.close_udp(token);
        }
        progress
    }
}

/// Takes the next of the backend's registration tokens.
fn next_token(next: &mut usize) -> Token {
    let t = Token(*next);
    *next = next.wrapping_add(1).max(BACKEND_TOKEN_BASE);
    t
}

/// An ARP reply to the guest at `guest` (`guest_mac`): `ip` is at the gateway's MAC.
fn arp_reply(guest_mac: EthernetAddress, guest: Ipv4Addr, ip: Ipv4Addr) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(GATEWAY_MAC),
        source_protocol_addr: ip,
        target_hardware_addr: guest_mac,
        target_protocol_addr: guest,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(GATEWAY_MAC),
        dst_addr: guest_mac,
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0; eth.buffer_len() + arp.buffer_len()];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    buf
}

/// Builds an Ethernet + IPv4 + UDP frame.
pub fn udp_frame(
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    data: &[u8],
) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    let udp = UdpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
    };
    let ip = Ipv4Repr {
        src_addr: *src.ip(),
        dst_addr: *dst.ip(),
        next_header: IpProtocol::Udp,
        payload_len: udp.header_len() + data.len(),
        hop_limit: 64,
    };
    let eth = EthernetRepr {
        src_addr: src_mac,
        dst_addr: dst_mac,
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0; eth.buffer_len() + ip.buffer_len() + ip.payload_len];
    let mut frame = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut frame);
    let mut packet = Ipv4Packet::new_unchecked(frame.payload_mut());
    ip.emit(&mut packet, &caps);
    let mut u = UdpPacket::new_unchecked(packet.payload_mut());
    udp.emit(
        &mut u,
        &IpAddress::Ipv4(ip.src_addr),
        &IpAddress::Ipv4(ip.dst_addr),
        data.len(),
        |p| p.copy_from_slice(data),
        &caps,
    );
    buf
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

impl NetBackend for UserNet {
    fn attach(&mut self, registry: Registry) -> io::Result<()> {
        for i in 0..self.listeners.len() {
            let token = self.token();
            let l = &mut self.listeners[i];
            registry.register(&mut l.listener, token, Interest::READABLE)?;
            l.token = Some(token);
            // Clients may have queued up before the VM ran.
            l.readable = true;
        }
        for i in 0..self.udp_listeners.len() {
            let token = self.token();
            let l = &mut self.udp_listeners[i];
            registry.register(&mut l.socket, token, Interest::READABLE)?;
            l.token = Some(token);
            l.readable = true;
        }
        if self.peers.is_some() {
            let (listener, datagrams) = (self.token(), self.token());
            if let Some(p) = &mut self.peers {
                p.attach(&registry, listener, datagrams)?;
            }
        }
        self.registry = Some(registry);
        Ok(())
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), NetBackendError> {
        let max = usize::from(self.config.mtu) + 14;
        if frame.len() > max {
            self.counters.dropped += 1;
            return Err(NetBackendError::TooLarge {
                len: frame.len(),
                max,
            });
        }
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.drop_frame("short Ethernet frame");
            return Ok(());
        };
        let src_mac = eth.src_addr();
        if !src_mac.is_unicast() {
            self.drop_frame("multicast source MAC");
            return Ok(());
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => {
                let repr = ArpPacket::new_checked(eth.payload())
                    .ok()
                    .and_then(|p| ArpRepr::parse(&p).ok());
                let Some(ArpRepr::EthernetIpv4 {
                    operation,
                    source_protocol_addr: s,
                    target_protocol_addr: t,
                    ..
                }) = repr
                else {
                    self.drop_frame("not an Ethernet/IPv4 ARP packet");
                    return Ok(());
                };
                if s != self.guest {
                    self.drop_frame("ARP not from the guest's address");
                    return Ok(());
                }
                if t == self.gateway || t == self.host {
                    self.guest_mac = Some(src_mac);
                    return self.queue_for_stack(frame);
                }
                if self.peers.is_none() || !self.config.peer_range().contains(t) {
                    self.drop_frame("ARP not about the gateway or a peer");
                    return Ok(());
                }
                self.guest_mac = Some(src_mac);
                match operation {
                    // Every peer is behind the gateway: answer for it (proxy ARP).
                    ArpOperation::Request => {
                        if self.phy.to_guest.len() >= MAX_QUEUED_TO_GUEST {
                            return Err(NetBackendError::Full);
                        }
                        self.phy
                            .to_guest
                            .push_back(arp_reply(src_mac, self.guest, t));
                        Ok(())
                    }
                    // The guest answering the stack, which asked from a peer's address.
                    _ => self.queue_for_stack(frame),
                }
            }
            EthernetProtocol::Ipv4 => {
                let Ok(packet) = Ipv4Packet::new_checked(eth.payload()) else {
                    self.drop_frame("short IPv4 header");
                    return Ok(());
                };
                let Ok(ip) = Ipv4Repr::parse(&packet, &ChecksumCapabilities::default()) else {
                    self.drop_frame("bad IPv4 header");
                    return Ok(());
                };
                if ip.src_addr != self.guest {
                    self.drop_frame("IPv4 source is not the guest's address");
                    return Ok(());
                }
                if packet.more_frags() || packet.frag_offset() != 0 {
                    self.drop_frame("IPv4 fragment");
                    return Ok(());
                }
                self.guest_mac = Some(src_mac);
                match ip.next_header {
                    IpProtocol::Udp => {
                        let payload = packet.payload().to_vec();
                        self.handle_udp(&ip, &payload);
                        Ok(())
                    }
                    IpProtocol::Tcp => {
                        let Ok(tcp) = TcpPacket::new_checked(packet.payload()) else {
                            self.drop_frame("short TCP header");
                            return Ok(());
                        };
                        let key = FlowKey {
                            guest_port: tcp.src_port(),
                            dst: SocketAddrV4::new(ip.dst_addr, tcp.dst_port()),
                        };
                        let new_syn = tcp.syn() && !tcp.ack() && !self.tcp_keys.contains_key(&key);
                        if new_syn {
                            self.open_tcp(key);
                        }
                        self.queue_for_stack(frame)?;
                        if new_syn {
                            // Let the new socket take this SYN before another SYN to the
                            // same destination can reach it.
                            self.poll_stack();
                        }
                        Ok(())
                    }
                    IpProtocol::Icmp if ip.dst_addr == self.gateway || ip.dst_addr == self.host => {
                        self.queue_for_stack(frame)
                    }
                    _ => {
                        self.drop_frame("protocol not relayed");
                        Ok(())
                    }
                }
            }
            _ => {
                self.drop_frame("not IPv4 or ARP");
                Ok(())
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NetBackendError> {
        let Some(frame) = self.phy.to_guest.pop_front() else {
            return Ok(None);
        };
        let Some(dst) = buf.get_mut(..frame.len()) else {
            return Err(NetBackendError::TooLarge {
                len: frame.len(),
                max: buf.len(),
            });
        };
        dst.copy_from_slice(&frame);
        Ok(Some(frame.len()))
    }

    fn ready(&mut self, token: Token, readiness: Readiness) {
        if let Some(flow) = self.tcp.get_mut(&token) {
            flow.readable |= readiness.readable;
            flow.writable |= readiness.writable;
        } else if let Some(flow) = self.udp.get_mut(&token) {
            flow.readable |= readiness.readable;
        } else if let Some(l) = self.listeners.iter_mut().find(|l| l.token == Some(token)) {
            l.readable |= readiness.readable;
        } else if let Some(l) = self
            .udp_listeners
            .iter_mut()
            .find(|l| l.token == Some(token))
        {
            l.readable |= readiness.readable;
        } else if let Some(p) = &mut self.peers {
            p.ready(token, readiness.readable);
        }
    }

    fn poll(&mut self) -> Option<Duration> {
        for _ in 0..ROUNDS_PER_POLL {
            let inbound = self.accept_inbound() | self.accept_peers();
            let stack = self.poll_stack();
            let tcp = self.pump_tcp() | inbound;
            let udp = self.pump_udp() | self.pump_peer_datagrams() | self.pump_udp_listeners();
            if !stack && !tcp && !udp {
                break;
            }
        }
        self.poll_stack();
        self.sweep_tcp();
        let now = self.now();
        let stack = self
            .iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()));
        let housekeeping = if self.peers.as_ref().is_some_and(Peers::waiting) {
            // Streams from peers wait for their headers.
            Some(Duration::from_millis(50))
        } else {
            (!self.tcp.is_empty() || !self.udp.is_empty() || !self.udp_published.is_empty())
                .then_some(Duration::from_secs(1))
        };
        match (stack, housekeeping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

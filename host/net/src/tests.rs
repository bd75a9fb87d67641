//! The backend driven by hand-built guest frames (smoltcp's wire module), against real
//! servers on the host's 127.0.0.1 that each test starts.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use mio::{Events, Poll};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket,
};

use super::*;
use crate::stack::udp_frame;

const GUEST_MAC: EthernetAddress = EthernetAddress([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
const GW_MAC: EthernetAddress = EthernetAddress(GATEWAY_MAC);
const WAIT: Duration = Duration::from_secs(5);

fn config() -> UserNetConfig {
    let mut c = UserNetConfig {
        dns_upstream: Vec::new(),
        ..UserNetConfig::default()
    };
    c.hosts
        .push(("db".into(), Ipv4Addr::new(192, 168, 249, 77)));
    c
}

struct Rig {
    poll: Poll,
    events: Events,
    net: UserNet,
    cfg: UserNetConfig,
}

impl Rig {
    fn new(cfg: UserNetConfig) -> Rig {
        let poll = Poll::new().unwrap();
        let mut net = UserNet::new(cfg.clone()).unwrap();
        net.attach(poll.registry().try_clone().unwrap()).unwrap();
        Rig {
            poll,
            events: Events::with_capacity(64),
            net,
            cfg,
        }
    }

    fn guest(&self) -> Ipv4Addr {
        self.cfg.guest_addr()
    }

    fn send(&mut self, frame: &[u8]) {
        let _ = self.net.send(frame);
    }

    /// One round of the device loop; returns the frames for the guest.
    fn step(&mut self) -> Vec<Vec<u8>> {
        self.poll
            .poll(&mut self.events, Some(Duration::from_millis(5)))
            .unwrap();
        for e in self.events.iter() {
            self.net.ready(
                e.token(),
                Readiness {
                    readable: e.is_readable() || e.is_read_closed() || e.is_error(),
                    writable: e.is_writable() || e.is_write_closed(),
                },
            );
        }
        self.net.poll();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70_000];
        while let Ok(Some(n)) = self.net.recv(&mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    /// Runs the loop until `pick` accepts a frame (or the deadline passes).
    fn wait_for<T>(&mut self, mut pick: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            for f in self.step() {
                if let Some(t) = pick(&f) {
                    return Some(t);
                }
            }
        }
        None
    }
}

fn eth(dst: EthernetAddress, ethertype: EthernetProtocol, payload_len: usize) -> (Vec<u8>, usize) {
    let repr = EthernetRepr {
        src_addr: GUEST_MAC,
        dst_addr: dst,
        ethertype,
    };
    let mut buf = vec![0; repr.buffer_len() + payload_len];
    repr.emit(&mut EthernetFrame::new_unchecked(&mut buf[..]));
    (buf, repr.buffer_len())
}

fn arp_request(guest: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: GUEST_MAC,
        source_protocol_addr: guest,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let (mut buf, off) = eth(
        EthernetAddress::BROADCAST,
        EthernetProtocol::Arp,
        repr.buffer_len(),
    );
    repr.emit(&mut ArpPacket::new_unchecked(&mut buf[off..]));
    buf
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, payload_len: usize) -> (Vec<u8>, usize) {
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len,
        hop_limit: 64,
    };
    let (mut buf, off) = eth(
        GW_MAC,
        EthernetProtocol::Ipv4,
        ip.buffer_len() + payload_len,
    );
    ip.emit(
        &mut Ipv4Packet::new_unchecked(&mut buf[off..]),
        &Default::default(),
    );
    (buf, off + ip.buffer_len())
}

#[allow(clippy::too_many_arguments)]
fn tcp_frame(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    control: TcpControl,
    seq: i32,
    ack: Option<i32>,
    payload: &[u8],
) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: src.port(),
        dst_port: dst.port(),
        control,
        seq_number: TcpSeqNumber(seq),
        ack_number: ack.map(TcpSeqNumber),
        window_len: 65535,
        window_scale: (control == TcpControl::Syn).then_some(7),
        max_seg_size: (control == TcpControl::Syn).then_some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let (mut buf, off) = ipv4(*src.ip(), *dst.ip(), IpProtocol::Tcp, repr.buffer_len());
    repr.emit(
        &mut TcpPacket::new_unchecked(&mut buf[off..]),
        &IpAddress::Ipv4(*src.ip()),
        &IpAddress::Ipv4(*dst.ip()),
        &Default::default(),
    );
    buf
}

/// A TCP segment for the guest: (src, dst, flags syn/ack/fin/rst, seq, ack, payload).
struct Seg {
    src: SocketAddrV4,
    dst: SocketAddrV4,
    syn: bool,
    ack: bool,
    fin: bool,
    rst: bool,
    seq: i32,
    ack_no: i32,
    payload: Vec<u8>,
}

fn parse_tcp(frame: &[u8]) -> Option<Seg> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    assert_eq!(eth.dst_addr(), GUEST_MAC, "frames go to the guest's MAC");
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let t = TcpPacket::new_checked(ip.payload()).ok()?;
    Some(Seg {
        src: SocketAddrV4::new(ip.src_addr(), t.src_port()),
        dst: SocketAddrV4::new(ip.dst_addr(), t.dst_port()),
        syn: t.syn(),
        ack: t.ack(),
        fin: t.fin(),
        rst: t.rst(),
        seq: t.seq_number().0,
        ack_no: t.ack_number().0,
        payload: t.payload().to_vec(),
    })
}

fn parse_udp(frame: &[u8]) -> Option<(SocketAddrV4, SocketAddrV4, Vec<u8>)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Udp {
        return None;
    }
    let u = UdpPacket::new_checked(ip.payload()).ok()?;
    Some((
        SocketAddrV4::new(ip.src_addr(), u.src_port()),
        SocketAddrV4::new(ip.dst_addr(), u.dst_port()),
        u.payload().to_vec(),
    ))
}

fn guest_udp(r: &Rig, sport: u16, dst: SocketAddrV4, data: &[u8]) -> Vec<u8> {
    udp_frame(
        GUEST_MAC,
        GW_MAC,
        SocketAddrV4::new(r.guest(), sport),
        dst,
        data,
    )
}

/// A loopback TCP server that answers each line with "echo: LINE".
fn line_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { break };
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    let Ok(line) = line else { break };
                    if w.write_all(format!("echo: {line}\n").as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn arp_for_the_gateway_and_host_is_answered_and_nothing_else() {
    let mut r = Rig::new(config());
    let guest = r.guest();
    // The guest's learned MAC comes from this request.
    r.send(&arp_request(guest, r.cfg.gateway()));
    let reply = r
        .wait_for(|f| {
            let e = EthernetFrame::new_checked(f).ok()?;
            let p = ArpPacket::new_checked(e.payload()).ok()?;
            ArpRepr::parse(&p).ok()
        })
        .expect("an ARP reply");
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = reply
    else {
        panic!("not an IPv4 ARP reply")
    };
    assert_eq!(operation, ArpOperation::Reply);
    assert_eq!(source_hardware_addr, GW_MAC);
    assert_eq!(source_protocol_addr, r.cfg.gateway());
    assert_eq!(target_protocol_addr, guest);
    r.send(&arp_request(guest, r.cfg.host_addr()));
    assert!(
        r.wait_for(|f| (f.len() >= 42).then_some(())).is_some(),
        "host address answered"
    );
    // Not for the guest's own address or a neighbour.
    r.send(&arp_request(guest, guest));
    r.send(&arp_request(guest, Ipv4Addr::new(192, 168, 249, 9)));
    for _ in 0..20 {
        assert!(r.step().is_empty());
    }
}

#[test]
fn icmp_echo_to_the_gateway_is_answered() {
    let mut r = Rig::new(config());
    let data = b"ping-data";
    let icmp = Icmpv4Repr::EchoRequest {
        ident: 7,
        seq_no: 1,
        data,
    };
    let (mut buf, off) = ipv4(
        r.guest(),
        r.cfg.gateway(),
        IpProtocol::Icmp,
        icmp.buffer_len(),
    );
    icmp.emit(
        &mut Icmpv4Packet::new_unchecked(&mut buf[off..]),
        &Default::default(),
    );
    r.send(&arp_request(r.guest(), r.cfg.gateway()));
    r.send(&buf);
    let got = r.wait_for(|f| {
        let e = EthernetFrame::new_checked(f).ok()?;
        let ip = Ipv4Packet::new_checked(e.payload()).ok()?;
        let p = Icmpv4Packet::new_checked(ip.payload()).ok()?;
        match Icmpv4Repr::parse(&p, &Default::default()).ok()? {
            Icmpv4Repr::EchoReply { ident, data, .. } => Some((ident, data.to_vec())),
            _ => None,
        }
    });
    assert_eq!(got, Some((7, data.to_vec())));
}

#[test]
fn udp_round_trip_through_nat_to_a_loopback_server() {
    let server = StdUdp::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    server.set_read_timeout(Some(WAIT)).unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(&[b"re:", &buf[..n]].concat(), from).unwrap();
    });
    let mut r = Rig::new(config());
    let dst = SocketAddrV4::new(r.cfg.host_addr(), port);
    let f = guest_udp(&r, 40000, dst, b"hello-udp");
    r.send(&f);
    let (src, to, data) = r.wait_for(parse_udp).expect("a UDP reply");
    echo.join().unwrap();
    assert_eq!(src, dst, "the reply comes from the address the guest used");
    assert_eq!(to, SocketAddrV4::new(r.guest(), 40000));
    assert_eq!(data, b"re:hello-udp");
    assert_eq!(r.net.udp_flows(), 1);
}

#[test]
fn dns_queries_for_static_names_are_answered_by_the_gateway() {
    let mut r = Rig::new(config());
    let dns_addr = SocketAddrV4::new(r.cfg.gateway(), 53);
    for (name, want) in [
        ("host.docker.internal", r.cfg.host_addr()),
        ("DB.", Ipv4Addr::new(192, 168, 249, 77)),
    ] {
        let q = dns::build_query(0xbeef, name, 1);
        let f = guest_udp(&r, 5353, dns_addr, &q);
        r.send(&f);
        let (src, _, answer) = r.wait_for(parse_udp).expect("a DNS answer");
        assert_eq!(src, dns_addr);
        assert_eq!(&answer[..2], &[0xbe, 0xef]);
        assert_eq!(&answer[answer.len() - 4..], &want.octets());
    }
    assert_eq!(r.net.counters().dns_static, 2);
    // Not in the table and no upstream: nothing comes back, nothing is opened.
    let f = guest_udp(&r, 5353, dns_addr, &dns::build_query(1, "example.com", 1));
    r.send(&f);
    for _ in 0..10 {
        assert!(r.step().is_empty());
    }
    assert_eq!(r.net.udp_flows(), 0);
}

#[test]
fn dns_queries_for_other_names_go_to_the_upstream_resolver() {
    let upstream = StdUdp::bind("127.0.0.1:0").unwrap();
    upstream.set_read_timeout(Some(WAIT)).unwrap();
    let mut cfg = config();
    cfg.dns_upstream = vec![upstream.local_addr().unwrap()];
    let fake = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (n, from) = upstream.recv_from(&mut buf).unwrap();
        let mut reply = buf[..n].to_vec();
        reply[2] |= 0x80;
        upstream.send_to(&reply, from).unwrap();
        n
    });
    let mut r = Rig::new(cfg);
    let dns_addr = SocketAddrV4::new(r.cfg.gateway(), 53);
    let q = dns::build_query(0x4242, "example.com", 1);
    let f = guest_udp(&r, 3000, dns_addr, &q);
    r.send(&f);
    let (src, _, answer) = r.wait_for(parse_udp).expect("the forwarded answer");
    assert_eq!(fake.join().unwrap(), q.len());
    assert_eq!(src, dns_addr, "the answer comes from the gateway");
    assert_eq!(&answer[..2], &[0x42, 0x42]);
}

/// Opens a TCP connection from guest port `sport` to `dst`; returns (our next seq, the
/// peer's next seq) after the handshake, or `None` if it was refused.
fn handshake(r: &mut Rig, sport: u16, dst: SocketAddrV4) -> Option<(i32, i32)> {
    let me = SocketAddrV4::new(r.guest(), sport);
    // The gateway learns the guest's MAC from its ARP request, as on a real link.
    r.send(&arp_request(r.guest(), r.cfg.gateway()));
    r.send(&tcp_frame(me, dst, TcpControl::Syn, 1000, None, &[]));
    let synack = r
        .wait_for(|f| parse_tcp(f).filter(|s| s.dst == me))
        .expect("an answer to the SYN");
    if synack.rst {
        return None;
    }
    assert!(synack.syn && synack.ack, "SYN-ACK");
    assert_eq!(synack.src, dst, "from the address the guest dialled");
    assert_eq!(synack.ack_no, 1001);
    let peer = synack.seq.wrapping_add(1);
    r.send(&tcp_frame(me, dst, TcpControl::None, 1001, Some(peer), &[]));
    Some((1001, peer))
}

/// Runs the loop until the in-order TCP payload for the guest, from sequence number
/// `next`, ends with a newline; `ack` is called with the next expected sequence number
/// after each segment. Returns the bytes and that number.
fn read_line_to_guest(
    r: &mut Rig,
    mut next: i32,
    mut ack: impl FnMut(&mut Rig, i32),
) -> (Vec<u8>, i32) {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !got.ends_with(b"\n") && Instant::now() < deadline {
        for f in r.step() {
            if let Some(s) = parse_tcp(&f).filter(|s| !s.payload.is_empty() && s.seq == next) {
                next = next.wrapping_add(s.payload.len() as i32);
                got.extend_from_slice(&s.payload);
                ack(r, next);
            }
        }
    }
    (got, next)
}

#[test]
fn tcp_handshake_and_data_through_nat_to_a_loopback_server() {
    let port = line_server();
    let mut r = Rig::new(config());
    r.send(&arp_request(r.guest(), r.cfg.gateway()));
    let dst = SocketAddrV4::new(r.cfg.host_addr(), port);
    let me = SocketAddrV4::new(r.guest(), 41000);
    let (seq, peer) = handshake(&mut r, 41000, dst).expect("connected");
    assert_eq!(r.net.tcp_connections(), 1);
    r.send(&tcp_frame(
        me,
        dst,
        TcpControl::Psh,
        seq,
        Some(peer),
        b"hello tcp\n",
    ));
    let (got, next) = read_line_to_guest(&mut r, peer, |r, next| {
        r.send(&tcp_frame(
            me,
            dst,
            TcpControl::None,
            seq + 10,
            Some(next),
            &[],
        ))
    });
    assert_eq!(String::from_utf8_lossy(&got), "echo: hello tcp\n");
    // The guest closes; the host side closes; the flow goes away.
    r.send(&tcp_frame(
        me,
        dst,
        TcpControl::Fin,
        seq + 10,
        Some(next),
        &[],
    ));
    let fin = r.wait_for(|f| parse_tcp(f).filter(|s| s.fin));
    let fin = fin.expect("the host's FIN after the guest's");
    r.send(&tcp_frame(
        me,
        dst,
        TcpControl::None,
        seq + 11,
        Some(fin.seq + 1),
        &[],
    ));
    let deadline = Instant::now() + WAIT;
    while r.net.tcp_connections() > 0 && Instant::now() < deadline {
        r.step();
    }
    assert_eq!(r.net.tcp_connections(), 0, "closed flows are forgotten");
}

#[test]
fn tcp_to_a_closed_port_is_reset() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let mut r = Rig::new(config());
    let dst = SocketAddrV4::new(r.cfg.host_addr(), port);
    let me = SocketAddrV4::new(r.guest(), 42000);
    r.send(&arp_request(r.guest(), r.cfg.gateway()));
    r.send(&tcp_frame(me, dst, TcpControl::Syn, 1, None, &[]));
    let rst = r.wait_for(|f| parse_tcp(f).filter(|s| s.rst));
    assert!(rst.is_some(), "a refused host connect resets the guest");
    let deadline = Instant::now() + WAIT;
    while r.net.tcp_connections() > 0 && Instant::now() < deadline {
        r.step();
    }
    assert_eq!(r.net.tcp_connections(), 0);
}

#[test]
fn the_tcp_connection_cap_is_enforced() {
    let port = line_server();
    let mut cfg = config();
    cfg.max_tcp = 2;
    let mut r = Rig::new(cfg);
    let dst = SocketAddrV4::new(r.cfg.gateway(), port);
    assert!(handshake(&mut r, 50001, dst).is_some());
    assert!(handshake(&mut r, 50002, dst).is_some());
    assert_eq!(handshake(&mut r, 50003, dst), None, "the third is reset");
    assert_eq!(r.net.tcp_connections(), 2);
    assert_eq!(r.net.counters().tcp_refused, 1);
}

#[test]
fn the_udp_flow_cap_recycles_the_oldest_flow() {
    let server = StdUdp::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let mut cfg = config();
    cfg.max_udp = 2;
    let mut r = Rig::new(cfg);
    let dst = SocketAddrV4::new(r.cfg.host_addr(), port);
    for sport in 1..=3u16 {
        let f = guest_udp(&r, 6000 + sport, dst, b"x");
        r.send(&f);
        r.step();
        assert!(r.net.udp_flows() <= 2);
    }
    assert_eq!(r.net.udp_flows(), 2);
    assert_eq!(r.net.counters().udp_evicted, 1);
    // All three datagrams reached the server.
    server.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..3 {
        server.recv_from(&mut buf).unwrap();
    }
}

#[test]
fn oversized_spoofed_and_random_frames_are_ignored_without_panic() {
    let mut r = Rig::new(config());
    let big = vec![0u8; usize::from(r.cfg.mtu) + 15];
    assert!(matches!(
        r.net.send(&big),
        Err(NetBackendError::TooLarge { .. })
    ));
    // A spoofed source address opens nothing.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let dst = SocketAddrV4::new(r.cfg.host_addr(), l.local_addr().unwrap().port());
    let spoof = SocketAddrV4::new(Ipv4Addr::new(192, 168, 249, 3), 1234);
    r.send(&tcp_frame(spoof, dst, TcpControl::Syn, 1, None, &[]));
    r.step();
    assert_eq!(r.net.tcp_connections(), 0);
    let good = [
        arp_request(r.guest(), r.cfg.gateway()),
        tcp_frame(
            SocketAddrV4::new(r.guest(), 7),
            dst,
            TcpControl::Syn,
            5,
            None,
            &[],
        ),
        guest_udp(
            &r,
            9,
            SocketAddrV4::new(r.cfg.gateway(), 53),
            &dns::build_query(3, "db", 1),
        ),
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let started = Instant::now();
    for i in 0..3000 {
        let frame: Vec<u8> = if i % 2 == 0 {
            let len = (rand() % 1600) as usize;
            (0..len).map(|_| rand() as u8).collect()
        } else {
            // A valid frame with a few bytes flipped and maybe truncated.
            let mut f = good[(rand() % 3) as usize].clone();
            for _ in 0..(rand() % 4 + 1) {
                let at = (rand() as usize) % f.len();
                f[at] ^= rand() as u8;
            }
            f.truncate((rand() as usize) % (f.len() + 1));
            f
        };
        let _ = r.net.send(&frame);
        if i % 100 == 0 {
            r.step();
        }
    }
    r.step();
    assert!(r.net.tcp_connections() <= r.cfg.max_tcp);
    assert!(r.net.udp_flows() <= r.cfg.max_udp);
    assert!(r.net.counters().dropped > 0);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn the_layout_and_its_checks() {
    let c = UserNetConfig::default();
    assert_eq!(c.gateway(), Ipv4Addr::new(192, 168, 249, 1));
    assert_eq!(c.guest_addr(), Ipv4Addr::new(192, 168, 249, 2));
    assert_eq!(c.host_addr(), Ipv4Addr::new(192, 168, 249, 254));
    assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
    assert!(c
        .hosts
        .iter()
        .any(|(n, a)| n == "host.docker.internal" && *a == c.host_addr()));
    c.validate().unwrap();
    let bad = |f: fn(&mut UserNetConfig)| {
        let mut c = config();
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert!(matches!(
        bad(|c| c.subnet = Ipv4Addr::new(8, 8, 8, 0)),
        UserNetError::Subnet { .. }
    ));
    assert!(matches!(
        bad(|c| c.subnet = Ipv4Addr::new(10, 0, 0, 5)),
        UserNetError::Subnet { .. }
    ));
    assert!(matches!(
        bad(|c| c.prefix = 30),
        UserNetError::Subnet { .. }
    ));
    assert!(matches!(bad(|c| c.mtu = 100), UserNetError::Mtu(100)));
    assert!(matches!(bad(|c| c.max_tcp = 0), UserNetError::Cap { .. }));
    assert!(matches!(
        bad(|c| c.tcp_buffer = 1 << 30),
        UserNetError::Cap { .. }
    ));
    assert!(matches!(
        bad(|c| c.hosts.push(("bad name".into(), Ipv4Addr::LOCALHOST))),
        UserNetError::HostName(_)
    ));
    assert!(matches!(
        bad(|c| c.hosts = (0..=MAX_STATIC_HOSTS)
            .map(|i| (format!("h{i}"), Ipv4Addr::LOCALHOST))
            .collect()),
        UserNetError::TooManyHosts { .. }
    ));
    let mut small = config();
    small.subnet = Ipv4Addr::new(10, 1, 2, 0);
    small.prefix = 28;
    small.validate().unwrap();
    assert_eq!(small.host_addr(), Ipv4Addr::new(10, 1, 2, 14));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_published_port_connects_host_clients_into_the_guest() {
    let port = free_port();
    let mut cfg = config();
    cfg.forwards.push(PortForward {
        host: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        guest_port: 80,
        transport: Transport::Tcp,
    });
    let mut r = Rig::new(cfg);
    assert_eq!(r.net.published()[0].port(), port);
    // The guest has spoken (and the gateway knows its MAC), as a booted guest has.
    r.send(&arp_request(r.guest(), r.cfg.gateway()));
    r.step();
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    client.write_all(b"GET /\n").unwrap();
    let syn = r
        .wait_for(|f| parse_tcp(f).filter(|s| s.syn))
        .expect("a SYN towards the guest");
    assert!(!syn.ack);
    let guest = SocketAddrV4::new(r.guest(), 80);
    assert_eq!(syn.dst, guest, "to the guest's published port");
    assert_eq!(*syn.src.ip(), r.cfg.gateway(), "from the gateway");
    assert_eq!(r.net.counters().tcp_inbound, 1);
    let gw = syn.src;
    // The guest's server accepts.
    r.send(&tcp_frame(
        guest,
        gw,
        TcpControl::Syn,
        5000,
        Some(syn.seq.wrapping_add(1)),
        &[],
    ));
    let (got, next) = read_line_to_guest(&mut r, syn.seq.wrapping_add(1), |_, _| {});
    assert_eq!(got, b"GET /\n", "the client's bytes reach the guest");
    r.send(&tcp_frame(
        guest,
        gw,
        TcpControl::Psh,
        5001,
        Some(next),
        b"200 OK\n",
    ));
    // The guest resets the connection after answering: the host client sees the answer,
    // then the end, and the flow is forgotten.
    for _ in 0..20 {
        r.step();
    }
    r.send(&tcp_frame(guest, gw, TcpControl::Rst, 5008, None, &[]));
    let deadline = Instant::now() + WAIT;
    while r.net.tcp_connections() > 0 && Instant::now() < deadline {
        r.step();
    }
    assert_eq!(r.net.tcp_connections(), 0, "a reset flow is forgotten");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut client, &mut answer);
    assert_eq!(answer, b"200 OK\n");
}

#[test]
fn a_host_port_in_use_fails_the_gateway_and_names_the_port() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut cfg = config();
    cfg.forwards.push(PortForward {
        host: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        guest_port: 80,
        transport: Transport::Tcp,
    });
    let e = UserNet::new(cfg).unwrap_err();
    assert!(matches!(e, UserNetError::Listen { .. }), "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn published_ports_are_checked() {
    let fwd = |host: u16, guest_port: u16| PortForward {
        host: SocketAddr::from((Ipv4Addr::LOCALHOST, host)),
        guest_port,
        transport: Transport::Tcp,
    };
    let mut c = config();
    c.forwards = vec![fwd(8080, 80), fwd(8081, 80)];
    c.validate().unwrap();
    c.forwards = vec![fwd(8080, 80), fwd(8080, 81)];
    assert!(matches!(c.validate(), Err(UserNetError::ForwardTwice(_))));
    c.forwards = vec![fwd(0, 80)];
    assert!(matches!(c.validate(), Err(UserNetError::ForwardPort(_))));
    c.forwards = vec![fwd(8080, 0)];
    assert!(matches!(c.validate(), Err(UserNetError::ForwardPort(_))));
    c.forwards = (1..=MAX_FORWARDS as u16 + 1).map(|p| fwd(p, 80)).collect();
    assert!(matches!(
        c.validate(),
        Err(UserNetError::TooManyForwards { .. })
    ));
}

#[cfg(unix)]
fn peer_config(dir: &std::path::Path, last: u8) -> UserNetConfig {
    let mut c = config();
    c.guest = Some(Ipv4Addr::new(192, 168, 249, last));
    c.peers = Some(dir.to_path_buf());
    c
}

#[cfg(unix)]
#[test]
fn peers_on_one_network_reach_each_other_by_address_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let names = peers::names_dir(dir.path());
    std::fs::create_dir(&names).unwrap();
    std::os::unix::fs::symlink("192.168.249.3", names.join("store")).unwrap();
    let mut a = Rig::new(peer_config(dir.path(), 2));
    let mut b = Rig::new(peer_config(dir.path(), 3));
    let (a_ip, b_ip) = (a.guest(), b.guest());
    assert!(
        matches!(
            UserNet::new(peer_config(dir.path(), 3)),
            Err(UserNetError::Peers { .. })
        ),
        "one address, one VM"
    );
    // B's guest has spoken, as a booted guest has.
    b.send(&arp_request(b_ip, b.cfg.gateway()));
    b.step();

    // A peer's address is answered by the gateway (proxy ARP).
    a.send(&arp_request(a_ip, b_ip));
    let reply = a
        .wait_for(|f| {
            let e = EthernetFrame::new_checked(f).ok()?;
            ArpRepr::parse(&ArpPacket::new_checked(e.payload()).ok()?).ok()
        })
        .expect("an ARP reply for the peer");
    assert!(matches!(
        reply,
        ArpRepr::EthernetIpv4 { operation: ArpOperation::Reply, source_hardware_addr, source_protocol_addr, .. }
            if source_hardware_addr == GW_MAC && source_protocol_addr == b_ip
    ));

    // The gateway's DNS names the peer from the network's links.
    let dns_addr = SocketAddrV4::new(a.cfg.gateway(), 53);
    let q = guest_udp(&a, 5353, dns_addr, &dns::build_query(7, "store", 1));
    a.send(&q);
    let (_, _, answer) = a.wait_for(parse_udp).expect("a DNS answer");
    assert_eq!(&answer[answer.len() - 4..], &b_ip.octets());

    // TCP from A's guest reaches B's guest from A's own address and port.
    let server = SocketAddrV4::new(b_ip, 80);
    let me = SocketAddrV4::new(a_ip, 42000);
    let (seq, peer_seq) = handshake(&mut a, 42000, server).expect("connected to the peer");
    a.send(&tcp_frame(
        me,
        server,
        TcpControl::Psh,
        seq,
        Some(peer_seq),
        b"ping\n",
    ));
    a.step();
    let syn = b
        .wait_for(|f| parse_tcp(f).filter(|s| s.syn))
        .expect("a SYN in B's guest");
    assert_eq!((syn.src, syn.dst), (me, server), "from A's guest itself");
    b.send(&tcp_frame(
        server,
        me,
        TcpControl::Syn,
        9000,
        Some(syn.seq.wrapping_add(1)),
        &[],
    ));
    let (got, next) = read_line_to_guest(&mut b, syn.seq.wrapping_add(1), |_, _| {});
    assert_eq!(got, b"ping\n");
    b.send(&tcp_frame(
        server,
        me,
        TcpControl::Psh,
        9001,
        Some(next),
        b"pong\n",
    ));
    for _ in 0..20 {
        b.step();
    }
    let (got, _) = read_line_to_guest(&mut a, peer_seq, |r, n| {
        r.send(&tcp_frame(
            me,
            server,
            TcpControl::None,
            seq + 5,
            Some(n),
            &[],
        ))
    });
    assert_eq!(got, b"pong\n", "and back");

    // UDP both ways, from the guests' own addresses.
    a.send(&guest_udp(
        &a,
        6000,
        SocketAddrV4::new(b_ip, 5300),
        b"u-ping",
    ));
    a.step();
    let (src, dst, data) = b.wait_for(parse_udp).expect("a datagram in B");
    assert_eq!(
        (src, dst, data.as_slice()),
        (
            SocketAddrV4::new(a_ip, 6000),
            SocketAddrV4::new(b_ip, 5300),
            &b"u-ping"[..]
        )
    );
    b.send(&guest_udp(
        &b,
        5300,
        SocketAddrV4::new(a_ip, 6000),
        b"u-pong",
    ));
    b.step();
    let (src, _, data) = a.wait_for(parse_udp).expect("a datagram back in A");
    assert_eq!(
        (src, data.as_slice()),
        (SocketAddrV4::new(b_ip, 5300), &b"u-pong"[..])
    );
    assert_eq!(
        a.net.udp_flows() + b.net.udp_flows(),
        0,
        "peers' UDP keeps no flows"
    );

    // An address no VM has is refused; a stream without a header is closed.
    assert!(handshake(
        &mut a,
        42001,
        SocketAddrV4::new(Ipv4Addr::new(192, 168, 249, 9), 80)
    )
    .is_none());
    let mut junk =
        std::os::unix::net::UnixStream::connect(peers::stream_path(dir.path(), a_ip)).unwrap();
    junk.write_all(b"not a header").unwrap();
    let before = a.net.tcp_connections();
    for _ in 0..20 {
        a.step();
    }
    assert_eq!(a.net.tcp_connections(), before, "no flow from junk");

    // A VM that ends takes its sockets along.
    drop(b);
    assert!(!peers::stream_path(dir.path(), b_ip).exists());
    assert!(!peers::datagram_path(dir.path(), b_ip).exists());
}

#[test]
fn a_published_udp_port_serves_each_host_client_from_its_own_gateway_port() {
    let port = StdUdp::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cfg = config();
    cfg.forwards.push(PortForward {
        host: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        guest_port: 53,
        transport: Transport::Udp,
    });
    let mut r = Rig::new(cfg);
    r.send(&arp_request(r.guest(), r.cfg.gateway()));
    r.step();
    let guest = SocketAddrV4::new(r.guest(), 53);
    let mut from = Vec::new();
    let clients: Vec<StdUdp> = (0..2)
        .map(|_| StdUdp::bind("127.0.0.1:0").unwrap())
        .collect();
    for (i, c) in clients.iter().enumerate() {
        c.send_to(format!("q{i}").as_bytes(), ("127.0.0.1", port))
            .unwrap();
        let (src, dst, data) = r.wait_for(parse_udp).expect("the datagram in the guest");
        assert_eq!(dst, guest);
        assert_eq!(*src.ip(), r.cfg.gateway(), "from the gateway");
        assert_eq!(data, format!("q{i}").as_bytes());
        from.push(src);
    }
    assert_ne!(from[0], from[1], "each client has its own gateway port");
    assert_eq!(r.net.udp_clients(), 2);
    // The guest answers each; each answer reaches its own client.
    for (i, src) in from.iter().enumerate().rev() {
        r.send(&guest_udp(&r, 53, *src, format!("a{i}").as_bytes()));
    }
    r.step();
    for (i, c) in clients.iter().enumerate() {
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = [0u8; 64];
        let (n, peer) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], format!("a{i}").as_bytes());
        assert_eq!(peer.port(), port, "from the published port");
    }
    // An answer from another guest port is not the published port's.
    r.send(&guest_udp(&r, 54, from[0], b"stray"));
    r.step();
    clients[0]
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(clients[0].recv_from(&mut [0u8; 8]).is_err());
}

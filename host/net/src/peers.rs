//! Links between the user-mode networks of the VMs on one berth network.
//!
//! Each container is its own VM with its own gateway, so a user-defined network has no
//! switch: the VMMs of its containers meet in one private folder (the network's *peer
//! folder*). Each VMM there binds two Unix sockets named after its guest's address:
//!
//! ```text
//! <dir>/<ip>.tcp      a stream listener: one connection per TCP flow into this guest
//! <dir>/<ip>.udp      a datagram socket: one datagram per UDP datagram for this guest
//! <dir>/names/<name>  a link whose target is the address of the container called <name>
//! ```
//!
//! A guest's TCP connection to a peer's address is terminated by its own gateway, as
//! every flow is, and re-opened as a stream to the peer's `.tcp` socket, which its VMM
//! connects into its guest *from the first guest's address and port*: both containers
//! see each other's real addresses, as on docker's networks. UDP goes the same way, one
//! datagram at a time, with no flow state. The engine writes the names; the gateway's
//! DNS reads them at each query, so containers that start later resolve too. Nothing
//! outlives the network: each VMM removes its sockets when it ends, and removing the
//! network removes the folder.
//!
//! Every stream and datagram starts with a [`Header`]. Peers are other VMMs of the same
//! user, not guests, but a header is checked all the same: its source must be another
//! address of the subnet and its port not 0.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// The protocol number of TCP in a [`Header`].
pub const PROTO_TCP: u8 = 6;
/// The protocol number of UDP in a [`Header`].
pub const PROTO_UDP: u8 = 17;
/// Bytes of a [`Header`] on the wire.
pub const HEADER_LEN: usize = 12;
const MAGIC: [u8; 2] = *b"BP";
const VERSION: u8 = 1;
/// The longest peer folder: room for `/255.255.255.255.tcp` in a socket address
/// (104 bytes on macOS, 108 on Linux).
pub const MAX_DIR_LEN: usize = 80;

/// Where a peer's flow comes from and where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// [`PROTO_TCP`] or [`PROTO_UDP`].
    pub proto: u8,
    /// The sending guest's address and port.
    pub src: SocketAddrV4,
    /// The receiving guest's port.
    pub dst_port: u16,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..2].copy_from_slice(&MAGIC);
        b[2] = VERSION;
        b[3] = self.proto;
        b[4..8].copy_from_slice(&self.src.ip().octets());
        b[8..10].copy_from_slice(&self.src.port().to_be_bytes());
        b[10..12].copy_from_slice(&self.dst_port.to_be_bytes());
        b
    }

    /// Reads a header: `None` when the bytes are short, of another version, or carry a
    /// port 0.
    pub fn decode(b: &[u8]) -> Option<Header> {
        let b = b.get(..HEADER_LEN)?;
        if b[..2] != MAGIC || b[2] != VERSION || !matches!(b[3], PROTO_TCP | PROTO_UDP) {
            return None;
        }
        let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
        let src_port = u16::from_be_bytes([b[8], b[9]]);
        let dst_port = u16::from_be_bytes([b[10], b[11]]);
        (src_port != 0 && dst_port != 0).then_some(Header {
            proto: b[3],
            src: SocketAddrV4::new(ip, src_port),
            dst_port,
        })
    }
}

/// The stream socket of the guest at `ip` in peer folder `dir`.
pub fn stream_path(dir: &Path, ip: Ipv4Addr) -> PathBuf {
    dir.join(format!("{ip}.tcp"))
}

/// The datagram socket of the guest at `ip` in peer folder `dir`.
pub fn datagram_path(dir: &Path, ip: Ipv4Addr) -> PathBuf {
    dir.join(format!("{ip}.udp"))
}

/// The folder of name links in peer folder `dir`.
pub fn names_dir(dir: &Path) -> PathBuf {
    dir.join("names")
}

/// The address `name` (as [`crate::dns::normalize`] gives it) has in peer folder `dir`.
pub fn resolve(dir: &Path, name: &str) -> Option<Ipv4Addr> {
    if name.is_empty() || name.starts_with('.') || name.contains('/') || name.len() > 255 {
        return None;
    }
    std::fs::read_link(names_dir(dir).join(name))
        .ok()?
        .to_str()?
        .parse()
        .ok()
}

#[cfg(not(unix))]
pub(crate) use other::{PeerStream, Peers};
#[cfg(unix)]
pub(crate) use unix::{PeerStream, Peers};

#[cfg(unix)]
mod unix {
    use std::io::{self, Read, Write};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use mio::net::{UnixDatagram, UnixListener, UnixStream};
    use mio::{Interest, Registry, Token};

    use super::{datagram_path, resolve, stream_path, Header, HEADER_LEN, PROTO_TCP, PROTO_UDP};
    use crate::UserNetError;

    /// A flow's stream to or from a peer VMM.
    pub(crate) type PeerStream = UnixStream;

    /// Accepted streams still waiting for their header, at most.
    const MAX_PENDING: usize = 64;
    /// How long an accepted stream may take to send its header.
    const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    /// Datagrams read from peers per poll, at most.
    const DATAGRAMS_PER_POLL: usize = 64;
    /// The largest datagram a peer sends: a header and a UDP payload of a 64 KiB MTU.
    const MAX_DATAGRAM: usize = HEADER_LEN + 65_535;

    struct Pending {
        stream: UnixStream,
        token: Token,
        got: Vec<u8>,
        since: Instant,
    }

    /// This VMM's sockets in a peer folder, and the streams it accepted there.
    pub(crate) struct Peers {
        dir: PathBuf,
        own: Ipv4Addr,
        listener: UnixListener,
        datagrams: UnixDatagram,
        listener_token: Option<Token>,
        datagram_token: Option<Token>,
        listener_readable: bool,
        datagrams_readable: bool,
        pending: Vec<Pending>,
        scratch: Vec<u8>,
    }

    impl std::fmt::Debug for Peers {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Peers")
                .field("dir", &self.dir)
                .field("own", &self.own)
                .finish_non_exhaustive()
        }
    }

    /// A TCP flow from a peer, its header read.
    pub(crate) struct Inbound {
        pub stream: UnixStream,
        pub header: Header,
    }

    impl Peers {
        /// Binds the sockets of the guest at `own` in `dir` (which must exist). A socket
        /// left by a VMM that died is replaced; one that a live VMM holds is an error,
        /// since then two guests would have one address.
        pub(crate) fn bind(dir: &Path, own: Ipv4Addr) -> Result<Peers, UserNetError> {
            let fail = |source: io::Error| UserNetError::Peers {
                dir: dir.to_path_buf(),
                source,
            };
            let stream_at = stream_path(dir, own);
            if std::os::unix::net::UnixStream::connect(&stream_at).is_ok() {
                return Err(fail(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("another VM already has address {own} on this network"),
                )));
            }
            let dgram_at = datagram_path(dir, own);
            for stale in [&stream_at, &dgram_at] {
                match std::fs::remove_file(stale) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(fail(e)),
                }
            }
            let listener = UnixListener::bind(&stream_at).map_err(fail)?;
            let datagrams = UnixDatagram::bind(&dgram_at).map_err(|e| {
                let _ = std::fs::remove_file(&stream_at);
                fail(e)
            })?;
            Ok(Peers {
                dir: dir.to_path_buf(),
                own,
                listener,
                datagrams,
                listener_token: None,
                datagram_token: None,
                listener_readable: true,
                datagrams_readable: true,
                pending: Vec::new(),
                scratch: vec![0; MAX_DATAGRAM],
            })
        }

        /// Registers the two sockets under `listener` and `datagrams`.
        pub(crate) fn attach(
            &mut self,
            registry: &Registry,
            listener: Token,
            datagrams: Token,
        ) -> io::Result<()> {
            registry.register(&mut self.listener, listener, Interest::READABLE)?;
            registry.register(&mut self.datagrams, datagrams, Interest::READABLE)?;
            self.listener_token = Some(listener);
            self.datagram_token = Some(datagrams);
            Ok(())
        }

        /// Notes readiness of one of this module's tokens; `false` when it is not one.
        pub(crate) fn ready(&mut self, token: Token, readable: bool) -> bool {
            if Some(token) == self.listener_token {
                self.listener_readable |= readable;
            } else if Some(token) == self.datagram_token {
                self.datagrams_readable |= readable;
            } else {
                // Pending streams are read at every poll, ready or not.
                return self.pending.iter().any(|p| p.token == token);
            }
            true
        }

        /// The address `name` has on the network.
        pub(crate) fn resolve(&self, name: &str) -> Option<Ipv4Addr> {
            resolve(&self.dir, name)
        }

        /// A stream to the guest at `ip` for a TCP flow from `src` to its `dst_port`,
        /// its header sent; `None` when that guest is not running.
        pub(crate) fn connect(
            &self,
            ip: Ipv4Addr,
            src: SocketAddrV4,
            dst_port: u16,
        ) -> Option<UnixStream> {
            let path = stream_path(&self.dir, ip);
            let mut stream = match UnixStream::connect(&path) {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%ip, "user-net: no peer at this address: {e}");
                    return None;
                }
            };
            let header = Header {
                proto: PROTO_TCP,
                src,
                dst_port,
            }
            .encode();
            // A fresh stream's buffer takes the header whole.
            match stream.write(&header) {
                Ok(HEADER_LEN) => Some(stream),
                Ok(_) | Err(_) => {
                    tracing::debug!(%ip, "user-net: the peer's stream took no header");
                    None
                }
            }
        }

        /// Sends a UDP datagram from `src` to port `dst_port` of the guest at `ip`. A peer
        /// that is not there, or whose queue is full, loses it, as a network would.
        pub(crate) fn send_datagram(
            &self,
            ip: Ipv4Addr,
            src: SocketAddrV4,
            dst_port: u16,
            data: &[u8],
        ) {
            let mut msg = Vec::with_capacity(HEADER_LEN + data.len());
            msg.extend_from_slice(
                &Header {
                    proto: PROTO_UDP,
                    src,
                    dst_port,
                }
                .encode(),
            );
            msg.extend_from_slice(data);
            if let Err(e) = self.datagrams.send_to(&msg, datagram_path(&self.dir, ip)) {
                tracing::debug!(%ip, "user-net: UDP to a peer lost: {e}");
            }
        }

        /// Whether a header's source may be a peer: another unicast address of the
        /// subnet (`in_subnet` says which are).
        fn plausible(&self, h: &Header, in_subnet: &impl Fn(Ipv4Addr) -> bool) -> bool {
            let ip = *h.src.ip();
            ip != self.own && in_subnet(ip)
        }

        /// Datagrams from peers: (header, payload) for each, at most a poll's worth.
        pub(crate) fn datagrams(
            &mut self,
            in_subnet: impl Fn(Ipv4Addr) -> bool,
            mut deliver: impl FnMut(Header, &[u8]) -> bool,
        ) -> bool {
            let mut progress = false;
            for _ in 0..DATAGRAMS_PER_POLL {
                if !self.datagrams_readable {
                    break;
                }
                match self.datagrams.recv(&mut self.scratch) {
                    Ok(n) => {
                        progress = true;
                        let msg = &self.scratch[..n];
                        match Header::decode(msg) {
                            Some(h) if h.proto == PROTO_UDP && self.plausible(&h, &in_subnet) => {
                                if !deliver(h, &msg[HEADER_LEN..]) {
                                    break;
                                }
                            }
                            _ => tracing::debug!("user-net: a malformed peer datagram dropped"),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.datagrams_readable = false
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!("user-net: peer datagram receive: {e}");
                        break;
                    }
                }
            }
            progress
        }

        /// Accepts peers' streams and returns those whose header has come. `token` gives
        /// each accepted stream its registration token; streams that send no valid
        /// header in time are closed, and at most [`MAX_PENDING`] wait at once.
        pub(crate) fn accept(
            &mut self,
            registry: &Registry,
            mut token: impl FnMut() -> Token,
            in_subnet: impl Fn(Ipv4Addr) -> bool,
        ) -> Vec<Inbound> {
            while self.listener_readable && self.pending.len() < MAX_PENDING {
                match self.listener.accept() {
                    Ok((mut stream, _)) => {
                        let t = token();
                        if registry
                            .register(&mut stream, t, Interest::READABLE | Interest::WRITABLE)
                            .is_ok()
                        {
                            self.pending.push(Pending {
                                stream,
                                token: t,
                                got: Vec::with_capacity(HEADER_LEN),
                                since: Instant::now(),
                            });
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.listener_readable = false
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!("user-net: peer accept failed: {e}");
                        break;
                    }
                }
            }
            let mut done = Vec::new();
            let mut i = 0;
            while i < self.pending.len() {
                let p = &mut self.pending[i];
                let mut buf = [0u8; HEADER_LEN];
                let want = HEADER_LEN - p.got.len();
                let finished = match p.stream.read(&mut buf[..want]) {
                    Ok(0) => Some(None),
                    Ok(n) => {
                        p.got.extend_from_slice(&buf[..n]);
                        (p.got.len() == HEADER_LEN).then(|| Header::decode(&p.got))
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        (p.since.elapsed() > HEADER_TIMEOUT).then_some(None)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
                    Err(_) => Some(None),
                };
                match finished {
                    None => i += 1,
                    Some(header) => {
                        let mut p = self.pending.swap_remove(i);
                        match header {
                            Some(h) if h.proto == PROTO_TCP && self.plausible(&h, &in_subnet) => {
                                // Re-registered by the flow, under its own token.
                                let _ = registry.deregister(&mut p.stream);
                                done.push(Inbound {
                                    stream: p.stream,
                                    header: h,
                                });
                            }
                            _ => {
                                tracing::debug!(
                                    "user-net: a peer stream without a valid header closed"
                                );
                                let _ = registry.deregister(&mut p.stream);
                            }
                        }
                    }
                }
            }
            done
        }

        /// Whether streams wait for their headers (the poll loop must come back).
        pub(crate) fn waiting(&self) -> bool {
            !self.pending.is_empty()
        }
    }

    impl Drop for Peers {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(stream_path(&self.dir, self.own));
            let _ = std::fs::remove_file(datagram_path(&self.dir, self.own));
        }
    }
}

/// Hosts without Unix sockets (Windows, until named pipes or AF_UNIX streams serve here)
/// have no peer links: binding fails with a clear error, so these types never exist.
#[cfg(not(unix))]
mod other {
    use std::io;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::path::Path;

    use mio::{Registry, Token};

    use super::Header;
    use crate::UserNetError;

    /// No peer stream can exist here.
    #[derive(Debug)]
    pub(crate) enum PeerStream {}

    /// No peer links can exist here.
    #[derive(Debug)]
    pub(crate) enum Peers {}

    /// A TCP flow from a peer (never made here).
    pub(crate) struct Inbound {
        pub stream: PeerStream,
        pub header: Header,
    }

    impl io::Read for PeerStream {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            match *self {}
        }
    }

    impl io::Write for PeerStream {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            match *self {}
        }
        fn flush(&mut self) -> io::Result<()> {
            match *self {}
        }
    }

    impl PeerStream {
        pub(crate) fn shutdown(&self, _: std::net::Shutdown) -> io::Result<()> {
            match *self {}
        }
        pub(crate) fn take_error(&self) -> io::Result<Option<io::Error>> {
            match *self {}
        }
    }

    impl mio::event::Source for PeerStream {
        fn register(&mut self, _: &Registry, _: Token, _: mio::Interest) -> io::Result<()> {
            match *self {}
        }
        fn reregister(&mut self, _: &Registry, _: Token, _: mio::Interest) -> io::Result<()> {
            match *self {}
        }
        fn deregister(&mut self, _: &Registry) -> io::Result<()> {
            match *self {}
        }
    }

    impl Peers {
        pub(crate) fn bind(dir: &Path, _: Ipv4Addr) -> Result<Peers, UserNetError> {
            Err(UserNetError::Peers {
                dir: dir.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::Unsupported,
                    "user-defined networks need Unix sockets, which this host lacks",
                ),
            })
        }
        pub(crate) fn attach(&mut self, _: &Registry, _: Token, _: Token) -> io::Result<()> {
            match *self {}
        }
        pub(crate) fn ready(&mut self, _: Token, _: bool) -> bool {
            match *self {}
        }
        pub(crate) fn resolve(&self, _: &str) -> Option<Ipv4Addr> {
            match *self {}
        }
        pub(crate) fn connect(&self, _: Ipv4Addr, _: SocketAddrV4, _: u16) -> Option<PeerStream> {
            match *self {}
        }
        pub(crate) fn send_datagram(&self, _: Ipv4Addr, _: SocketAddrV4, _: u16, _: &[u8]) {
            match *self {}
        }
        pub(crate) fn datagrams(
            &mut self,
            _: impl Fn(Ipv4Addr) -> bool,
            _: impl FnMut(Header, &[u8]) -> bool,
        ) -> bool {
            match *self {}
        }
        pub(crate) fn accept(
            &mut self,
            _: &Registry,
            _: impl FnMut() -> Token,
            _: impl Fn(Ipv4Addr) -> bool,
        ) -> Vec<Inbound> {
            match *self {}
        }
        pub(crate) fn waiting(&self) -> bool {
            match *self {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bad_ones_are_refused() {
        let h = Header {
            proto: PROTO_TCP,
            src: SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 3), 40000),
            dst_port: 80,
        };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        let mut b = h.encode();
        b[0] = b'X';
        assert_eq!(Header::decode(&b), None, "magic");
        let mut b = h.encode();
        b[3] = 1;
        assert_eq!(Header::decode(&b), None, "protocol");
        let mut b = h.encode();
        b[10] = 0;
        b[11] = 0;
        assert_eq!(Header::decode(&b), None, "port 0");
        assert_eq!(Header::decode(&h.encode()[..11]), None, "short");
    }

    #[test]
    fn names_resolve_through_links_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(names_dir(dir.path())).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("10.9.0.4", names_dir(dir.path()).join("db")).unwrap();
        #[cfg(unix)]
        assert_eq!(resolve(dir.path(), "db"), Some(Ipv4Addr::new(10, 9, 0, 4)));
        assert_eq!(resolve(dir.path(), "web"), None);
        assert_eq!(resolve(dir.path(), ".."), None);
        assert_eq!(resolve(dir.path(), "a/b"), None);
        assert_eq!(resolve(dir.path(), ""), None);
    }
}

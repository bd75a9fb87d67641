//! `berth-guest-probe`: a tiny static binary the VM tests put in their initramfs.
//!
//! ```text
//! berth-guest-probe vsock-echo-server PORT
//!     listen on vsock port PORT (any CID), accept one connection, echo every byte back
//!     until the peer half-closes, close, exit 0
//! berth-guest-probe vsock-send CID PORT MESSAGE
//!     connect to CID:PORT, send MESSAGE, half-close, print everything the peer sends
//!     until it closes to stdout, exit 0
//! berth-guest-probe net-up IFACE ADDR/PREFIX GATEWAY
//!     give IFACE the address, bring it up, route everything via GATEWAY (see `netif`)
//! berth-guest-probe tcp-send IP PORT MESSAGE
//!     connect over TCP, send MESSAGE and a newline, half-close, print the reply
//! berth-guest-probe udp-send IP PORT MESSAGE
//!     send one datagram, print the first answer (10 s at most)
//! berth-guest-probe udp-echo-server PORT
//!     answer every datagram on UDP port PORT with "echo: " and its bytes, until killed
//! berth-guest-probe getxattr PATH NAME
//!     print the value of extended attribute NAME of PATH (not following a symlink)
//! ```
//!
//! Failures print `berth-guest-probe: ...` on stderr and exit 1; usage errors exit 2.
//! Only libc sockets: no async runtime, so the binary links statically and stays small.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

const USAGE: &str = "usage:
  berth-guest-probe vsock-echo-server PORT
  berth-guest-probe vsock-send CID PORT MESSAGE
  berth-guest-probe net-up IFACE ADDR/PREFIX GATEWAY
  berth-guest-probe tcp-send IP PORT MESSAGE
  berth-guest-probe udp-send IP PORT MESSAGE
  berth-guest-probe udp-echo-server PORT
  berth-guest-probe getxattr PATH NAME";

// One copy of the interface set-up: the agent's (the probe uses only part of it).
#[allow(dead_code)]
#[path = "../../../guest/agent/src/netif.rs"]
mod netif;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match parse_args(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("berth-guest-probe: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-guest-probe: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    EchoServer {
        port: u32,
    },
    Send {
        cid: u32,
        port: u32,
        message: String,
    },
    NetUp {
        iface: String,
        addr: std::net::Ipv4Addr,
        prefix: u8,
        gateway: std::net::Ipv4Addr,
    },
    Inet {
        udp: bool,
        addr: std::net::SocketAddrV4,
        message: String,
    },
    UdpEcho {
        port: u16,
    },
    GetXattr {
        path: String,
        name: String,
    },
}

/// The value of extended attribute `name` of `path` itself (a symlink is not followed).
fn getxattr(path: &str, name: &str) -> io::Result<Vec<u8>> {
    let bad = |_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the argument");
    let p = std::ffi::CString::new(path).map_err(bad)?;
    let n = std::ffi::CString::new(name).map_err(bad)?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: both strings are NUL-terminated and live across the call; the buffer is
    // valid for its length, which is what the kernel may write.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(len as usize);
    Ok(buf)
}

fn parse_ip(s: &str) -> Result<std::net::Ipv4Addr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IPv4 address"))
}

fn parse_num(what: &str, s: &str) -> Result<u32, String> {
    s.parse()
        .map_err(|_| format!("{what} must be a number from 0 to 4294967295, got {s:?}"))
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["-h" | "--help" | "help"] => Ok(Command::Help),
        ["vsock-echo-server", port] => Ok(Command::EchoServer {
            port: parse_num("PORT", port)?,
        }),
        ["vsock-send", cid, port, message] => Ok(Command::Send {
            cid: parse_num("CID", cid)?,
            port: parse_num("PORT", port)?,
            message: (*message).to_owned(),
        }),
        ["net-up", iface, cidr, gw] => {
            let (a, p) = cidr.split_once('/').ok_or("ADDR/PREFIX needs a /")?;
            let prefix: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or("bad PREFIX")?;
            Ok(Command::NetUp {
                iface: (*iface).to_owned(),
                addr: parse_ip(a)?,
                prefix,
                gateway: parse_ip(gw)?,
            })
        }
        [cmd @ ("tcp-send" | "udp-send"), ip, port, message] => Ok(Command::Inet {
            udp: *cmd == "udp-send",
            addr: std::net::SocketAddrV4::new(
                parse_ip(ip)?,
                port.parse().map_err(|_| "PORT must be 0 to 65535")?,
            ),
            message: (*message).to_owned(),
        }),
        ["udp-echo-server", port] => Ok(Command::UdpEcho {
            port: port.parse().map_err(|_| "PORT must be 0 to 65535")?,
        }),
        ["getxattr", path, name] => Ok(Command::GetXattr {
            path: (*path).to_owned(),
            name: (*name).to_owned(),
        }),
        [] => Err("missing command".into()),
        [cmd, ..] => Err(format!("bad arguments for {cmd:?}")),
    }
}

fn run(command: Command) -> io::Result<()> {
    match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::EchoServer { port } => {
            let listener = vsock::listen(port)?;
            eprintln!("berth-guest-probe: listening on vsock port {port}");
            let mut conn = vsock::accept(&listener)?;
            let n = echo(&mut conn)?;
            eprintln!("berth-guest-probe: echoed {n} bytes");
            Ok(())
        }
        Command::NetUp {
            iface,
            addr,
            prefix,
            gateway,
        } => netif::configure(&iface, addr, prefix, Some(gateway)),
        Command::Inet {
            udp: false,
            addr,
            message,
        } => {
            let mut conn = std::net::TcpStream::connect_timeout(
                &addr.into(),
                std::time::Duration::from_secs(20),
            )?;
            conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
            let reply = send_and_collect(&mut conn, format!("{message}\n").as_bytes(), |c| {
                c.shutdown(std::net::Shutdown::Write)
            })?;
            let mut out = io::stdout().lock();
            out.write_all(&reply)?;
            out.flush()
        }
        Command::Inet {
            udp: true,
            addr,
            message,
        } => {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0")?;
            sock.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
            sock.send_to(message.as_bytes(), addr)?;
            let mut buf = [0u8; 2048];
            let (n, _) = sock.recv_from(&mut buf)?;
            let mut out = io::stdout().lock();
            out.write_all(&buf[..n])?;
            out.flush()
        }
        Command::GetXattr { path, name } => {
            let value = getxattr(&path, &name)?;
            let mut out = io::stdout().lock();
            out.write_all(&value)?;
            out.write_all(b"\n")?;
            out.flush()
        }
        Command::UdpEcho { port } => {
            let sock = std::net::UdpSocket::bind(("0.0.0.0", port))?;
            eprintln!("berth-guest-probe: answering UDP port {port}");
            let mut buf = [0u8; 2048];
            loop {
                let (n, from) = sock.recv_from(&mut buf)?;
                let mut reply = b"echo: ".to_vec();
                reply.extend_from_slice(&buf[..n]);
                sock.send_to(&reply, from)?;
            }
        }
        Command::Send { cid, port, message } => {
            let mut conn = vsock::connect(cid, port)?;
            let reply = send_and_collect(&mut conn, message.as_bytes(), |c| c.shutdown_write())?;
            let mut out = io::stdout().lock();
            out.write_all(&reply)?;
            out.flush()
        }
    }
}

/// Copies everything read from `s` back to it until EOF; returns the byte count.
fn echo<S: Read + Write>(s: &mut S) -> io::Result<u64> {
    let mut buf = [0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        s.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Sends `msg`, half-closes with `half_close`, and returns everything read until EOF.
fn send_and_collect<S: Read + Write>(
    s: &mut S,
    msg: &[u8],
    half_close: impl FnOnce(&S) -> io::Result<()>,
) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    s.flush()?;
    half_close(s)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    Ok(reply)
}

/// AF_VSOCK stream sockets through libc.
mod vsock {
    use super::*;

    /// A connected vsock stream.
    pub struct Stream(File);

    impl Stream {
        pub fn shutdown_write(&self) -> io::Result<()> {
            // SAFETY: shutdown(2) on a descriptor this stream owns; no memory is passed.
            let rc = unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_WR) };
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }
    }

    impl Read for Stream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.read(buf)
        }
    }

    impl Write for Stream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn socket() -> io::Result<OwnedFd> {
        // SAFETY: socket(2) takes no pointers; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot create a vsock socket (is the kernel built with vsock?): {e}"),
            ));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn addr(cid: u32, port: u32) -> libc::sockaddr_vm {
        // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value.
        let mut a: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        a.svm_family = libc::AF_VSOCK as libc::sa_family_t;
        a.svm_cid = cid;
        a.svm_port = port;
        a
    }

    const ADDR_LEN: libc::socklen_t = std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t;

    pub fn listen(port: u32) -> io::Result<OwnedFd> {
        let fd = socket()?;
        let a = addr(libc::VMADDR_CID_ANY, port);
        // SAFETY: `a` is a valid sockaddr_vm of ADDR_LEN bytes that outlives the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&a as *const libc::sockaddr_vm).cast(),
                ADDR_LEN,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot bind vsock port {port}: {e}"),
            ));
        }
        // SAFETY: listen(2) on a socket we own; no pointers.
        if unsafe { libc::listen(fd.as_raw_fd(), 1) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot listen on vsock port {port}: {e}"),
            ));
        }
        Ok(fd)
    }

    pub fn accept(listener: &OwnedFd) -> io::Result<Stream> {
        loop {
            // SAFETY: accept4(2) with null address pointers is allowed; the result is checked.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: `fd` is a fresh descriptor that nothing else owns.
                return Ok(Stream(File::from(unsafe { OwnedFd::from_raw_fd(fd) })));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io::Error::new(
                    e.kind(),
                    format!("accept on vsock failed: {e}"),
                ));
            }
        }
    }

    pub fn connect(cid: u32, port: u32) -> io::Result<Stream> {
        let fd = socket()?;
        let a = addr(cid, port);
        // SAFETY: `a` is a valid sockaddr_vm of ADDR_LEN bytes that outlives the call.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&a as *const libc::sockaddr_vm).cast(),
                ADDR_LEN,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot connect to vsock {cid}:{port}: {e}"),
            ));
        }
        Ok(Stream(File::from(fd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Shutdown;
    use std::os::unix::net::UnixStream;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_the_command_line() {
        assert_eq!(
            parse_args(&args(&["vsock-echo-server", "1024"])),
            Ok(Command::EchoServer { port: 1024 })
        );
        assert_eq!(
            parse_args(&args(&["vsock-send", "2", "5000", "hi there"])),
            Ok(Command::Send {
                cid: 2,
                port: 5000,
                message: "hi there".into()
            })
        );
        assert_eq!(parse_args(&args(&["--help"])), Ok(Command::Help));
        assert!(parse_args(&args(&[])).is_err());
        assert!(parse_args(&args(&["vsock-echo-server"])).is_err());
        assert!(parse_args(&args(&["vsock-echo-server", "-1"])).is_err());
        assert!(parse_args(&args(&["vsock-send", "x", "1", "m"])).is_err());
        assert!(parse_args(&args(&["vsock-send", "2", "1"])).is_err());
        assert!(parse_args(&args(&["bogus"])).is_err());
        assert_eq!(
            parse_args(&args(&["net-up", "eth0", "10.0.0.2/24", "10.0.0.1"])),
            Ok(Command::NetUp {
                iface: "eth0".into(),
                addr: "10.0.0.2".parse().unwrap(),
                prefix: 24,
                gateway: "10.0.0.1".parse().unwrap()
            })
        );
        assert!(parse_args(&args(&["net-up", "eth0", "10.0.0.2", "10.0.0.1"])).is_err());
        assert!(parse_args(&args(&["net-up", "eth0", "10.0.0.2/33", "10.0.0.1"])).is_err());
        assert_eq!(
            parse_args(&args(&["udp-send", "10.0.0.1", "53", "m"])),
            Ok(Command::Inet {
                udp: true,
                addr: "10.0.0.1:53".parse().unwrap(),
                message: "m".into()
            })
        );
        assert!(parse_args(&args(&["tcp-send", "10.0.0.1", "70000", "m"])).is_err());
        assert_eq!(
            parse_args(&args(&["udp-echo-server", "5300"])),
            Ok(Command::UdpEcho { port: 5300 })
        );
        assert!(parse_args(&args(&["udp-echo-server", "x"])).is_err());
        assert_eq!(
            parse_args(&args(&["getxattr", "/f", "user.k"])),
            Ok(Command::GetXattr {
                path: "/f".into(),
                name: "user.k".into()
            })
        );
        assert!(parse_args(&args(&["getxattr", "/f"])).is_err());
    }

    #[test]
    fn echo_returns_every_byte_until_eof() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || echo(&mut b).unwrap());
        let msg: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let reply = send_and_collect(&mut a, &msg, |s| s.shutdown(Shutdown::Write)).unwrap();
        assert_eq!(reply, msg);
        assert_eq!(server.join().unwrap(), msg.len() as u64);
    }

    #[test]
    fn send_half_closes_and_reads_the_whole_reply() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            b.write_all(b"reply to ").unwrap();
            b.write_all(&got).unwrap();
        });
        let reply = send_and_collect(&mut a, b"ping", |s| s.shutdown(Shutdown::Write)).unwrap();
        assert_eq!(reply, b"reply to ping");
        peer.join().unwrap();
    }

    #[test]
    fn vsock_errors_name_the_address() {
        // Whether or not this kernel has vsock, connecting to an unused local port fails,
        // and the message says what was tried.
        let err = vsock::connect(libc::VMADDR_CID_LOCAL, 4_000_000_000)
            .err()
            .expect("nobody listens on that port");
        let msg = err.to_string();
        assert!(
            msg.contains("vsock 1:4000000000") || msg.contains("vsock socket"),
            "{msg}"
        );
    }
}

//! Static IPv4 set-up of a network interface through ioctls, with nothing but libc:
//! address, netmask, MTU, up, default route. The agent sets up `lo` and the VM's `eth0`
//! with it; the guest probe of the VM tests compiles this same file (a `#[path]` module),
//! so there is one copy.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    // SAFETY: sockaddr_in is plain old data; all-zero is a valid value.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(addr).to_be();
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux (16 bytes), and any
    // bytes are a valid sockaddr.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn ioctl(fd: &OwnedFd, request: libc::Ioctl, arg: *mut libc::c_void, what: &str) -> io::Result<()> {
    // SAFETY: every caller passes a request whose argument is the struct `arg` points to,
    // which lives for the whole call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// The netmask of a prefix length (0 to 32).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let prefix = u32::from(prefix.min(32));
    Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0))
}

/// Brings `name` up (`ip link set NAME up`).
pub fn up(name: &str) -> io::Result<()> {
    set_up(&control_socket()?, name)
}

fn set_up(fd: &OwnedFd, name: &str) -> io::Result<()> {
    let mut req = ifreq(name)?;
    ioctl(
        fd,
        libc::SIOCGIFFLAGS as libc::Ioctl,
        (&mut req as *mut libc::ifreq).cast(),
        "SIOCGIFFLAGS",
    )?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(
        fd,
        libc::SIOCSIFFLAGS as libc::Ioctl,
        (&mut req as *mut libc::ifreq).cast(),
        "SIOCSIFFLAGS",
    )
}

/// Sets the MTU of `name`.
pub fn set_mtu(name: &str, mtu: u16) -> io::Result<()> {
    let fd = control_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
    ioctl(
        &fd,
        libc::SIOCSIFMTU as libc::Ioctl,
        (&mut req as *mut libc::ifreq).cast(),
        "SIOCSIFMTU",
    )
}

/// Gives `name` the address `addr/prefix`, brings it up, and routes everything else via
/// `gateway` (when given).
pub fn configure(
    name: &str,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> io::Result<()> {
    let fd = control_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(
        &fd,
        libc::SIOCSIFADDR as libc::Ioctl,
        (&mut req as *mut libc::ifreq).cast(),
        "SIOCSIFADDR",
    )?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(netmask(prefix));
    ioctl(
        &fd,
        libc::SIOCSIFNETMASK as libc::Ioctl,
        (&mut req as *mut libc::ifreq).cast(),
        "SIOCSIFNETMASK",
    )?;
    set_up(&fd, name)?;
    if let Some(gw) = gateway {
        // SAFETY: rtentry is plain old data; all-zero is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr_in(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr_in(gw);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        match ioctl(
            &fd,
            libc::SIOCADDRT as libc::Ioctl,
            (&mut rt as *mut libc::rtentry).cast(),
            "SIOCADDRT",
        ) {
            // `ioctl` keeps the kind of the OS error, not its number.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            r => r?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_and_names() {
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(netmask(200), Ipv4Addr::BROADCAST);
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("a-very-long-interface-name").is_err());
    }
}

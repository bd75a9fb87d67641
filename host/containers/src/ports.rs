//! Published ports and extra host entries, as docker spells them on its command line
//! (`-p [IP:][HOST:]CONTAINER[/PROTO]`, `--add-host NAME:IP`): parsed here once, so the
//! CLI and the Docker API read them the same way.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// Why a port or host entry is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// invalid port spec "{spec}": {why}; use [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp] or CONTAINER_PORT
    #[error("invalid port spec \"{spec}\": {why}; use [IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp] or CONTAINER_PORT")]
    Spec {
        /// What was given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// host port {ip}:{port}/{proto} is published twice: give each mapping its own host port
    #[error(
        "host port {ip}:{port}/{proto} is published twice: give each mapping its own host port"
    )]
    Duplicate {
        /// The host address.
        ip: IpAddr,
        /// The host port.
        port: u16,
        /// The protocol.
        proto: Protocol,
    },
    /// invalid --add-host "{0}": use NAME:IP, like db:10.0.0.5
    #[error("invalid --add-host \"{0}\": use NAME:IP, like db:10.0.0.5")]
    AddHost(String),
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One published port: connections to `host_ip:host_port` on the host reach
/// `container_port` in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address to listen on (docker's default: every address, `0.0.0.0`).
    pub host_ip: IpAddr,
    /// Host port; 0 asks for a free one when the container starts.
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
    /// Protocol.
    #[serde(default)]
    pub protocol: Protocol,
}

impl std::fmt::Display for PortMapping {
    /// docker's form: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip, self.host_port, self.container_port, self.protocol
        )
    }
}

fn port_number(spec: &str, text: &str, what: &str, zero_ok: bool) -> Result<u16, PortError> {
    let bad = |why: String| PortError::Spec {
        spec: spec.to_string(),
        why,
    };
    if text.contains('-') {
        return Err(bad(format!(
            "{what} {text:?}: port ranges are not supported yet"
        )));
    }
    match text.parse::<u16>() {
        Ok(0) if !zero_ok => Err(bad(format!("{what} 0 is not a port"))),
        Ok(n) => Ok(n),
        Err(_) => Err(bad(format!(
            "{what} {text:?} is not a port number (1 to 65535)"
        ))),
    }
}

/// Parses one `-p` value: `CONTAINER`, `HOST:CONTAINER`, `IP:HOST:CONTAINER` or
/// `IP::CONTAINER`, each optionally with `/tcp` or `/udp`. A missing or `0` host port is
/// a free one, picked when the container starts.
pub fn parse_publish(spec: &str) -> Result<PortMapping, PortError> {
    let bad = |why: &str| PortError::Spec {
        spec: spec.to_string(),
        why: why.to_string(),
    };
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some((_, other)) => {
            return Err(bad(&format!(
                "protocol {other:?} is not supported (tcp or udp)"
            )))
        }
        None => (spec, Protocol::Tcp),
    };
    // IPv6 host addresses come bracketed: [::1]:8080:80.
    let (ip, rest) = match ports.strip_prefix('[') {
        Some(r) => {
            let (ip, rest) = r
                .split_once("]:")
                .ok_or_else(|| bad("unclosed [ in the address"))?;
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| bad("the address is not an IP address"))?;
            (Some(ip), rest.to_string())
        }
        None => (None, ports.to_string()),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let (ip, host, container) = match (ip, parts.as_slice()) {
        (None, [c]) => (None, "", *c),
        (None, [h, c]) => (None, *h, *c),
        (None, [i, h, c]) => {
            let ip: IpAddr = i
                .parse()
                .map_err(|_| bad(&format!("{i:?} is not an IP address")))?;
            (Some(ip), *h, *c)
        }
        (Some(ip), [h, c]) => (Some(ip), *h, *c),
        _ => return Err(bad("too many ':'")),
    };
    let container_port = port_number(spec, container, "container port", false)?;
    let host_port = if host.is_empty() {
        0
    } else {
        port_number(spec, host, "host port", true)?
    };
    Ok(PortMapping {
        host_ip: ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        host_port,
        container_port,
        protocol,
    })
}

/// Checks a container's published ports together: no host address and port twice per
/// protocol (free ports, 0, are picked apart later).
pub fn check_publish(ports: &[PortMapping]) -> Result<(), PortError> {
    for (i, a) in ports.iter().enumerate() {
        if a.host_port == 0 {
            continue;
        }
        let clash = ports[..i].iter().any(|b| {
            b.host_port == a.host_port
                && b.protocol == a.protocol
                && (b.host_ip == a.host_ip
                    || b.host_ip.is_unspecified()
                    || a.host_ip.is_unspecified())
        });
        if clash {
            return Err(PortError::Duplicate {
                ip: a.host_ip,
                port: a.host_port,
                proto: a.protocol,
            });
        }
    }
    Ok(())
}

/// One `--add-host` entry: `NAME:IP` (docker also takes `NAME=IP`; an IPv6 address may
/// be bracketed). `host-gateway` stands for the host, as in docker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    /// The name.
    pub name: String,
    /// Its address; `None` for `host-gateway` (the host, as the container sees it).
    pub ip: Option<IpAddr>,
}

/// Parses one `--add-host` value.
pub fn parse_add_host(text: &str) -> Result<ExtraHost, PortError> {
    let bad = || PortError::AddHost(text.to_string());
    let (name, ip) = text
        .split_once('=')
        .or_else(|| text.split_once(':'))
        .ok_or_else(bad)?;
    let valid_name = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if !valid_name {
        return Err(bad());
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let ip = match ip {
        "host-gateway" => None,
        ip => Some(ip.parse::<IpAddr>().map_err(|_| bad())?),
    };
    Ok(ExtraHost {
        name: name.to_string(),
        ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(spec: &str) -> PortMapping {
        parse_publish(spec).unwrap()
    }

    #[test]
    fn publish_specs_parse_like_docker() {
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let m = p("8080:80");
        assert_eq!(
            (m.host_ip, m.host_port, m.container_port, m.protocol),
            (any, 8080, 80, Protocol::Tcp)
        );
        assert_eq!(m.to_string(), "0.0.0.0:8080->80/tcp");
        let m = p("127.0.0.1:5353:53/udp");
        assert_eq!(m.to_string(), "127.0.0.1:5353->53/udp");
        let m = p("80");
        assert_eq!((m.host_port, m.container_port), (0, 80), "a free host port");
        let m = p("127.0.0.1::80");
        assert_eq!(
            (m.host_ip.to_string(), m.host_port),
            ("127.0.0.1".into(), 0)
        );
        let m = p("[::1]:8443:443/tcp");
        assert_eq!(m.host_ip, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(m.host_port, 8443);
        for bad in [
            "",
            "x",
            "80:x",
            "70000:80",
            "8080:0",
            "1:2:3:4",
            "a.b:1:2",
            "80/sctp",
            "8000-8010:80",
            "[::1:80:80",
        ] {
            let e = parse_publish(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn duplicate_host_ports_are_refused() {
        let ok = [
            p("8080:80"),
            p("8081:81"),
            p("8080:80/udp"),
            p("80"),
            p("81"),
        ];
        check_publish(&ok).unwrap();
        let e = check_publish(&[p("8080:80"), p("127.0.0.1:8080:81")]).unwrap_err();
        assert!(e.to_string().contains("8080"), "{e}");
        assert!(check_publish(&[p("127.0.0.1:8080:80"), p("127.0.0.2:8080:80")]).is_ok());
    }

    #[test]
    fn add_host_entries() {
        let h = parse_add_host("db:10.0.0.5").unwrap();
        assert_eq!(
            (h.name.as_str(), h.ip),
            ("db", Some("10.0.0.5".parse().unwrap()))
        );
        let h = parse_add_host("v6=[::1]").unwrap();
        assert_eq!(h.ip, Some("::1".parse().unwrap()));
        assert_eq!(parse_add_host("gw:host-gateway").unwrap().ip, None);
        for bad in ["db", ":1.2.3.4", "db:nowhere", "a b:1.2.3.4"] {
            assert!(parse_add_host(bad).is_err(), "{bad}");
        }
    }
}

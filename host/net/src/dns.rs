//! The few bits of DNS the gateway needs: read one question from a query, and answer it
//! from a static table of names (container names, `host.docker.internal`). Every other
//! query is forwarded untouched to the host's resolver.

use std::net::Ipv4Addr;

/// Longest name (RFC 1035: 255 octets on the wire, 253 as text).
pub const MAX_NAME_LEN: usize = 253;
const HEADER_LEN: usize = 12;
const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;
/// TTL of static answers: short, since container names come and go.
const STATIC_TTL: u32 = 10;

/// One question of a query.
#[derive(Debug, PartialEq, Eq)]
pub struct Question {
    /// The name, lower-case, without the trailing dot.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// Where the question ends in the message.
    pub end: usize,
}

/// Reads the single question of a standard query; `None` for anything else (answers,
/// other opcodes, several questions, compression in the question, malformed names).
pub fn parse_query(msg: &[u8]) -> Option<Question> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    let flags = u16::from_be_bytes([msg[2], msg[3]]);
    let qr = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    let qdcount = u16::from_be_bytes([msg[4], msg[5]]);
    if qr || opcode != 0 || qdcount != 1 {
        return None;
    }
    let mut pos = HEADER_LEN;
    let mut name = String::new();
    loop {
        let len = usize::from(*msg.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // a compression pointer or a reserved label type
        }
        let label = msg.get(pos..pos + len)?;
        pos += len;
        if !name.is_empty() {
            name.push('.');
        }
        for &b in label {
            if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return None;
            }
            name.push(char::from(b.to_ascii_lowercase()));
        }
        if name.len() > MAX_NAME_LEN {
            return None;
        }
    }
    let tail = msg.get(pos..pos + 4)?;
    Some(Question {
        name,
        qtype: u16::from_be_bytes([tail[0], tail[1]]),
        qclass: u16::from_be_bytes([tail[2], tail[3]]),
        end: pos + 4,
    })
}

/// Whether `name` can be a static name: labels of letters, digits, `-` and `_`.
pub fn valid_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Normalizes a name as [`parse_query`] does: lower-case, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The answer to `query` when it asks about a name in the table (`lookup`), else `None`.
/// An `A` question gets the address; any other type for a known name gets an empty
/// answer (so the guest does not wait for an `AAAA` that will never come).
pub fn answer_static(query: &[u8], lookup: impl Fn(&str) -> Option<Ipv4Addr>) -> Option<Vec<u8>> {
    let q = parse_query(query)?;
    let addr = lookup(&q.name)?;
    let with_answer = q.qtype == TYPE_A && q.qclass == CLASS_IN;
    let mut out = Vec::with_capacity(q.end + 16);
    out.extend_from_slice(&query[..2]); // id
    let rd = query[2] & 0x01;
    out.extend_from_slice(&[0x84 | rd, 0x80]); // QR, AA, RD as asked, RA; NOERROR
    out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    out.extend_from_slice(&u16::from(with_answer).to_be_bytes()); // ANCOUNT
    out.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
    out.extend_from_slice(&query[HEADER_LEN..q.end]);
    if with_answer {
        out.extend_from_slice(&[0xc0, 0x0c]); // the name, by pointer to the question
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&STATIC_TTL.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&addr.octets());
    }
    Some(out)
}

/// The nameservers of a `resolv.conf` text, IPv4 and IPv6, in order.
pub fn parse_resolv_conf(text: &str) -> Vec<std::net::IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(a)) => a.split('%').next()?.parse().ok(),
                _ => None,
            }
        })
        .collect()
}

/// Builds a query for `name` and `qtype` (for tests and probes).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_answers_and_refusals() {
        let table = |n: &str| (n == "db.berth.internal").then_some(Ipv4Addr::new(10, 0, 0, 9));
        let q = build_query(0x1234, "DB.berth.internal", TYPE_A);
        let a = answer_static(&q, table).unwrap();
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1);
        assert_eq!(&a[a.len() - 4..], &[10, 0, 0, 9]);
        let aaaa = answer_static(&build_query(1, "db.berth.internal", 28), table).unwrap();
        assert_eq!(u16::from_be_bytes([aaaa[6], aaaa[7]]), 0, "no AAAA answer");
        assert!(answer_static(&build_query(1, "example.com", TYPE_A), table).is_none());
        // Malformed or non-queries are not answered, and never panic.
        assert!(parse_query(&[0; 5]).is_none());
        let mut resp = q.clone();
        resp[2] |= 0x80;
        assert!(parse_query(&resp).is_none());
        let mut ptr = q.clone();
        ptr[12] = 0xc0;
        assert!(parse_query(&ptr).is_none());
        assert!(parse_query(&q[..q.len() - 2]).is_none());
        let long = vec![b'a'; 300];
        let mut huge = q[..12].to_vec();
        for chunk in long.chunks(60) {
            huge.push(chunk.len() as u8);
            huge.extend_from_slice(chunk);
        }
        huge.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(parse_query(&huge).is_none(), "names over 253 bytes");
    }

    #[test]
    fn names_and_resolv_conf() {
        assert!(valid_name("host.docker.internal"));
        assert!(valid_name("web-1."));
        assert!(!valid_name(""));
        assert!(!valid_name("a..b"));
        assert!(!valid_name("bad name"));
        assert_eq!(normalize("Host.Docker.Internal."), "host.docker.internal");
        let r = parse_resolv_conf(
            "# c\nnameserver 10.0.0.1\nsearch x\nnameserver fe80::1%eth0\nnameserver bogus\n",
        );
        assert_eq!(
            r,
            vec![
                "10.0.0.1".parse::<std::net::IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }
}

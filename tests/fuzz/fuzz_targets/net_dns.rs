//! The gateway's DNS: a guest's query (any bytes) read and answered from a static table;
//! names and resolv.conf texts from the host.
#![no_main]

use std::net::Ipv4Addr;

use berth_net::dns;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(q) = dns::parse_query(data) {
        assert!(q.end <= data.len(), "a question ends inside its message");
        assert!(q.name.len() <= dns::MAX_NAME_LEN);
    }
    let table = |name: &str| match name {
        "host.docker.internal" | "web" | "a.b-c_d" => Some(Ipv4Addr::new(192, 168, 249, 254)),
        _ => None,
    };
    if let Some(answer) = dns::answer_static(data, table) {
        let q = dns::parse_query(data).expect("only a query gets an answer");
        assert_eq!(answer[..2], data[..2], "the answer keeps the query's id");
        assert!(answer.len() >= q.end);
    }
    let text = String::from_utf8_lossy(data);
    let _ = dns::parse_resolv_conf(&text);
    let name = dns::normalize(&text);
    if dns::valid_name(&text) {
        let query = dns::build_query(7, &text, 1);
        let q = dns::parse_query(&query).expect("a valid name makes a valid query");
        assert_eq!(q.name, name, "a built query reads back its name");
    }
});

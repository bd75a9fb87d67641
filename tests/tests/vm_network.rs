//! Container networking end to end: the real `berth` CLI, VMM (with its user-mode
//! network), guest kernel and agent. Outbound TCP and DNS from a container to the host,
//! a published port served by busybox httpd, its release on stop, a port conflict, and
//! `--network none`. Run through scripts/with-kvm.sh with BERTH_KERNEL, BERTH_INITRAMFS,
//! BERTH_DEFAULT_IMAGE and BERTH_BIN set (see scripts/test.sh). Few boots: one container
//! serves several checks.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Output;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_tests::{free_port, text, Berth};

const IMAGE: &str = "berth.local/busybox:latest";
/// No single berth command of these tests takes this long, even nested under emulation.
const COMMAND_LIMIT: Duration = Duration::from_secs(300);

fn berth_env() -> &'static Berth {
    static BERTH: OnceLock<Berth> = OnceLock::new();
    BERTH.get_or_init(|| Berth::new("net-e2e", COMMAND_LIMIT))
}

#[track_caller]
fn berth(args: &[&str]) -> Output {
    berth_env().output(args)
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    berth_env().ok(args)
}

fn diagnostics() -> String {
    berth_env().diagnostics()
}

/// `GET /` on 127.0.0.1:`port`: the whole answer, or the error.
fn http_get(port: u16) -> std::io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn outbound_tcp_and_dns_reach_the_host_by_name() {
    // A line server on the host's loopback: it answers one line and closes.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (conn, peer) = listener.accept().unwrap();
        let mut w = conn.try_clone().unwrap();
        let mut line = String::new();
        BufReader::new(conn).read_line(&mut line).unwrap();
        w.write_all(format!("pong to {line}").as_bytes()).unwrap();
        (line, peer)
    });
    let script = format!(
        "nslookup host.docker.internal; echo ---; echo ping | nc host.docker.internal {port}; \
         echo ---; cat /etc/resolv.conf; echo ---; cat /etc/hosts"
    );
    let out = ok(&[
        "run",
        "--rm",
        "--add-host",
        "db.example:10.1.2.3",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    let parts: Vec<&str> = out.split("---\n").collect();
    assert_eq!(parts.len(), 4, "{out}");
    assert!(
        parts[0].contains("192.168.249.254"),
        "the gateway's DNS answers host.docker.internal with the host's alias:\n{out}"
    );
    assert_eq!(parts[1], "pong to ping\n", "{out}");
    let (line, peer) = server.join().unwrap();
    assert_eq!(line, "ping\n");
    assert!(
        peer.ip().is_loopback(),
        "NATed to the host's loopback: {peer}"
    );
    assert_eq!(parts[2], "nameserver 192.168.249.1\n", "{out}");
    for entry in [
        "192.168.249.254\thost.docker.internal",
        "192.168.249.254\thost.berth.internal",
        "10.1.2.3\tdb.example",
    ] {
        assert!(parts[3].contains(entry), "/etc/hosts lacks {entry}:\n{out}");
    }
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn a_published_port_serves_the_host_until_stop_and_conflicts_fail_cleanly() {
    let port = free_port();
    let publish = format!("{port}:80");
    let id = ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-httpd > /www/index.html && exec httpd -f -p 80 -h /www",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    // The host listener is there from the start; httpd may take a moment.
    let started = Instant::now();
    let answer = loop {
        match http_get(port) {
            Ok(a) if a.contains("hello-from-httpd") => break a,
            other if started.elapsed() > Duration::from_secs(90) => {
                panic!("no answer on port {port}: {other:?}\n{}", diagnostics())
            }
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    };
    assert!(answer.starts_with("HTTP/1."), "{answer}");
    eprintln!(
        "published port answered {:.1}s after run -d returned",
        started.elapsed().as_secs_f64()
    );

    assert_eq!(ok(&["port", "web"]), format!("80/tcp -> 0.0.0.0:{port}\n"));
    let ps = ok(&["ps"]);
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    let inspect: serde_json::Value = serde_json::from_str(&ok(&["inspect", "web"])).unwrap();
    let net = &inspect[0]["NetworkSettings"];
    assert_eq!(net["IPAddress"], "192.168.249.2", "{net}");
    assert_eq!(net["Gateway"], "192.168.249.1", "{net}");
    assert_eq!(
        net["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string(),
        "{net}"
    );
    // The container shares the VM's network namespace: it sees eth0.
    let links = ok(&["exec", "web", "ls", "/sys/class/net"]);
    assert!(
        links.split_whitespace().any(|l| l == "eth0"),
        "eth0 in the container: {links}"
    );

    // The port is taken: a second container fails with 125, names the port, and leaves
    // nothing running.
    let out = berth(&["run", "--name", "clash", "-p", &publish, IMAGE, "true"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert!(
        err.contains(&port.to_string()),
        "the error names the port: {err}"
    );
    let clash: serde_json::Value = serde_json::from_str(&ok(&["inspect", "clash"])).unwrap();
    assert_eq!(clash[0]["State"]["Running"], false, "{clash}");
    assert!(
        clash[0]["State"]["VmmPid"].is_null(),
        "no VMM left: {clash}"
    );
    assert!(!ok(&["ps"]).contains("clash"));
    ok(&["rm", "clash"]);
    assert!(
        http_get(port).unwrap().contains("hello-from-httpd"),
        "web still serves"
    );

    ok(&["stop", "-t", "2", "web"]);
    let refused = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(2),
    );
    assert!(refused.is_err(), "the port is closed after stop");
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("the port is free again after stop");
    assert_eq!(
        ok(&["port", "web"]),
        "",
        "a stopped container publishes nothing"
    );
    ok(&["rm", "web"]);
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn network_none_has_only_loopback_and_bad_flags_exit_125() {
    let out = ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "ls",
        "/sys/class/net",
    ]);
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["lo"],
        "only the loopback, no eth0 and no fallback tunnels: {out}"
    );
    for (args, says) in [
        (
            &["run", "--rm", "--network", "mynet", IMAGE, "true"][..],
            "mynet",
        ),
        (&["run", "--rm", "-p", "80:http", IMAGE, "true"], "80:http"),
        (
            &["run", "--rm", "--add-host", "nocolon", IMAGE, "true"],
            "nocolon",
        ),
    ] {
        let out = berth(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// The test initramfs's `berth-guest-probe` (a static binary), copied into `dir`: it
/// serves and sends UDP, which busybox cannot.
fn guest_probe(dir: &std::path::Path) -> std::path::PathBuf {
    let initramfs = berth_tests::required_path("BERTH_TEST_INITRAMFS");
    let probe = dir.join("berth-guest-probe");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc '{}' | cpio -i --quiet --to-stdout bin/berth-guest-probe > '{}' && chmod 755 '{}'",
            initramfs.display(),
            probe.display(),
            probe.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::metadata(&probe).unwrap().len() > 0);
    probe
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
/// Also: a UDP port published to the host (`-p HOST:CONTAINER/udp`).
fn containers_on_a_user_network_reach_each_other_by_name_both_ways() {
    let tools = tempfile::tempdir().unwrap();
    guest_probe(tools.path());
    let tools_mount = format!("{}:/tools:ro", tools.path().display());
    let udp_port = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let udp_publish = format!("127.0.0.1:{udp_port}:5300/udp");
    let id = ok(&["network", "create", "--subnet", "10.89.77.0/24", "appnet"]);
    assert_eq!(id.trim().len(), 64, "{id}");
    assert!(ok(&["network", "ls"]).contains("10.89.77.0/24"));
    // Two servers, each serving its own page over TCP; web also echoes UDP.
    for (name, extra) in [
        ("web", "/tools/berth-guest-probe udp-echo-server 5300 & "),
        ("api", ""),
    ] {
        let script = format!(
            "{extra}mkdir -p /www && echo hello-from-{name} > /www/index.html && exec httpd -f -p 80 -h /www"
        );
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "appnet",
            "-v",
            &tools_mount,
        ];
        if name == "web" {
            args.extend(["--network-alias", "www", "-p", &udp_publish]);
        }
        args.extend([IMAGE, "sh", "-c", &script]);
        ok(&args);
    }
    let address = |name: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(&ok(&["inspect", name])).unwrap();
        v[0]["NetworkSettings"]["IPAddress"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (web_ip, api_ip) = (address("web"), address("api"));
    assert_eq!(
        (web_ip.as_str(), api_ip.as_str()),
        ("10.89.77.2", "10.89.77.3")
    );

    // By name, by alias and by address, in both directions, once httpd is up. (busybox
    // nc, since the static busybox's wget crashes.)
    let fetch = |from: &str, host: &str| {
        let get = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {host} 80");
        berth(&["exec", from, "sh", "-c", &get])
    };
    let started = Instant::now();
    while !text(&fetch("api", "web").stdout).contains("hello-from-web") {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "api never reached web by name\n{}",
            diagnostics()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for (from, url, want) in [
        ("api", "www".to_string(), "hello-from-web"),
        ("api", web_ip.clone(), "hello-from-web"),
        ("web", "api".to_string(), "hello-from-api"),
    ] {
        let out = fetch(from, &url);
        assert!(
            text(&out.stdout).contains(want),
            "{from} -> {url}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    // The gateway's DNS names the other container.
    let logs = ok(&["exec", "web", "sh", "-c", "nslookup api 2>&1; hostname"]);
    assert!(logs.contains(&api_ip), "web resolves api: {logs}");
    // UDP both ways: a datagram from api to web's echo server, and the answer back.
    let udp = ok(&[
        "exec",
        "api",
        "/tools/berth-guest-probe",
        "udp-send",
        &web_ip,
        "5300",
        "hi-udp",
    ]);
    assert_eq!(udp, "echo: hi-udp", "UDP round trip between containers");
    // And web's echo server published to the host over UDP.
    let client = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .send_to(b"hi-from-host", (Ipv4Addr::LOCALHOST, udp_port))
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = client
        .recv_from(&mut buf)
        .expect("the published UDP port answers");
    assert_eq!(&buf[..n], b"echo: hi-from-host");
    assert_eq!(from.port(), udp_port);
    assert_eq!(
        ok(&["port", "web", "5300/udp"]),
        format!("127.0.0.1:{udp_port}\n")
    );

    // In use, the network stays; without containers it goes, folder and all.
    let busy = berth(&["network", "rm", "appnet"]);
    assert!(!busy.status.success());
    assert!(
        text(&busy.stderr).contains("in use"),
        "{}",
        text(&busy.stderr)
    );
    ok(&["rm", "-f", "web", "api"]);
    let out = berth(&["network", "inspect", "appnet"]);
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Gateway"], "10.89.77.1");
    let net_id = inspect[0]["Id"].as_str().unwrap().to_string();
    ok(&["network", "rm", "appnet"]);
    assert_eq!(ok(&["network", "ls", "-q"]), "");
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| std::path::PathBuf::from(d).join("berth"))
        .unwrap_or_else(|| "/run/berth".into());
    assert!(
        !runtime.join("net").join(&net_id[..12]).exists(),
        "the network's folder went with it"
    );
}

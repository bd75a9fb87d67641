use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

use super::chunk::{self, Chunk, LogRecord, LogStream};
use super::*;

/// A minimal in-memory agent: answers the handshake, then each request with `answer`.
async fn fake_agent<S, F>(mut s: S, version: u32, answer: F)
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: Fn(Request) -> Result<Response, WireError>,
{
    let hello: Hello = read_frame(&mut s).await.unwrap().unwrap();
    assert_eq!(hello.magic, MAGIC);
    write_frame(
        &mut s,
        &HelloReply {
            version,
            agent: "test".into(),
            error: None,
        },
    )
    .await
    .unwrap();
    while let Some(f) = read_frame::<_, RequestFrame>(&mut s).await.unwrap() {
        let result = answer(f.request);
        write_frame(&mut s, &ResponseFrame { id: f.id, result })
            .await
            .unwrap();
    }
}

fn sample_create() -> CreateRequest {
    CreateRequest {
        id: "c1".into(),
        spec: spec::docker_spec(&spec::RunConfig {
            args: vec!["echo".into(), "hi".into()],
            env: vec!["A=1".into()],
            hostname: "c1".into(),
            memory_bytes: Some(64 << 20),
            cpus: Some(1.5),
            pids_limit: Some(100),
            ..Default::default()
        }),
        layers: vec![
            Source::Device {
                path: "/dev/vda".into(),
                fstype: Some("erofs".into()),
            },
            Source::Dir {
                path: "/layers/2".into(),
            },
            Source::Disk {
                serial: "berth-layers".into(),
                range: Some(ByteRange {
                    offset: 4096,
                    length: 8192,
                }),
                fstype: Some("erofs".into()),
            },
        ],
        scratch: Some(Source::Device {
            path: "/dev/vdc".into(),
            fstype: Some("ext4".into()),
        }),
        user: Some("nobody:nogroup".into()),
        stdio: StdioOptions {
            tty: true,
            open_stdin: true,
        },
        network: Some(NetworkConfig {
            address: "192.168.249.2".parse().unwrap(),
            prefix: 24,
            gateway: "192.168.249.1".parse().unwrap(),
            mtu: 1500,
            nameservers: vec!["192.168.249.1".parse().unwrap()],
            search: vec![],
        }),
        extra_hosts: vec![HostEntry {
            name: "db".into(),
            address: "10.0.0.5".parse().unwrap(),
        }],
        mounts: vec![
            ContainerMount {
                target: "/src".into(),
                read_only: true,
                source: MountSource::Share {
                    tag: "berth0".into(),
                },
            },
            ContainerMount {
                target: "/run".into(),
                read_only: false,
                source: MountSource::Tmpfs {
                    size_bytes: Some(1 << 20),
                    mode: Some(0o1777),
                    flags: vec!["noexec".into()],
                },
            },
        ],
    }
}

#[test]
fn every_request_round_trips_through_json() {
    let reqs = vec![
        Request::Ping,
        Request::Create(Box::new(sample_create())),
        Request::Start(ProcessRef::init("c1")),
        Request::Exec(Box::new(ExecRequest {
            container: "c1".into(),
            exec: "e1".into(),
            process: oci_spec::runtime::Process::default(),
            user: None,
            stdio: StdioOptions::default(),
        })),
        Request::Signal {
            process: ProcessRef::exec("c1", "e1"),
            signal: 15,
        },
        Request::Wait(ProcessRef::init("c1")),
        Request::List,
        Request::Delete {
            id: "c1".into(),
            force: true,
        },
        Request::Stats { id: "c1".into() },
        Request::ResizeTty {
            process: ProcessRef::init("c1"),
            rows: 24,
            cols: 80,
        },
        Request::Top { id: "c1".into() },
        Request::SetTime {
            unix_nanos: 1_700_000_000_000_000_000,
        },
        Request::Shutdown,
    ];
    for r in reqs {
        let f = RequestFrame { id: 7, request: r };
        let j = serde_json::to_vec(&f).unwrap();
        let back: RequestFrame = serde_json::from_slice(&j).unwrap();
        assert_eq!(back, f);
    }
}

#[test]
fn docker_spec_carries_limits_caps_and_paths() {
    let s = sample_create().spec;
    let linux = s.linux().as_ref().unwrap();
    let res = linux.resources().as_ref().unwrap();
    assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
    assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(150_000));
    assert_eq!(res.cpu().as_ref().unwrap().period(), Some(100_000));
    assert_eq!(res.pids().as_ref().unwrap().limit(), 100);
    assert!(linux
        .masked_paths()
        .as_ref()
        .unwrap()
        .contains(&"/proc/kcore".to_string()));
    let p = s.process().as_ref().unwrap();
    let caps = p.capabilities().as_ref().unwrap();
    assert_eq!(caps.bounding().as_ref().unwrap().len(), 14);
    assert!(!caps
        .bounding()
        .as_ref()
        .unwrap()
        .contains(&oci_spec::runtime::Capability::SysAdmin));
    assert!(p.env().as_ref().unwrap()[0].starts_with("PATH="));
    assert_eq!(s.root().as_ref().unwrap().readonly(), Some(false));
}

#[tokio::test]
async fn client_matches_concurrent_responses_by_id() {
    let (a, b) = duplex(1 << 16);
    tokio::spawn(fake_agent(b, PROTOCOL_VERSION, |r| match r {
        Request::Ping => Ok(Response::Info(AgentInfo {
            agent_version: "0.1".into(),
            protocol: PROTOCOL_VERSION,
            uptime_ms: 5,
            kernel: "6.1".into(),
            cgroup2: true,
            features: vec![FEATURE_NETWORK.into()],
        })),
        Request::Wait(p) if p.exec.as_deref() == Some("e1") => Ok(Response::Exited { code: 137 }),
        Request::Wait(_) => Ok(Response::Exited { code: 3 }),
        Request::Create(c) => Ok(Response::Created {
            pid: c.layers.len() as i32,
        }),
        Request::List => Ok(Response::Containers(vec![])),
        _ => Ok(Response::Ok),
    }));
    let c = Client::handshake(a).await.unwrap();
    assert_eq!(c.agent_version, "test");
    let (w1, w2, info, pid) = tokio::join!(
        c.wait(ProcessRef::init("c1")),
        c.wait(ProcessRef::exec("c1", "e1")),
        c.ping(),
        c.create(sample_create()),
    );
    assert_eq!(w1.unwrap(), 3);
    assert_eq!(w2.unwrap(), 137);
    assert_eq!(info.unwrap().uptime_ms, 5);
    assert_eq!(pid.unwrap(), 3, "the sample has three layers");
    c.signal(ProcessRef::init("c1"), 9).await.unwrap();
    assert!(c.list().await.unwrap().is_empty());
    // A response of the wrong shape is reported, not misread.
    assert!(matches!(
        c.stats("c1").await,
        Err(ClientError::Unexpected("stats"))
    ));
}

#[tokio::test]
async fn remote_errors_keep_kind_field_and_exit_code() {
    let (a, b) = duplex(1 << 16);
    tokio::spawn(fake_agent(b, PROTOCOL_VERSION, |r| match r {
        Request::Start(_) => Err(WireError::new(
            ErrorKind::ExecutableNotFound,
            "exec: \"nope\": executable file not found in $PATH",
        )),
        Request::Create(_) => Err(WireError {
            kind: ErrorKind::InvalidConfig,
            message: "process.args must not be empty".into(),
            field: Some("process.args".into()),
            errno: None,
        }),
        _ => Err(WireError::new(
            ErrorKind::NotExecutable,
            "permission denied",
        )),
    }));
    let c = Client::handshake(a).await.unwrap();
    match c.start(ProcessRef::init("x")).await {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.kind, ErrorKind::ExecutableNotFound);
            assert_eq!(e.exit_code(), 127);
            assert!(e.to_string().contains("executable file not found in $PATH"));
        }
        other => panic!("unexpected {other:?}"),
    }
    match c.create(sample_create()).await {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.field.as_deref(), Some("process.args"));
            assert_eq!(e.exit_code(), 125);
        }
        other => panic!("unexpected {other:?}"),
    }
    match c.wait(ProcessRef::init("x")).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.exit_code(), 126),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn version_mismatch_and_refusal_are_reported() {
    let (a, b) = duplex(4096);
    tokio::spawn(fake_agent(b, PROTOCOL_VERSION + 1, |_| Ok(Response::Ok)));
    assert!(matches!(
        Client::handshake(a).await,
        Err(ClientError::Version(v)) if v == PROTOCOL_VERSION + 1
    ));

    let (a, mut b) = duplex(4096);
    tokio::spawn(async move {
        let _: Hello = read_frame(&mut b).await.unwrap().unwrap();
        write_frame(
            &mut b,
            &HelloReply {
                version: PROTOCOL_VERSION,
                agent: "t".into(),
                error: Some(WireError::new(ErrorKind::NotFound, "no such container: c9")),
            },
        )
        .await
        .unwrap();
    });
    let r = client::open_stream(a, StreamTarget::Stdout(ProcessRef::init("c9"))).await;
    assert!(matches!(r, Err(ClientError::Refused(e)) if e.kind == ErrorKind::NotFound));
}

#[tokio::test]
async fn pending_calls_fail_when_the_agent_goes_away() {
    let (a, mut b) = duplex(4096);
    tokio::spawn(async move {
        let _: Hello = read_frame(&mut b).await.unwrap().unwrap();
        write_frame(
            &mut b,
            &HelloReply {
                version: PROTOCOL_VERSION,
                agent: "t".into(),
                error: None,
            },
        )
        .await
        .unwrap();
        let _: Option<RequestFrame> = read_frame(&mut b).await.unwrap();
        drop(b);
    });
    let c = Client::handshake(a).await.unwrap();
    assert!(matches!(
        c.wait(ProcessRef::init("c")).await,
        Err(ClientError::Closed)
    ));
    assert!(c.ping().await.is_err());
}

#[tokio::test]
async fn frames_reject_oversize_and_truncation() {
    let (mut a, mut b) = duplex(64);
    a.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
        .await
        .unwrap();
    assert!(matches!(
        read_frame::<_, Hello>(&mut b).await,
        Err(FrameError::TooLarge(_))
    ));
    let (mut a, mut b) = duplex(64);
    a.write_all(&[0, 0, 0, 10, b'{']).await.unwrap();
    drop(a);
    assert!(matches!(
        read_frame::<_, Hello>(&mut b).await,
        Err(FrameError::Truncated)
    ));
    let (a, mut b) = duplex(64);
    drop(a);
    assert!(read_frame::<_, Hello>(&mut b).await.unwrap().is_none());
}

#[tokio::test]
async fn vsock_connect_exchange() {
    let (mut a, mut b) = duplex(256);
    let server = tokio::spawn(async move {
        let mut line = Vec::new();
        loop {
            let mut c = [0u8];
            b.read_exact(&mut c).await.unwrap();
            if c[0] == b'\n' {
                break;
            }
            line.push(c[0]);
        }
        let port = parse_connect_line(std::str::from_utf8(&line).unwrap()).unwrap();
        b.write_all(format!("OK {}\nrest", port + 1000).as_bytes())
            .await
            .unwrap();
        b
    });
    assert_eq!(vsock_connect(&mut a, CONTROL_PORT).await.unwrap(), 2024);
    let mut rest = [0u8; 4];
    a.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"rest", "nothing after the OK line is swallowed");
    drop(server.await.unwrap());

    let (mut a, mut b) = duplex(256);
    tokio::spawn(async move {
        let mut buf = [0u8; 32];
        let _ = b.read(&mut buf).await;
        b.write_all(b"FAILURE\n").await.unwrap();
    });
    assert!(matches!(
        vsock_connect(&mut a, 5).await,
        Err(FrameError::Connect(_))
    ));
}

#[tokio::test]
async fn chunks_round_trip_and_carry_eof_and_errors() {
    let (mut a, mut b) = duplex(1 << 20);
    let data: Vec<u8> = (0..3 * chunk::MAX_CHUNK + 17).map(|i| i as u8).collect();
    let d2 = data.clone();
    let w = tokio::spawn(async move {
        let mut src = &d2[..];
        chunk::send_all(&mut src, &mut a).await.unwrap();
        let rec = LogRecord {
            stream: LogStream::Stderr,
            time_ns: 42,
            data: b"line\n".to_vec(),
        };
        chunk::write_chunk(&mut a, &Chunk::Log(rec)).await.unwrap();
        chunk::write_chunk(
            &mut a,
            &Chunk::Error(WireError::new(ErrorKind::System, "disk full")),
        )
        .await
        .unwrap();
    });
    let mut out = Vec::new();
    let n = chunk::receive_all(&mut b, &mut out).await.unwrap();
    assert_eq!(n as usize, data.len());
    assert_eq!(out, data);
    match chunk::read_chunk(&mut b).await.unwrap() {
        Some(Chunk::Log(r)) => {
            assert_eq!(r.stream, LogStream::Stderr);
            assert_eq!(r.time_ns, 42);
            assert_eq!(r.data, b"line\n");
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut sink = Vec::new();
    match chunk::receive_all(&mut b, &mut sink).await {
        Err(Ok(e)) => assert_eq!(e.message, "disk full"),
        other => panic!("unexpected {other:?}"),
    }
    w.await.unwrap();
    // A stream cut before End is an error, not a silent success.
    let (mut a, mut b) = duplex(64);
    chunk::write_chunk(&mut a, &Chunk::Data(b"abc".to_vec()))
        .await
        .unwrap();
    drop(a);
    assert!(matches!(
        chunk::receive_all(&mut b, &mut Vec::new()).await,
        Err(Err(FrameError::Truncated))
    ));
    // Hostile chunk lengths are refused before allocating.
    let (mut a, mut b) = duplex(64);
    a.write_all(&[0, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    assert!(matches!(
        chunk::read_chunk(&mut b).await,
        Err(FrameError::TooLarge(_))
    ));
}

#[test]
fn exit_codes_follow_docker() {
    assert_eq!(exit_code(Some(3), None), 3);
    assert_eq!(exit_code(None, Some(9)), 137);
}

#[test]
fn network_fields_are_additive_and_checked() {
    // A create request from a host before networking still decodes, with no network.
    let mut v = serde_json::to_value(sample_create()).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.remove("network");
    obj.remove("extra_hosts");
    let old: CreateRequest = serde_json::from_value(v).unwrap();
    assert_eq!(old.network, None);
    assert!(old.extra_hosts.is_empty());
    let info: AgentInfo = serde_json::from_str(
        r#"{"agent_version":"0","protocol":1,"uptime_ms":1,"kernel":"k","cgroup2":true}"#,
    )
    .unwrap();
    assert!(info.features.is_empty(), "an old agent lists no features");

    let good = sample_create().network.unwrap();
    good.validate().unwrap();
    let field = |n: NetworkConfig| n.validate().unwrap_err().field.unwrap();
    assert_eq!(
        field(NetworkConfig {
            prefix: 31,
            ..good.clone()
        }),
        "network.prefix"
    );
    assert_eq!(
        field(NetworkConfig {
            mtu: 10,
            ..good.clone()
        }),
        "network.mtu"
    );
    assert_eq!(
        field(NetworkConfig {
            nameservers: vec![],
            ..good.clone()
        }),
        "network.nameservers"
    );
    assert_eq!(
        field(NetworkConfig {
            search: vec!["a b".into()],
            ..good.clone()
        }),
        "network.search"
    );
    let host = |name: &str| HostEntry {
        name: name.into(),
        address: "10.0.0.1".parse().unwrap(),
    };
    validate_extra_hosts(&[host("db"), host("a.b-c")]).unwrap();
    let e = validate_extra_hosts(&[host("bad\nname")]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidConfig);
    assert!(validate_extra_hosts(&vec![host("x"); MAX_EXTRA_HOSTS + 1]).is_err());
}

#[test]
fn mounts_are_checked() {
    let share = |target: &str, tag: &str| ContainerMount {
        target: target.into(),
        read_only: false,
        source: MountSource::Share { tag: tag.into() },
    };
    validate_mounts(&sample_create().mounts).unwrap();
    for bad in [
        share("rel", "t0"),
        share("/a/../b", "t0"),
        share("/", "t0"),
        share("/a", ""),
        share("/a", "a/b"),
        share("/a", &"t".repeat(MAX_SHARE_TAG + 1)),
        ContainerMount {
            target: "/t".into(),
            read_only: false,
            source: MountSource::Tmpfs {
                size_bytes: None,
                mode: None,
                flags: vec!["remount".into()],
            },
        },
    ] {
        assert_eq!(
            validate_mounts(std::slice::from_ref(&bad))
                .unwrap_err()
                .kind,
            ErrorKind::InvalidConfig,
            "{bad:?}"
        );
    }
    assert!(validate_mounts(&vec![share("/a", "t"); MAX_MOUNTS + 1]).is_err());
}

#[test]
fn byte_ranges_are_whole_sectors_not_empty_and_do_not_overflow() {
    let r = |offset, length| ByteRange { offset, length };
    assert!(r(0, 512).is_valid());
    assert!(r(4096, 1 << 30).is_valid());
    assert!(!r(0, 0).is_valid());
    assert!(!r(100, 512).is_valid());
    assert!(!r(0, 1000).is_valid());
    assert!(!r(u64::MAX - 511, 1024).is_valid());
}

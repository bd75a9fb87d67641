//! The agent end to end on the host: the real binary on a Unix socket, driven by the
//! protocol crate's client, running busybox containers. Needs root (mounts, namespaces).
//!
//! Run by scripts/test.sh: `cargo test -p berth-agent --test agent -- --ignored`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use berth_protocol::chunk::{self, Chunk, LogStream};
use berth_protocol::spec::{docker_spec, RunConfig};
use berth_protocol::{
    client, Client, ClientError, ContainerStatus, CreateRequest, ErrorKind, ExecRequest,
    ProcessRef, Source, StdioOptions, StreamTarget,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

struct Agent {
    child: Child,
    sock: PathBuf,
    dir: tempfile::TempDir,
    layer: PathBuf,
}

impl Agent {
    fn start() -> Agent {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (mounts, namespaces); run it through scripts/test.sh"
        );
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("layer");
        berth_runtime::testsupport::busybox_rootfs(&layer).unwrap();
        let sock = dir.path().join("agent.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_berth-agent"))
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "agent did not listen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Agent {
            child,
            sock,
            dir,
            layer,
        }
    }

    async fn client(&self) -> Client {
        Client::handshake(UnixStream::connect(&self.sock).await.unwrap())
            .await
            .unwrap()
    }

    async fn stream(&self, t: StreamTarget) -> UnixStream {
        client::open_stream(UnixStream::connect(&self.sock).await.unwrap(), t)
            .await
            .unwrap()
    }

    fn create_req(&self, id: &str, args: &[&str], stdio: StdioOptions) -> CreateRequest {
        let mut spec = docker_spec(&RunConfig {
            args: args.iter().map(|s| s.to_string()).collect(),
            hostname: id.into(),
            tty: stdio.tty,
            ..Default::default()
        });
        // This host's root may not raise RLIMIT_NOFILE to docker's 524288.
        spec.process_mut().as_mut().unwrap().set_rlimits(None);
        CreateRequest {
            id: id.into(),
            spec,
            layers: vec![Source::Dir {
                path: self.layer.display().to_string(),
            }],
            scratch: Some(Source::Dir {
                path: self
                    .dir
                    .path()
                    .join(format!("scratch-{id}"))
                    .display()
                    .to_string(),
            }),
            user: None,
            stdio,
            network: None,
            extra_hosts: Vec::new(),
            mounts: Vec::new(),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn read_to_string(mut s: UnixStream) -> String {
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Runs a container in the foreground as `berth run -i` would: streams attached before
/// start, stdin fed and closed, output read to EOF, then the exit code.
async fn run(
    a: &Agent,
    c: &Client,
    id: &str,
    args: &[&str],
    input: &[u8],
) -> (i32, String, String) {
    let stdio = StdioOptions {
        tty: false,
        open_stdin: true,
    };
    c.create(a.create_req(id, args, stdio)).await.unwrap();
    let p = ProcessRef::init(id);
    let out = a.stream(StreamTarget::Stdout(p.clone())).await;
    let err = a.stream(StreamTarget::Stderr(p.clone())).await;
    let mut stdin = a.stream(StreamTarget::Stdin(p.clone())).await;
    c.start(p.clone()).await.unwrap();
    let mut input = input;
    chunk::send_all(&mut input, &mut stdin).await.unwrap();
    let (out, err) = tokio::join!(read_to_string(out), read_to_string(err));
    let code = c.wait(p).await.unwrap();
    (code, out, err)
}

fn mounts_under(p: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(p.to_str().unwrap()))
        .count()
}

#[tokio::test]
#[ignore = "needs root: run by scripts/test.sh"]
async fn run_stdio_exit_codes_and_cleanup() {
    let a = Agent::start();
    let c = a.client().await;
    let info = c.ping().await.unwrap();
    assert_eq!(info.protocol, berth_protocol::PROTOCOL_VERSION);
    // Outside a guest the agent leaves the host's clock alone.
    assert!(matches!(
        c.set_time_now().await,
        Err(ClientError::Remote(e)) if e.kind == ErrorKind::Unsupported
    ));

    let (code, out, err) = run(
        &a,
        &c,
        "c1",
        &["sh", "-c", "cat; echo oops >&2; hostname; exit 3"],
        b"piped in\n",
    )
    .await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (3, "piped in\nc1\n", "oops\n")
    );
    let list = c.list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].status, ContainerStatus::Stopped);
    assert_eq!(list[0].exit_code, Some(3));

    // Logs keep both streams, in records, with tail.
    let mut logs = a
        .stream(StreamTarget::Logs {
            container: "c1".into(),
            follow: false,
            tail: None,
        })
        .await;
    let mut recs = Vec::new();
    loop {
        match chunk::read_chunk(&mut logs).await.unwrap() {
            Some(Chunk::Log(r)) => recs.push((r.stream, String::from_utf8(r.data).unwrap())),
            Some(Chunk::End) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // Order within a stream is kept; between stdout and stderr it is not defined.
    let of = |s: LogStream| {
        recs.iter()
            .filter(|r| r.0 == s)
            .map(|r| r.1.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(LogStream::Stdout), vec!["piped in\n", "c1\n"]);
    assert_eq!(of(LogStream::Stderr), vec!["oops\n"]);
    let mut logs = a
        .stream(StreamTarget::Logs {
            container: "c1".into(),
            follow: false,
            tail: Some(1),
        })
        .await;
    match chunk::read_chunk(&mut logs).await.unwrap() {
        Some(Chunk::Log(r)) => assert_eq!(r.data, recs.last().unwrap().1.as_bytes()),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        chunk::read_chunk(&mut logs).await.unwrap(),
        Some(Chunk::End)
    );

    c.delete("c1", false).await.unwrap();
    assert!(c.list().await.unwrap().is_empty());

    // logs -f follows a running container until it exits.
    c.create(a.create_req(
        "f",
        &["sh", "-c", "echo a; sleep 0.3; echo b"],
        StdioOptions::default(),
    ))
    .await
    .unwrap();
    c.start(ProcessRef::init("f")).await.unwrap();
    let mut logs = a
        .stream(StreamTarget::Logs {
            container: "f".into(),
            follow: true,
            tail: None,
        })
        .await;
    let mut lines = Vec::new();
    loop {
        match chunk::read_chunk(&mut logs).await.unwrap() {
            Some(Chunk::Log(r)) => lines.push(String::from_utf8(r.data).unwrap()),
            Some(Chunk::End) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(lines, vec!["a\n", "b\n"]);
    assert_eq!(c.wait(ProcessRef::init("f")).await.unwrap(), 0);
    c.delete("f", false).await.unwrap();
    assert_eq!(mounts_under(a.dir.path()), 0);

    // docker's 127 for a missing command, typed on the wire.
    match c
        .create(a.create_req("c2", &["no-such-cmd"], StdioOptions::default()))
        .await
    {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.kind, ErrorKind::ExecutableNotFound);
            assert_eq!(e.exit_code(), 127);
            assert_eq!(
                e.message,
                "exec: \"no-such-cmd\": executable file not found in $PATH"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // A broken config names its field.
    let mut req = a.create_req("c3", &["true"], StdioOptions::default());
    req.spec
        .process_mut()
        .as_mut()
        .unwrap()
        .set_cwd("nope".into());
    match c.create(req).await {
        Err(ClientError::Remote(e)) => {
            assert_eq!(e.kind, ErrorKind::InvalidConfig);
            assert_eq!(e.field.as_deref(), Some("process.cwd"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(c.list().await.unwrap().is_empty());
}

#[tokio::test]
#[ignore = "needs root: run by scripts/test.sh"]
async fn exec_signal_top_copy_and_commit() {
    let a = Agent::start();
    let c = a.client().await;
    c.create(a.create_req("svc", &["sleep", "1000"], StdioOptions::default()))
        .await
        .unwrap();
    let init = ProcessRef::init("svc");
    let pid = c.start(init.clone()).await.unwrap();
    assert!(pid > 1);
    // A pending wait does not hold up the other requests on the same connection.
    let waiter = {
        let c = c.clone();
        let init = init.clone();
        tokio::spawn(async move { c.wait(init).await })
    };
    // exec with stdin, separate streams, its own exit code.
    c.exec(ExecRequest {
        container: "svc".into(),
        exec: "e1".into(),
        process: {
            let mut p = a
                .create_req(
                    "x",
                    &["sh", "-c", "read l; echo got $l; echo e >&2; exit 5"],
                    StdioOptions::default(),
                )
                .spec
                .process()
                .clone()
                .unwrap();
            p.set_rlimits(None);
            p
        },
        user: Some("alice".into()),
        stdio: StdioOptions {
            tty: false,
            open_stdin: true,
        },
    })
    .await
    .unwrap();
    let e1 = ProcessRef::exec("svc", "e1");
    let out = a.stream(StreamTarget::Stdout(e1.clone())).await;
    let err = a.stream(StreamTarget::Stderr(e1.clone())).await;
    let mut sin = a.stream(StreamTarget::Stdin(e1.clone())).await;
    c.start(e1.clone()).await.unwrap();
    chunk::send_all(&mut &b"line\n"[..], &mut sin)
        .await
        .unwrap();
    assert_eq!(read_to_string(out).await, "got line\n");
    assert_eq!(read_to_string(err).await, "e\n");
    assert_eq!(c.wait(e1).await.unwrap(), 5);

    let top = c.top("svc").await.unwrap();
    assert!(top.iter().any(|p| p.cmd == "sleep 1000"), "{top:?}");

    // cp in, then out.
    let mut tarball = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tarball);
        let mut h = tar::Header::new_gnu();
        h.set_size(6);
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &b"hello\n"[..]).unwrap();
        b.finish().unwrap();
    }
    let mut cin = a
        .stream(StreamTarget::CopyIn {
            container: "svc".into(),
            path: "/tmp".into(),
        })
        .await;
    chunk::send_all(&mut &tarball[..], &mut cin).await.unwrap();
    assert_eq!(chunk::read_chunk(&mut cin).await.unwrap(), Some(Chunk::End));
    let mut cout = a
        .stream(StreamTarget::CopyOut {
            container: "svc".into(),
            path: "/tmp/hello.txt".into(),
        })
        .await;
    let mut got = Vec::new();
    chunk::receive_all(&mut cout, &mut got).await.unwrap();
    let mut ar = tar::Archive::new(&got[..]);
    let mut e = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.path().unwrap().to_str().unwrap(), "hello.txt");
    let mut s = String::new();
    std::io::Read::read_to_string(&mut e, &mut s).unwrap();
    assert_eq!(s, "hello\n");
    assert_eq!(e.header().uid().unwrap(), 1000, "ownership kept by cp in");
    // Copying out of a missing path is a typed error, not a hang.
    let mut cout = a
        .stream(StreamTarget::CopyOut {
            container: "svc".into(),
            path: "/nope".into(),
        })
        .await;
    assert!(matches!(
        chunk::receive_all(&mut cout, &mut Vec::new()).await,
        Err(Ok(e)) if e.kind == ErrorKind::NotFound
    ));

    // commit: the upper dir as an OCI layer.
    let mut cm = a
        .stream(StreamTarget::Commit {
            container: "svc".into(),
        })
        .await;
    let mut layer = Vec::new();
    chunk::receive_all(&mut cm, &mut layer).await.unwrap();
    let names: Vec<String> = tar::Archive::new(&layer[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&"tmp/hello.txt".to_string()), "{names:?}");

    // Running: delete without force is refused; SIGKILL gives 137.
    assert!(c.delete("svc", false).await.is_err());
    assert!(!waiter.is_finished());
    c.signal(init.clone(), 9).await.unwrap();
    assert_eq!(waiter.await.unwrap().unwrap(), 137);
    assert_eq!(c.wait(init).await.unwrap(), 137);
    c.delete("svc", false).await.unwrap();
    assert_eq!(mounts_under(a.dir.path()), 0);
}

#[tokio::test]
#[ignore = "needs root: run by scripts/test.sh"]
async fn tty_resize_and_big_output() {
    let a = Agent::start();
    let c = a.client().await;
    let stdio = StdioOptions {
        tty: true,
        open_stdin: true,
    };
    c.create(a.create_req("t", &["sh"], stdio)).await.unwrap();
    let p = ProcessRef::init("t");
    c.resize_tty(p.clone(), 40, 132).await.unwrap();
    let out = a.stream(StreamTarget::Stdout(p.clone())).await;
    let mut sin = a.stream(StreamTarget::Stdin(p.clone())).await;
    c.start(p.clone()).await.unwrap();
    chunk::write_chunk(
        &mut sin,
        &Chunk::Data(b"stty size; [ -t 0 ] && echo TTY; exit 4\n".to_vec()),
    )
    .await
    .unwrap();
    sin.flush().await.unwrap();
    let text = read_to_string(out).await;
    assert!(text.contains("40 132"), "{text:?}");
    assert!(text.contains("TTY"), "{text:?}");
    assert_eq!(c.wait(p).await.unwrap(), 4);
    c.delete("t", true).await.unwrap();

    // 100 MB through stdout, streamed.
    c.create(a.create_req(
        "big",
        &["sh", "-c", "head -c 100000000 /dev/zero"],
        StdioOptions::default(),
    ))
    .await
    .unwrap();
    let p = ProcessRef::init("big");
    let mut out = a.stream(StreamTarget::Stdout(p.clone())).await;
    let t = Instant::now();
    c.start(p.clone()).await.unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = out.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
    }
    eprintln!("100 MB of stdout in {:?}", t.elapsed());
    assert_eq!(n, 100_000_000);
    assert_eq!(c.wait(p).await.unwrap(), 0);
    c.delete("big", true).await.unwrap();

    // Shutdown ends a host-mode agent cleanly.
    c.shutdown().await.unwrap();
    let mut a = a;
    let t = Instant::now();
    loop {
        if let Some(st) = a.child.try_wait().unwrap() {
            assert!(st.success());
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "agent did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! Drives the API over a real Unix socket, with an in-memory fake backend:
//! raw HTTP for the wire details, and the real `docker` CLI for the whole
//! flow (`docker run`, `exec`, `logs`, `ps --filter`, ...).

mod fake;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use berth_docker_api::{serve_listener, Backend, Limits, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;

/// A running server on a temporary socket.
struct Harness {
    dir: tempfile::TempDir,
    sock: PathBuf,
    fake: fake::Fake,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("docker.sock");
        let fake = fake::Fake::new();
        let backend: Arc<dyn Backend> = Arc::new(fake.clone());
        let server = Server::bind(&sock).await.unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(backend, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Harness {
            dir,
            sock,
            fake,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
        assert!(!self.sock.exists(), "the socket is removed on shutdown");
    }
}

/// A parsed HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

type Headers = Vec<(String, String)>;

/// (status, headers, where the body starts) once the head is complete.
fn split_head(buf: &[u8]) -> Option<(u16, Headers, usize)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Some((status, headers, end + 4))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
}

/// One request on a fresh connection (`Connection: close`), read to EOF.
async fn http(
    sock: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = UnixStream::connect(sock).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let (mut rd, mut wr) = s.split();
    // The server may answer (413) and close before it has read the whole
    // body, so write and read at once and let writing fail.
    let write = async {
        let _ = wr.write_all(req.as_bytes()).await;
        let _ = wr.write_all(body).await;
    };
    let mut buf = Vec::new();
    let read = rd.read_to_end(&mut buf);
    tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(write, read).1
    })
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no answer within 20 s"))
    .unwrap();
    let (status, headers, at) = split_head(&buf).expect("an HTTP head");
    let raw = &buf[at..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(raw) } else { raw.to_vec() };
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(sock: &Path, path: &str) -> Answer {
    http(sock, "GET", path, &[], b"").await
}

async fn post_json(sock: &Path, path: &str, body: &str) -> Answer {
    http(
        sock,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await
}

/// Polls `cond` every 10 ms for up to 10 s.
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Splits a multiplexed stream into (stream, payload) frames.
fn frames(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let len = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
        assert_eq!(&b[1..4], &[0, 0, 0], "frame header padding");
        out.push((b[0], b[8..8 + len].to_vec()));
        b = &b[8 + len..];
    }
    assert!(b.is_empty(), "trailing partial frame");
    out
}

async fn create(sock: &Path, name: &str, body: &str) -> String {
    let a = post_json(sock, &format!("/v1.51/containers/create?name={name}"), body).await;
    assert_eq!(a.status, 201, "{}", a.text());
    a.json()["Id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn ping_version_errors_and_routing() {
    let h = Harness::start().await;
    let s = &h.sock;
    for path in ["/_ping", "/v1.51/_ping", "/v1.24/_ping"] {
        let a = get(s, path).await;
        assert_eq!((a.status, a.text().as_str()), (200, "OK"), "{path}");
        assert_eq!(a.header("Api-Version"), Some("1.51"));
        assert_eq!(a.header("Ostype"), Some("linux"));
        assert_eq!(a.header("Docker-Experimental"), Some("false"));
        assert_eq!(a.header("Builder-Version"), Some("1"));
        assert_eq!(a.header("Pragma"), Some("no-cache"));
        assert!(a.header("Cache-Control").unwrap().contains("no-cache"));
    }
    let a = http(s, "HEAD", "/_ping", &[], b"").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("Api-Version"), Some("1.51"));

    let v = get(s, "/version").await.json();
    assert_eq!(v["ApiVersion"], "1.51");
    assert_eq!(v["MinAPIVersion"], "1.24");
    assert_eq!(v["Version"], "0.1.0-fake");
    assert_eq!(v["Os"], "linux");
    assert_eq!(v["Components"][0]["Name"], "Engine");
    let i = get(s, "/v1.41/info").await.json();
    assert_eq!(i["NCPU"], 2);
    assert_eq!(i["OSType"], "linux");
    assert_eq!(i["Images"], 2);

    let a = get(s, "/v1.12/info").await;
    assert_eq!(a.status, 400);
    assert!(a.json()["message"].as_str().unwrap().contains("too old"));
    let a = get(s, "/nope/such").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["message"], "page not found: GET /nope/such");
    let a = http(s, "PATCH", "/v1.51/containers/json", &[], b"").await;
    assert_eq!(a.status, 404);

    // Malformed and unsupported create bodies.
    let a = post_json(s, "/containers/create", "{nope").await;
    assert_eq!(a.status, 400);
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid JSON"));
    let a = post_json(
        s,
        "/containers/create",
        r#"{"Image":"busybox","HostConfig":{"Mounts":[{"Type":"bind","Target":"/c"}]}}"#,
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json()["message"],
        r#"invalid mount config for type "bind": field Source must not be empty"#
    );
    let a = post_json(
        s,
        "/containers/create",
        r#"{"Image":"busybox","HostConfig":{"Privileged":true}}"#,
    )
    .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json()["message"],
        "berth does not support HostConfig.Privileged yet"
    );
    let a = post_json(s, "/containers/create", r#"{"Image":"nosuch"}"#).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.json()["message"], "No such image: nosuch");
    let big = format!(r#"{{"Image":"busybox","Env":["{}"]}}"#, "x".repeat(2 << 20));
    let a = post_json(s, "/containers/create", &big).await;
    assert_eq!(a.status, 413);
    let a = get(s, "/containers/nosuch/json").await;
    assert_eq!(
        (a.status, a.json()["message"].as_str()),
        (404, Some("No such container: nosuch"))
    );
    let a = get(
        s,
        "/containers/json?filters=%7B%22bogus%22%3A%5B%22x%22%5D%7D",
    )
    .await;
    assert_eq!(a.status, 400);
    let a = get(s, "/networks").await;
    assert_eq!((a.status, a.text().trim()), (200, "[]"));
    let a = post_json(s, "/networks/create", r#"{"Name":"x","Driver":"macvlan"}"#).await;
    assert_eq!(a.status, 400);
    let a = post_json(s, "/networks/create", r#"{"Name":"x"}"#).await;
    assert_eq!(a.status, 201);
    let a = post_json(s, "/networks/create", r#"{"Name":"x"}"#).await;
    assert_eq!(a.status, 409, "a taken name");
    let a = get(s, "/networks/nosuch").await;
    assert_eq!(a.status, 404);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_with_the_docker_cli() {
    let h = Harness::start().await;
    let id = docker_ok(
        &h,
        &[
            "network",
            "create",
            "--subnet",
            "10.89.5.0/24",
            "--label",
            "k=v",
            "appnet",
        ],
    )
    .await;
    assert_eq!(id.trim().len(), 64, "{id}");
    let ls = docker_ok(&h, &["network", "ls", "--format", "{{.Name}} {{.Driver}}"]).await;
    assert_eq!(ls, "appnet bridge\n");
    let r = docker(&h, &["network", "create", "-d", "overlay", "ov"], None).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("bridge driver"), "{}", r.stderr);
    // A container created on the network, with an alias, shows it in inspect.
    docker_ok(
        &h,
        &[
            "create",
            "--name",
            "web",
            "--network",
            "appnet",
            "--network-alias",
            "www",
            "busybox",
        ],
    )
    .await;
    let nets = docker_ok(
        &h,
        &[
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            "web",
        ],
    )
    .await;
    let nets: serde_json::Value = serde_json::from_str(&nets).unwrap();
    assert_eq!(nets["appnet"]["Aliases"][0], "www", "{nets}");
    assert_eq!(nets["appnet"]["IPAddress"], "10.89.1.2", "{nets}");
    let shown = docker_ok(
        &h,
        &[
            "network",
            "inspect",
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}}{{end}} {{len .Containers}}",
            "appnet",
        ],
    )
    .await;
    assert_eq!(shown.trim(), "10.89.5.0/24 1");
    let r = docker(&h, &["network", "rm", "appnet"], None).await;
    assert_ne!(r.code, 0, "in use");
    docker_ok(&h, &["network", "disconnect", "appnet", "web"]).await;
    docker_ok(
        &h,
        &["network", "connect", "--alias", "w2", "appnet", "web"],
    )
    .await;
    docker_ok(&h, &["rm", "web"]).await;
    assert_eq!(
        docker_ok(&h, &["network", "prune", "-f"]).await,
        "Deleted Networks:\nappnet\n\n"
    );
    assert_eq!(docker_ok(&h, &["network", "ls", "-q"]).await, "");
    h.shutdown().await;
}

#[tokio::test]
async fn run_flow_over_raw_http() {
    let h = Harness::start().await;
    let s = &h.sock;
    let id = create(
        s,
        "echoer",
        r#"{"Image":"busybox","Cmd":["echo","hi"],"Labels":{"x":"y"}}"#,
    )
    .await;

    // Attach (upgraded) before start, as `docker run` does.
    let mut att = UnixStream::connect(s).await.unwrap();
    att.write_all(
        format!(
            "POST /v1.51/containers/{id}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while split_head(&head).is_none() {
        let mut b = [0u8; 1];
        assert_eq!(
            att.read(&mut b).await.unwrap(),
            1,
            "attach answered before start"
        );
        head.push(b[0]);
    }
    let (status, headers, _) = split_head(&head).unwrap();
    assert_eq!(status, 101);
    let hv = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        hv("Content-Type").as_deref(),
        Some("application/vnd.docker.multiplexed-stream")
    );
    assert_eq!(hv("Upgrade").as_deref(), Some("tcp"));

    // Wait (next-exit): headers come before start.
    let mut wait = UnixStream::connect(s).await.unwrap();
    wait.write_all(
        format!("POST /containers/{id}/wait?condition=next-exit HTTP/1.1\r\nHost: d\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut wbuf = Vec::new();
    while split_head(&wbuf).is_none() {
        let mut b = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), wait.read(&mut b))
            .await
            .expect("wait headers are sent before the container exits")
            .unwrap();
        assert!(n > 0);
        wbuf.extend_from_slice(&b[..n]);
    }
    assert_eq!(split_head(&wbuf).unwrap().0, 200);

    let a = http(s, "POST", &format!("/containers/{id}/start"), &[], b"").await;
    assert_eq!(a.status, 204, "{}", a.text());

    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), att.read_to_end(&mut out))
        .await
        .expect("attach ends when the output does")
        .unwrap();
    assert_eq!(frames(&out), vec![(1u8, b"hi\n".to_vec())]);

    tokio::time::timeout(Duration::from_secs(10), wait.read_to_end(&mut wbuf))
        .await
        .unwrap()
        .unwrap();
    let (_, _, at) = split_head(&wbuf).unwrap();
    let body: serde_json::Value = serde_json::from_slice(&dechunk(&wbuf[at..])).unwrap();
    assert_eq!(body, serde_json::json!({"StatusCode": 0, "Error": null}));

    // Starting again is fine; a second start while running would be 304.
    let insp = get(s, &format!("/containers/{id}/json")).await.json();
    assert_eq!(insp["State"]["Status"], "exited");
    assert_eq!(insp["Name"], "/echoer");
    assert_eq!(insp["Config"]["Cmd"], serde_json::json!(["echo", "hi"]));

    // Logs: multiplexed, with timestamps.
    let a = get(
        s,
        &format!("/containers/{id}/logs?stdout=1&stderr=1&timestamps=1"),
    )
    .await;
    assert_eq!(a.status, 200);
    let f = frames(&a.body);
    assert_eq!(f.len(), 1);
    let line = String::from_utf8(f[0].1.clone()).unwrap();
    assert!(line.ends_with("Z hi\n") && line.len() == 31 + 3, "{line:?}");

    // List with filters, both forms.
    let q = |f: &str| {
        format!(
            "/containers/json?all=1&filters={}",
            f.replace('"', "%22")
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('[', "%5B")
                .replace(']', "%5D")
                .replace(':', "%3A")
        )
    };
    let l = get(s, &q(r#"{"label":["x=y"]}"#)).await.json();
    assert_eq!(l.as_array().unwrap().len(), 1);
    assert_eq!(l[0]["Names"][0], "/echoer");
    assert_eq!(l[0]["State"], "exited");
    assert!(l[0]["Status"].as_str().unwrap().starts_with("Exited (0)"));
    let l = get(s, &q(r#"{"label":{"x=z":true}}"#)).await.json();
    assert_eq!(l.as_array().unwrap().len(), 0);
    let l = get(s, "/containers/json").await.json();
    assert_eq!(
        l.as_array().unwrap().len(),
        0,
        "only running ones without all"
    );

    // A second container writing to stderr, attached without upgrade.
    let id2 = create(
        s,
        "errer",
        r#"{"Image":"busybox","Cmd":["sh","-c","echo oops >&2"]}"#,
    )
    .await;
    let attach = {
        let s = s.clone();
        let id2 = id2.clone();
        tokio::spawn(async move {
            http(
                &s,
                "POST",
                &format!("/containers/{id2}/attach?stream=1&stdout=1&stderr=1"),
                &[],
                b"",
            )
            .await
        })
    };
    wait_until("the attach to register", || h.fake.has_attacher(&id2)).await;
    assert_eq!(
        http(s, "POST", &format!("/containers/{id2}/start"), &[], b"")
            .await
            .status,
        204
    );
    let a = attach.await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("Content-Type"),
        Some("application/vnd.docker.multiplexed-stream")
    );
    assert_eq!(frames(&a.body), vec![(2u8, b"oops\n".to_vec())]);

    // Remove.
    let a = http(s, "DELETE", &format!("/containers/{id}"), &[], b"").await;
    assert_eq!(a.status, 204);
    assert!(!h.fake.exists(&id));
    h.shutdown().await;
}

#[tokio::test]
async fn exec_archive_stats_over_raw_http() {
    let h = Harness::start().await;
    let s = &h.sock;
    let id = create(s, "sleeper", r#"{"Image":"busybox","Cmd":["sleep","100"]}"#).await;
    assert_eq!(
        http(s, "POST", &format!("/containers/{id}/start"), &[], b"")
            .await
            .status,
        204
    );
    assert_eq!(
        http(s, "POST", &format!("/containers/{id}/start"), &[], b"")
            .await
            .status,
        304
    );

    // Exec, hijacked, with stdin through cat.
    let a = post_json(
        s,
        &format!("/containers/{id}/exec"),
        r#"{"AttachStdin":true,"AttachStdout":true,"AttachStderr":true,"Cmd":["cat"]}"#,
    )
    .await;
    assert_eq!(a.status, 201);
    let exec_id = a.json()["Id"].as_str().unwrap().to_string();
    let mut c = UnixStream::connect(s).await.unwrap();
    let body = r#"{"Detach":false,"Tty":false}"#;
    c.write_all(format!("POST /exec/{exec_id}/start HTTP/1.1\r\nHost: d\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while split_head(&head).is_none() {
        let mut b = [0u8; 1];
        assert_eq!(c.read(&mut b).await.unwrap(), 1);
        head.push(b[0]);
    }
    assert_eq!(split_head(&head).unwrap().0, 101);
    c.write_all(b"ping\n").await.unwrap();
    c.shutdown().await.unwrap(); // half-close: cat sees EOF
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(frames(&out), vec![(1u8, b"ping\n".to_vec())]);
    let e = get(s, &format!("/exec/{exec_id}/json")).await.json();
    assert_eq!(e["ExitCode"], 0);
    assert_eq!(e["Running"], false);
    assert_eq!(e["ContainerID"], id.as_str());
    assert_eq!(e["ProcessConfig"]["entrypoint"], "cat");

    // Archive.
    let a = http(
        s,
        "HEAD",
        &format!("/containers/{id}/archive?path=/etc"),
        &[],
        b"",
    )
    .await;
    assert_eq!(a.status, 200);
    let stat = base64::engine::general_purpose::STANDARD
        .decode(a.header("X-Docker-Container-Path-Stat").unwrap())
        .unwrap();
    let stat: serde_json::Value = serde_json::from_slice(&stat).unwrap();
    assert_eq!(stat["name"], "etc");
    assert_eq!(stat["mode"], (1u64 << 31) | 0o755);
    let a = get(s, &format!("/containers/{id}/archive?path=/hello.txt")).await;
    assert_eq!((a.status, a.text().as_str()), (200, "fake-tar"));
    assert_eq!(a.header("Content-Type"), Some("application/x-tar"));
    let a = http(
        s,
        "PUT",
        &format!("/containers/{id}/archive?path=/etc"),
        &[("Content-Type", "application/x-tar")],
        &[7u8; 5000],
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(h.fake.uploaded(&id), 5000);
    let a = http(
        s,
        "HEAD",
        &format!("/containers/{id}/archive?path=/missing"),
        &[],
        b"",
    )
    .await;
    assert_eq!(a.status, 404);

    // Stats, one shot, and top.
    let st = get(
        s,
        &format!("/containers/{id}/stats?stream=false&one-shot=true"),
    )
    .await
    .json();
    assert_eq!(st["name"], "/sleeper");
    assert_eq!(st["cpu_stats"]["online_cpus"], 2);
    assert_eq!(st["memory_stats"]["limit"], 1u64 << 30);
    let t = get(s, &format!("/containers/{id}/top")).await.json();
    assert_eq!(t["Titles"][0], "PID");

    // Stop: waits for the exit; then kill is a conflict.
    assert_eq!(
        http(s, "POST", &format!("/containers/{id}/stop?t=5"), &[], b"")
            .await
            .status,
        204
    );
    let i = get(s, &format!("/containers/{id}/json")).await.json();
    assert_eq!(i["State"]["ExitCode"], 137);
    assert_eq!(
        http(s, "POST", &format!("/containers/{id}/kill"), &[], b"")
            .await
            .status,
        409
    );
    h.shutdown().await;
}

#[tokio::test]
async fn images_and_events_over_raw_http() {
    let h = Harness::start().await;
    let s = &h.sock;
    let a = get(s, "/v1.51/images/localhost:5000/foo/bar:tag/json").await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["RepoTags"][0], "localhost:5000/foo/bar:tag");
    assert_eq!(a.json()["RootFS"]["Type"], "layers");
    let l = get(s, "/images/json").await.json();
    assert_eq!(l[0]["RepoTags"][0], "busybox:latest");

    // Pull: progress lines, then the image exists.
    let auth =
        base64::engine::general_purpose::URL_SAFE.encode(br#"{"username":"u","password":"p"}"#);
    let a = http(
        s,
        "POST",
        "/images/create?fromImage=alpine&tag=3",
        &[("X-Registry-Auth", &auth)],
        b"",
    )
    .await;
    assert_eq!(a.status, 200);
    let lines: Vec<serde_json::Value> = a
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["status"], "Pulling from alpine:3");
    assert_eq!(lines[1]["progressDetail"]["total"], 10);
    assert_eq!(get(s, "/images/alpine:3/json").await.status, 200);
    // An error before any progress is a status; after, an errorDetail line.
    let a = http(
        s,
        "POST",
        "/images/create?fromImage=nonexistent&tag=latest",
        &[],
        b"",
    )
    .await;
    assert_eq!(a.status, 404);
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("pull access denied"));
    let a = http(s, "POST", "/images/create?fromImage=broken", &[], b"").await;
    assert_eq!(a.status, 200);
    let last: serde_json::Value = serde_json::from_str(a.text().lines().last().unwrap()).unwrap();
    assert_eq!(last["errorDetail"]["message"], "unexpected EOF");

    // Tag, history, save, load, delete.
    assert_eq!(
        http(s, "POST", "/images/busybox/tag?repo=mine&tag=v1", &[], b"")
            .await
            .status,
        201
    );
    let hist = get(s, "/images/mine:v1/history").await.json();
    assert!(hist[0]["CreatedBy"].as_str().unwrap().contains("CMD"));
    let a = get(s, "/images/get?names=busybox&names=mine:v1").await;
    assert_eq!(a.text(), "tar-of:busybox,mine:v1");
    let a = http(
        s,
        "POST",
        "/images/load",
        &[("Content-Type", "application/x-tar")],
        b"tarbytes",
    )
    .await;
    assert_eq!(
        a.json(),
        serde_json::json!({"stream": "Loaded image: loaded:latest\n"})
    );
    let a = http(s, "DELETE", "/images/localhost:5000/foo/bar:tag", &[], b"").await;
    assert_eq!(
        a.json(),
        serde_json::json!([{"Untagged":"localhost:5000/foo/bar:tag"},{"Deleted":"sha256:5a5a"}])
    );

    // Events: filtered to containers, ends at `until`.
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let ev = {
        let s = s.clone();
        tokio::spawn(async move {
            get(
                &s,
                &format!("/events?until={until}&filters=%7B%22type%22%3A%5B%22container%22%5D%7D"),
            )
            .await
        })
    };
    wait_until("the event stream", || h.fake.event_subscribers() > 0).await;
    let id = create(s, "evented", r#"{"Image":"busybox","Cmd":["echo"]}"#).await;
    http(s, "POST", "/images/busybox/tag?repo=other", &[], b"").await;
    let a = ev.await.unwrap();
    let events: Vec<serde_json::Value> = a
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["Type"], "container");
    assert_eq!(events[0]["Action"], "create");
    assert_eq!(events[0]["Actor"]["ID"], id.as_str());
    assert_eq!(events[0]["Actor"]["Attributes"]["name"], "evented");
    assert_eq!(events[0]["scope"], "local");
    h.shutdown().await;
}

// ---- the real docker CLI ----

fn docker_path() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_TEST_DOCKER") {
        return p.into();
    }
    for p in ["/usr/bin/docker", "/usr/local/bin/docker"] {
        if Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("the docker CLI is missing: looked at /usr/bin/docker and /usr/local/bin/docker (set BERTH_TEST_DOCKER)");
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn docker_as(
    sock: &Path,
    config: &Path,
    uid: Option<u32>,
    env: &[(&str, &str)],
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Run {
    let mut cmd = tokio::process::Command::new(docker_path());
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", config)
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .env("DOCKER_CONFIG", config)
        .env("DOCKER_CLI_HINTS", "false")
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let mut child = cmd.spawn().expect("spawning docker");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().unwrap();
        w.write_all(input).await.unwrap();
        drop(w);
    }
    let out = match tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await {
        Ok(o) => o.unwrap(),
        Err(_) => panic!("docker {args:?} did not finish within 60 s"),
    };
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn docker(h: &Harness, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let cfg = h.dir.path().join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    docker_as(&h.sock, &cfg, None, &[], args, stdin).await
}

async fn docker_env(h: &Harness, env: &[(&str, &str)], args: &[&str]) -> Run {
    let cfg = h.dir.path().join("cfg");
    std::fs::create_dir_all(&cfg).unwrap();
    docker_as(&h.sock, &cfg, None, env, args, None).await
}

async fn docker_ok(h: &Harness, args: &[&str]) -> String {
    let r = docker(h, args, None).await;
    assert_eq!(
        r.code, 0,
        "docker {args:?} failed:\nstdout: {}\nstderr: {}",
        r.stdout, r.stderr
    );
    r.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_cli() {
    let h = Harness::start().await;

    let v = docker_ok(
        &h,
        &[
            "version",
            "--format",
            "{{.Server.Version}} {{.Server.APIVersion}}",
        ],
    )
    .await;
    assert_eq!(v.trim(), "0.1.0-fake 1.51");

    let r = docker(&h, &["run", "--rm", "busybox", "echo", "hi"], None).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "hi\n"),
        "stderr: {}",
        r.stderr
    );
    let all = docker_ok(&h, &["ps", "-a", "-q"]).await;
    assert_eq!(all.trim(), "", "--rm removed the container");

    let r = docker(
        &h,
        &["run", "--name", "three", "busybox", "sh", "-c", "exit 3"],
        None,
    )
    .await;
    assert_eq!(r.code, 3, "stdout: {} stderr: {}", r.stdout, r.stderr);
    let code = docker_ok(&h, &["inspect", "--format", "{{.State.ExitCode}}", "three"]).await;
    assert_eq!(code.trim(), "3");

    let r = docker(
        &h,
        &["run", "-i", "--rm", "busybox", "cat"],
        Some(b"piped through\n"),
    )
    .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "piped through\n"),
        "stderr: {}",
        r.stderr
    );

    let r = docker(
        &h,
        &["run", "-t", "--rm", "busybox", "echo", "on a tty"],
        None,
    )
    .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "on a tty\n"),
        "stderr: {}",
        r.stderr
    );
    // An old client: API 1.25, whose `run` waits without a condition.
    let old = [("DOCKER_API_VERSION", "1.25")];
    let r = docker_env(&h, &old, &["run", "--rm", "busybox", "echo", "old"]).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "old\n"),
        "stderr: {}",
        r.stderr
    );
    let r = docker_env(&h, &old, &["run", "--rm", "busybox", "sh", "-c", "exit 5"]).await;
    assert_eq!(r.code, 5, "stderr: {}", r.stderr);

    let id = docker_ok(
        &h,
        &[
            "run", "-d", "--name", "svc", "--label", "x=y", "busybox", "sleep", "300",
        ],
    )
    .await;
    assert_eq!(id.trim().len(), 64);
    let ps = docker_ok(
        &h,
        &[
            "ps",
            "-a",
            "--filter",
            "label=x=y",
            "--format",
            "{{.Names}} {{.State}}",
        ],
    )
    .await;
    assert_eq!(ps.trim(), "svc running");
    let ps = docker_ok(
        &h,
        &[
            "ps",
            "-a",
            "--filter",
            "label=x=n",
            "--format",
            "{{.Names}}",
        ],
    )
    .await;
    assert_eq!(ps.trim(), "");
    let ps = docker_ok(&h, &["ps", "--format", "{{.Names}} {{.Status}}"]).await;
    assert!(ps.trim().starts_with("svc Up"), "{ps}");

    let top = docker_ok(&h, &["top", "svc"]).await;
    assert!(top.contains("sleep 300"), "{top}");
    let stats = docker_ok(
        &h,
        &[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}} {{.MemUsage}}",
            "svc",
        ],
    )
    .await;
    assert_eq!(stats.trim(), "svc 10MiB / 1GiB");
    let cp = docker(&h, &["cp", "svc:/hello.txt", "-"], None).await;
    assert_eq!(
        (cp.code, cp.stdout.as_str()),
        (0, "fake-tar"),
        "stderr: {}",
        cp.stderr
    );

    let out = docker_ok(&h, &["exec", "svc", "echo", "from", "exec"]).await;
    assert_eq!(out, "from exec\n");
    let r = docker(&h, &["exec", "svc", "sh", "-c", "exit 4"], None).await;
    assert_eq!(r.code, 4, "stderr: {}", r.stderr);
    let r = docker(&h, &["exec", "-i", "svc", "cat"], Some(b"exec stdin\n")).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "exec stdin\n"),
        "stderr: {}",
        r.stderr
    );

    docker_ok(
        &h,
        &["run", "--name", "talker", "busybox", "echo", "logged"],
    )
    .await;
    let logs = docker(&h, &["logs", "talker"], None).await;
    assert_eq!(
        (logs.code, logs.stdout.as_str()),
        (0, "logged\n"),
        "stderr: {}",
        logs.stderr
    );
    let r = docker(
        &h,
        &[
            "run",
            "--name",
            "stderrer",
            "busybox",
            "sh",
            "-c",
            "echo to-stderr >&2",
        ],
        None,
    )
    .await;
    assert_eq!((r.stdout.as_str(), r.stderr.as_str()), ("", "to-stderr\n"));

    let images = docker_ok(&h, &["images", "--format", "{{.Repository}}:{{.Tag}}"]).await;
    assert!(images.lines().any(|l| l == "busybox:latest"), "{images}");

    // Published ports travel both ways: -p in, docker port / ps PORTS / inspect out.
    let id = docker_ok(
        &h,
        &[
            "run",
            "-d",
            "--name",
            "published",
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1::53/udp",
            "--add-host",
            "db:10.0.0.5",
            "--dns",
            "1.1.1.1",
            "busybox",
            "sleep",
            "60",
        ],
    )
    .await;
    assert_eq!(id.trim().len(), 64);
    let ports = docker_ok(&h, &["port", "published"]).await;
    assert!(ports.contains("80/tcp -> 0.0.0.0:8080"), "{ports}");
    assert!(ports.contains("53/udp -> 127.0.0.1:40053"), "{ports}");
    let row = docker_ok(
        &h,
        &["ps", "--filter", "name=published", "--format", "{{.Ports}}"],
    )
    .await;
    assert!(row.contains("0.0.0.0:8080->80/tcp"), "{row}");
    let f = docker_ok(
        &h,
        &[
            "inspect",
            "--format",
            "{{.NetworkSettings.IPAddress}} {{.HostConfig.ExtraHosts}} {{.HostConfig.Dns}}",
            "published",
        ],
    )
    .await;
    assert_eq!(f.trim(), "192.168.249.2 [db:10.0.0.5] [1.1.1.1]");
    let r = docker(&h, &["run", "-p", "80000:80", "busybox", "true"], None).await;
    assert_ne!(r.code, 0, "a port out of range is refused");
    docker_ok(&h, &["rm", "-f", "published"]).await;

    let r = docker(&h, &["rm", "svc"], None).await;
    assert_ne!(r.code, 0, "removing a running container needs -f");
    assert!(
        r.stderr.contains("cannot remove a running container"),
        "{}",
        r.stderr
    );
    assert_eq!(
        docker_ok(&h, &["rm", "-f", "svc", "three"]).await,
        "svc\nthree\n"
    );
    let names = docker_ok(&h, &["ps", "-a", "--format", "{{.Names}}"]).await;
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(names, ["stderrer", "talker"]);
    let r = docker(&h, &["inspect", "nosuch"], None).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("No such object: nosuch"), "{}", r.stderr);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_and_mounts_with_the_docker_cli() {
    let h = Harness::start().await;

    assert_eq!(
        docker_ok(&h, &["volume", "create", "--label", "a=b", "data"]).await,
        "data\n"
    );
    let ls = docker_ok(&h, &["volume", "ls"]).await;
    let rows: Vec<Vec<&str>> = ls.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [vec!["DRIVER", "VOLUME", "NAME"], vec!["local", "data"]],
        "{ls}"
    );
    let shown = docker_ok(
        &h,
        &[
            "volume",
            "inspect",
            "--format",
            "{{.Name}} {{.Driver}} {{.Mountpoint}} {{.Labels}} {{.Scope}} {{.Options}}",
            "data",
        ],
    )
    .await;
    assert_eq!(
        shown.trim(),
        "data local /fake/volumes/data/_data map[a:b] local map[]"
    );
    let json = docker_ok(&h, &["volume", "inspect", "data"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let created = v[0]["CreatedAt"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.len() == 20, "{created}");
    let filtered = docker_ok(
        &h,
        &[
            "volume",
            "ls",
            "-q",
            "--filter",
            "label=a=b",
            "--filter",
            "dangling=true",
        ],
    )
    .await;
    assert_eq!(filtered, "data\n");
    let none = docker_ok(&h, &["volume", "ls", "-q", "--filter", "name=nomatch"]).await;
    assert_eq!(none, "");
    let r = docker(&h, &["volume", "create", "--driver", "nfs", "x"], None).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("local driver"), "{}", r.stderr);
    let r = docker(&h, &["volume", "create", "-o", "type=nfs", "x"], None).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("driver options (type)"), "{}", r.stderr);

    // Binds, --mount, --tmpfs and an anonymous -v reach the backend as given.
    docker_ok(
        &h,
        &[
            "run",
            "--name",
            "mounted",
            "-v",
            "/h:/c:ro",
            "-v",
            "data:/d",
            "-v",
            "/anon",
            "--mount",
            "type=tmpfs,target=/t,tmpfs-size=1m",
            "--tmpfs",
            "/x:size=2m",
            "busybox",
            "echo",
            "hi",
        ],
    )
    .await;
    let cfg = h.fake.config("mounted").unwrap();
    // The docker CLI sends its binds in no fixed order.
    let mut binds = cfg.binds.clone();
    binds.sort();
    assert_eq!(binds, ["/h:/c:ro", "data:/d"]);
    assert_eq!(cfg.volumes, ["/anon"]);
    assert_eq!(cfg.tmpfs.get("/x").map(String::as_str), Some("size=2m"));
    assert_eq!(cfg.mounts.len(), 1, "{:?}", cfg.mounts);
    let t = &cfg.mounts[0];
    assert_eq!(
        (t.typ.as_str(), t.target.as_str(), t.tmpfs_size_bytes),
        ("tmpfs", "/t", Some(1 << 20))
    );
    let mounts = docker_ok(&h, &["inspect", "--format", "{{json .Mounts}}", "mounted"]).await;
    let mounts: serde_json::Value = serde_json::from_str(&mounts).unwrap();
    let by_dest = |d: &str| {
        mounts
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Destination"] == d)
            .unwrap_or_else(|| panic!("no mount on {d}: {mounts}"))
            .clone()
    };
    let c = by_dest("/c");
    assert_eq!(
        (
            &c["Type"],
            &c["Source"],
            &c["RW"],
            &c["Mode"],
            &c["Propagation"]
        ),
        (
            &"bind".into(),
            &"/h".into(),
            &false.into(),
            &"ro".into(),
            &"rprivate".into()
        )
    );
    assert!(c.get("Name").is_none(), "a bind has no Name: {c}");
    let d = by_dest("/d");
    assert_eq!(
        (&d["Type"], &d["Name"], &d["Driver"]),
        (&"volume".into(), &"data".into(), &"local".into())
    );
    assert_eq!(by_dest("/t")["Type"], "tmpfs");
    assert_eq!(by_dest("/x")["Type"], "tmpfs");
    let anon = by_dest("/anon")["Name"].as_str().unwrap().to_string();
    assert_eq!(anon.len(), 64);
    let hc = docker_ok(
        &h,
        &[
            "inspect",
            "--format",
            "{{json .HostConfig.Binds}} {{.HostConfig.Tmpfs}}",
            "mounted",
        ],
    )
    .await;
    let (binds, tmpfs) = hc.trim().split_once(' ').unwrap();
    // Shown as the CLI sent them, which is in no fixed order.
    let mut binds: Vec<String> = serde_json::from_str(binds).unwrap();
    binds.sort();
    assert_eq!(binds, ["/h:/c:ro", "data:/d"], "{hc}");
    assert_eq!(tmpfs, "map[/x:size=2m]", "{hc}");

    // A volume in use stays; rm -v takes the container's anonymous volume with it.
    let r = docker(&h, &["volume", "rm", "data"], None).await;
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("volume is in use"), "{}", r.stderr);
    let dangling = docker_ok(&h, &["volume", "ls", "-q", "--filter", "dangling=false"]).await;
    assert_eq!(dangling.lines().count(), 2, "{dangling}");
    docker_ok(&h, &["rm", "-v", "mounted"]).await;
    assert_eq!(
        h.fake.last_remove(),
        Some((false, true)),
        "rm -v asks for ?v=1"
    );
    assert_eq!(h.fake.volume_names(), ["data"]);

    assert_eq!(docker_ok(&h, &["volume", "rm", "data"]).await, "data\n");
    let r = docker(&h, &["volume", "rm", "data"], None).await;
    assert_ne!(r.code, 0);
    // docker 20.10 words a 404 itself ("No such volume: data"), later ones
    // print the daemon's "get data: no such volume".
    let no_such = |e: &str, name: &str| {
        e.contains(&format!("No such volume: {name}"))
            || e.contains(&format!("get {name}: no such volume"))
    };
    assert!(no_such(&r.stderr, "data"), "{}", r.stderr);
    let a = http(&h.sock, "DELETE", "/v1.51/volumes/data", &[], b"").await;
    assert_eq!(
        (a.status, a.json()["message"].as_str()),
        (404, Some("get data: no such volume"))
    );
    let r = docker(&h, &["volume", "inspect", "nosuch"], None).await;
    assert_ne!(r.code, 0);
    assert!(no_such(&r.stderr, "nosuch"), "{}", r.stderr);
    docker_ok(&h, &["volume", "rm", "-f", "nosuch"]).await;

    // Prune: anonymous volumes by default (API 1.42 and later), named ones
    // too with --all, or for older clients.
    docker_ok(&h, &["volume", "create", "kept"]).await;
    let scratch = |name: &'static str| {
        let h = &h;
        async move {
            docker_ok(h, &["create", "--name", name, "-v", "/scratch", "busybox"]).await;
            docker_ok(h, &["rm", name]).await;
        }
    };
    scratch("anon1").await;
    assert_eq!(
        h.fake.volume_names().len(),
        2,
        "rm without -v keeps the volume"
    );
    let a = http(&h.sock, "POST", "/v1.51/volumes/prune", &[], b"").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let pruned = a.json();
    assert_eq!(
        pruned["VolumesDeleted"].as_array().unwrap().len(),
        1,
        "{pruned}"
    );
    assert_eq!(pruned["SpaceReclaimed"], 4096);
    assert_eq!(h.fake.volume_names(), ["kept"]);
    scratch("anon2").await;
    let api = docker_ok(&h, &["version", "--format", "{{.Client.APIVersion}}"]).await;
    let minor: u32 = api.trim().rsplit('.').next().unwrap().parse().unwrap();
    let out = docker_ok(&h, &["volume", "prune", "-f"]).await;
    assert!(out.contains("Total reclaimed space"), "{out}");
    if minor >= 42 {
        assert_eq!(h.fake.volume_names(), ["kept"], "{out}");
        let out = docker_ok(&h, &["volume", "prune", "-f", "--all"]).await;
        assert!(out.contains("kept"), "{out}");
    } else {
        assert!(
            out.contains("kept"),
            "API {api} prunes named volumes: {out}"
        );
    }
    assert!(h.fake.volume_names().is_empty());
    h.shutdown().await;
}

/// A peer with another uid is refused. As root, run the real docker CLI
/// as nobody (65534) against a world-writable socket: only the peer-uid
/// check stands in its way. Without root, check the peer uid we read.
#[tokio::test]
async fn refuses_other_uids() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("open.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(fake::Fake::new());
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_listener(
        backend,
        listener,
        Limits::default(),
        async {
            let _ = rx.await;
        },
    ));
    let ours = berth_docker_api::server::current_uid();
    if ours == 0 {
        let cfg = dir.path().join("cfg");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mine = docker_as(
            &sock,
            &cfg,
            None,
            &[],
            &["version", "--format", "{{.Server.Version}}"],
            None,
        )
        .await;
        assert_eq!(
            mine.stdout.trim(),
            "0.1.0-fake",
            "root is served: {}",
            mine.stderr
        );
        let theirs = docker_as(
            &sock,
            &cfg,
            Some(65534),
            &[],
            &["version", "--format", "{{.Server.Version}}"],
            None,
        )
        .await;
        assert_ne!(theirs.code, 0, "uid 65534 was served: {}", theirs.stdout);
        assert!(!theirs.stdout.contains("0.1.0-fake"));
    } else {
        let c = UnixStream::connect(&sock).await.unwrap();
        assert_eq!(berth_docker_api::server::peer_uid(&c).unwrap(), ours);
        let a = get(&sock, "/_ping").await;
        assert_eq!(a.status, 200);
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

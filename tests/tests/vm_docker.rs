//! The Docker Engine API end to end: `berth system service` on a Unix socket, driven by
//! the real `docker` CLI, docker-compose and the Python docker SDK, with each container
//! in its own micro-VM. Run by scripts/test.sh through scripts/with-kvm.sh, with
//! BERTH_KERNEL, BERTH_INITRAMFS and BERTH_DEFAULT_IMAGE set; the registry the pull and
//! push test talks to is started by the test itself, on loopback.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_tests::{berth_command, eventually, free_port, required_path, text, Berth, Registry};

const IMAGE: &str = "berth.local/busybox:latest";
/// No single client command of these tests takes this long, even nested under emulation.
const COMMAND_LIMIT: Duration = Duration::from_secs(300);

/// The API server for the whole binary: one state root, the default image loaded, and
/// `berth system service` listening on a socket inside the root.
struct Service {
    berth: Berth,
    socket: PathBuf,
    child: Mutex<Child>,
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(mut c) = self.child.lock() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn service() -> &'static Service {
    static SERVICE: OnceLock<Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let berth = Berth::new("docker", COMMAND_LIMIT);
        let socket = berth.root.join("docker.sock");
        let child = berth_command(&berth.root)
            .args(["system", "service", "--host"])
            .arg(format!("unix://{}", socket.display()))
            // The default image comes from the project's archive when pulled.
            .env("BERTH_DEFAULT_IMAGE", required_path("BERTH_DEFAULT_IMAGE"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start berth system service");
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "berth system service never made {}",
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Service {
            berth,
            socket,
            child: Mutex::new(child),
        }
    })
}

/// The docker CLI: `BERTH_TEST_DOCKER`, else the first on PATH. A missing client fails
/// the test, so it never passes vacuously.
fn docker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_TEST_DOCKER").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    for dir in ["/usr/local/bin", "/usr/bin"] {
        let p = Path::new(dir).join("docker");
        if p.is_file() {
            return p;
        }
    }
    panic!("no docker CLI found: install the docker client (28.x) or set BERTH_TEST_DOCKER");
}

fn client(program: &Path) -> Command {
    let s = service();
    let mut c = Command::new(program);
    c.env("DOCKER_HOST", format!("unix://{}", s.socket.display()))
        .env("DOCKER_CONFIG", s.berth.root.join("docker-config"))
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for a client with a deadline; a hang fails with what the VMs said.
#[track_caller]
fn finish(child: Child, what: &str) -> Output {
    service().berth.finish(child, COMMAND_LIMIT, what)
}

#[track_caller]
fn docker(args: &[&str]) -> Output {
    let child = client(&docker_bin())
        .args(args)
        .spawn()
        .expect("run docker");
    finish(child, &format!("docker {args:?}"))
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed ({:?}):\nstdout: {}\nstderr: {}\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        service().berth.diagnostics()
    );
    text(&out.stdout)
}

#[track_caller]
fn berth_ok(args: &[&str]) -> String {
    service().berth.ok(args)
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn docker_run_exit_codes_and_version() {
    let v = ok(&["version", "--format", "{{.Server.Version}} {{.Server.Os}}"]);
    assert!(v.trim().ends_with(" linux"), "{v}");
    // Other tests share the daemon: only what this one leaves counts.
    let before = ok(&["ps", "-aq"]);
    let out = docker(&["run", "--rm", IMAGE, "echo", "hi"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi\n");
    let out = docker(&["run", "--rm", IMAGE, "sh", "-c", "echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "err\n", "stderr stays apart");
    let out = docker(&["run", "--rm", IMAGE, "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    let out = docker(&["run", "--rm", "no.such.registry.invalid/x:1", "true"]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "a missing image is docker's 125"
    );
    assert_eq!(ok(&["ps", "-aq"]), before, "--rm left nothing behind");
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn docker_run_stdin_and_terminal() {
    let mut child = client(&docker_bin())
        .args(["run", "--rm", "-i", IMAGE, "sh", "-c", "wc -c; echo done"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let written = child.stdin.take().unwrap().write_all(&vec![b'x'; 50_000]);
    let out = finish(child, "docker run -i");
    assert!(out.status.success(), "{}", text(&out.stderr));
    written.expect("docker read all of stdin");
    assert_eq!(text(&out.stdout), "50000\ndone\n", "all of stdin, then EOF");

    // -it through a real pseudo-terminal (script(1) makes one).
    let line = format!(
        "{} run -it --rm {IMAGE} sh -c 'test -t 0 && echo is-a-tty; exit 4'",
        docker_bin().display()
    );
    let child = client(Path::new("script"))
        .args(["-qec", &line, "/dev/null"])
        .spawn()
        .unwrap();
    let out = finish(child, "docker run -it");
    assert!(
        text(&out.stdout).contains("is-a-tty"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn docker_detached_container_is_berths_too() {
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:8000");
    let id = ok(&[
        "run", "-d", "--name", "web", "-e", "GREETING=ahoy", "-w", "/tmp", "-u", "1000:1000",
        "--label", "tier=front", "-p", &publish, IMAGE, "sh", "-c",
        "httpd -p 8000 -h /tmp; echo started $GREETING $(pwd) $(id -u):$(id -g); trap 'echo bye; exit 0' TERM; while true; do sleep 0.2; done",
    ]);
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "a full ID: {id}");
    eventually(
        "the container's first line",
        Duration::from_secs(90),
        || ok(&["logs", "web"]).contains("started"),
    );
    assert_eq!(ok(&["logs", "web"]), "started ahoy /tmp 1000:1000\n");

    // The same container through both front doors.
    assert!(
        berth_ok(&["ps"]).contains("web"),
        "berth ps sees docker's container"
    );
    let filtered = ok(&[
        "ps",
        "--filter",
        "label=tier=front",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(filtered.trim(), "web");
    assert!(ok(&["ps", "--filter", "label=tier=back", "-q"])
        .trim()
        .is_empty());
    let f = ok(&[
        "inspect",
        "--format",
        "{{.State.Running}} {{.Config.Labels.tier}} {{.Name}}",
        "web",
    ]);
    assert_eq!(f.trim(), "true front /web");

    assert_eq!(ok(&["exec", "web", "echo", "from-exec"]), "from-exec\n");
    let out = docker(&["exec", "web", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5), "exec's exit code");
    let mut child = client(&docker_bin())
        .args(["exec", "-i", "web", "cat"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through exec\n")
        .unwrap();
    let out = finish(child, "docker exec -i");
    assert_eq!(text(&out.stdout), "through exec\n");

    // cp both ways.
    let dir = tempfile::tempdir().unwrap();
    let host_file = dir.path().join("note.txt");
    std::fs::write(&host_file, "carried in\n").unwrap();
    ok(&["cp", host_file.to_str().unwrap(), "web:/tmp/"]);
    assert_eq!(ok(&["exec", "web", "cat", "/tmp/note.txt"]), "carried in\n");
    let back = dir.path().join("back.txt");
    ok(&["cp", "web:/tmp/note.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "carried in\n");

    // The published port, from docker's -p: the file just copied in, over HTTP.
    let shown = ok(&["port", "web"]);
    assert!(
        shown.contains(&format!("8000/tcp -> 127.0.0.1:{port}")),
        "{shown}"
    );
    let page = http_get(port, "/note.txt");
    assert!(
        page.starts_with("HTTP/1.") && page.ends_with("carried in\n"),
        "{page}"
    );

    let stats = ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}} {{.MemUsage}}",
        "web",
    ]);
    assert!(stats.starts_with("web "), "{stats}");
    assert!(ok(&["top", "web"]).contains("sleep"));

    // A container berth started shows in docker, and goes away through it.
    let from_berth = berth_ok(&["run", "-d", "--name", "fromberth", IMAGE, "sleep", "600"]);
    assert!(ok(&["ps", "--format", "{{.Names}}"]).contains("fromberth"));
    ok(&["rm", "-f", from_berth.trim()]);

    // A follower sees the last line and ends when the container does.
    let follower = client(&docker_bin())
        .args(["logs", "-f", "web"])
        .spawn()
        .unwrap();
    ok(&["stop", "-t", "20", "web"]);
    let followed = finish(follower, "docker logs -f");
    assert!(followed.status.success(), "{}", text(&followed.stderr));
    assert_eq!(text(&followed.stdout), "started ahoy /tmp 1000:1000\nbye\n");
    assert_eq!(ok(&["logs", "web"]), "started ahoy /tmp 1000:1000\nbye\n");
    let exited = ok(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Names}} {{.Status}}",
    ]);
    assert!(exited.contains("web Exited (0)"), "{exited}");
    assert_eq!(ok(&["wait", "web"]).trim(), "0");
    ok(&["rm", "web"]);
    assert!(!ok(&["ps", "-a", "--format", "{{.Names}}"]).contains("web"));
    assert!(!berth_ok(&["ps", "-a"]).contains("web"));
}

/// `GET path` from 127.0.0.1:`port` with a plain TCP client; the whole answer.
fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the published port");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    out
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn docker_images_pull_and_push() {
    let registry = Registry::start();
    let target = format!("{}/berth/busybox:pushed", registry.addr);
    ok(&["tag", IMAGE, &target]);
    let pushed = ok(&["push", &target]);
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    ok(&["rmi", &target]);
    assert!(!ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]).contains(&target));
    ok(&["pull", &target]);
    let images = ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.contains(&target), "{images}");
    assert!(images.contains("berth.local/busybox:latest"), "{images}");
    let history = ok(&["history", "-q", &target]);
    assert!(!history.trim().is_empty());
    let out = docker(&["pull", &format!("{}/berth/missing:1", registry.addr)]);
    assert!(!out.status.success(), "a missing image fails the pull");
    ok(&["rmi", &target]);
}

/// Takes a compose project in `.0` down, however its test ends.
struct ComposeDown<'a>(&'a Path);

impl Drop for ComposeDown<'_> {
    fn drop(&mut self) {
        // Bounded, so that a test failing on a stuck service still reports its panic.
        if let Ok(child) = client(Path::new("docker-compose"))
            .current_dir(self.0)
            .args([
                "--project-name",
                "berthtest",
                "down",
                "-v",
                "--timeout",
                "1",
            ])
            .spawn()
        {
            let _ = berth_tests::output_within(child, Duration::from_secs(120));
        }
    }
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn compose_and_the_python_sdk_drive_berth() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("docker-compose.yml"),
        format!(
            "version: '2.4'\nservices:\n  first:\n    image: {IMAGE}\n    command: sh -c 'echo from-first > /shared/hello; mkdir -p /w; echo first-over-http > /w/index.html; echo first up; exec httpd -f -p 80 -h /w'\n    labels:\n      role: one\n    volumes:\n      - shared:/shared\n  second:\n    image: {IMAGE}\n    command: sh -c 'echo second up; while true; do sleep 0.2; done'\n    volumes:\n      - shared:/shared\nvolumes:\n  shared: {{}}\n"
        ),
    )
    .unwrap();
    let _down = ComposeDown(dir.path());
    let compose_output = |args: &[&str]| -> Output {
        let child = client(Path::new("docker-compose"))
            .current_dir(dir.path())
            .args(["--project-name", "berthtest"])
            .args(args)
            .spawn()
            .expect("run docker-compose (scripts/setup.sh installs it)");
        finish(child, &format!("docker-compose {args:?}"))
    };
    let compose = |args: &[&str]| -> String {
        let out = compose_output(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr),
            service().berth.diagnostics()
        );
        text(&out.stdout)
    };
    compose(&["up", "-d"]);
    let ps = compose(&["ps"]);
    assert!(
        ps.contains("berthtest_first_1") && ps.contains("berthtest_second_1"),
        "{ps}"
    );
    eventually("both services' output", Duration::from_secs(90), || {
        let logs = compose(&["logs", "--no-color"]);
        logs.contains("first up") && logs.contains("second up")
    });
    assert_eq!(
        compose(&["exec", "-T", "second", "echo", "in-second"]).trim(),
        "in-second"
    );
    // Both services mount the named volume `shared`: what first wrote, second reads.
    eventually(
        "second reading what first wrote to the shared volume",
        Duration::from_secs(60),
        || {
            let out = compose_output(&["exec", "-T", "second", "cat", "/shared/hello"]);
            out.status.success() && text(&out.stdout).trim() == "from-first"
        },
    );
    let volumes = ok(&["volume", "ls", "-q"]);
    assert!(
        volumes.lines().any(|v| v == "berthtest_shared"),
        "compose made its volume: {volumes}"
    );
    // compose put both on its project network: second reaches first by service name.
    assert_eq!(
        ok(&["network", "ls", "--format", "{{.Name}}"]).trim(),
        "berthtest_default"
    );
    eventually(
        "second reaching first by name on the project network",
        Duration::from_secs(60),
        || {
            let get = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc first 80";
            let out = compose_output(&["exec", "-T", "second", "sh", "-c", get]);
            out.status.success() && text(&out.stdout).contains("first-over-http")
        },
    );
    let labelled = ok(&[
        "ps",
        "--filter",
        "label=com.docker.compose.project=berthtest",
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(labelled.lines().count(), 2, "{labelled}");
    compose(&["down", "-v", "--timeout", "5"]);
    assert!(
        ok(&[
            "ps",
            "-aq",
            "--filter",
            "label=com.docker.compose.project=berthtest"
        ])
        .trim()
        .is_empty(),
        "down leaves nothing"
    );
    let volumes = ok(&["volume", "ls", "-q"]);
    assert!(
        !volumes.lines().any(|v| v == "berthtest_shared"),
        "down -v removes the volume: {volumes}"
    );
    assert_eq!(ok(&["network", "ls", "-q"]), "", "and the network");

    let script = format!(
        "import docker\n\
         c = docker.from_env(timeout=300)\n\
         k = c.containers.run('{IMAGE}', ['sh', '-c', 'echo from-sdk; exit 6'], detach=True)\n\
         r = k.wait()\n\
         print(r['StatusCode'], k.logs().decode().strip())\n\
         k.remove()\n\
         print(len(c.containers.list(all=True, filters={{'id': k.id}})))\n"
    );
    let child = client(Path::new("python3"))
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let out = finish(child, "the docker SDK script");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "6 from-sdk\n0\n");
}

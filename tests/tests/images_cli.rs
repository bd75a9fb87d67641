//! The image commands of the `berth` binary, end to end: pull, images, history, tag, push
//! (with cross-repository mounts), inspect, login/logout and docker's config.json, save,
//! rmi, load, prune, and the offline default image.

#[path = "../../host/image/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_tests::{berth_bin, SmallDisk};
use common::*;

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(berth_bin());
        c.args(args)
            .env("BERTH_ROOT", self.dir.path().join("store"))
            .env("BERTH_CONFIG_DIR", self.dir.path().join("config"))
            .env("DOCKER_CONFIG", self.dir.path().join("docker"))
            .env_remove("BERTH_INSECURE_REGISTRIES");
        // The test's own programs (credential helpers) come first.
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", self.path("bin").display()));
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "berth {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "berth {args:?} should fail");
        String::from_utf8(out.stderr).unwrap()
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
}

fn unique(name: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{}", std::process::id(), n % 1_000_000_000)
}

fn publish(img: &Image, dest: &str, creds: Option<&str>) -> String {
    let dir = tempfile::tempdir().unwrap();
    img.write_layout(dir.path(), "v1");
    skopeo_push(dir.path(), "v1", dest, creds)
}

#[test]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
fn pull_images_history_push_inspect_save_load_rmi() {
    let reg = registry_env("BERTH_TEST_REGISTRY");
    let img = busybox_image_gz();
    let repo = unique("cli/busybox");
    let src = format!("{reg}/{repo}:v1");
    let digest = publish(&img, &src, None);
    let env = Env::new();

    let out = env.ok(&["pull", &src]);
    assert_eq!(out.matches("Pull complete").count(), 3, "{out}");
    assert!(out.contains(&format!("Digest: {digest}")), "{out}");
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
    assert_eq!(out.lines().last().unwrap(), src);
    let out = env.ok(&["pull", &src]);
    assert_eq!(out.matches("Already exists").count(), 3, "{out}");
    assert!(out.contains("Image is up to date"), "{out}");

    let out = env.ok(&["images"]);
    let line = out
        .lines()
        .find(|l| l.contains(&repo))
        .unwrap_or_else(|| panic!("{out}"));
    let short_id = &img.config_digest()[7..19];
    assert!(line.contains("v1") && line.contains(short_id), "{line}");
    assert_eq!(env.ok(&["images", "-q"]).trim(), short_id);

    let out = env.ok(&["history", &src]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE") && lines[0].contains("CREATED BY"),
        "{out}"
    );
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[1].starts_with(short_id), "{out}");
    assert!(
        lines[2..].iter().all(|l| l.starts_with("<missing>")),
        "{out}"
    );
    assert!(
        lines[3].contains("ENV PATH=/bin") && lines[3].contains("0B"),
        "{out}"
    );
    assert!(lines[1].contains("ago"), "{out}");
    assert!(lines[4].contains("ADD busybox"), "{out}");

    // Push to a second repository: blobs are mounted from the first.
    let dst = format!("{reg}/{}:v2", unique("cli/copy"));
    env.ok(&["tag", &src, &dst]);
    let out = env.ok(&["push", &dst]);
    assert_eq!(
        out.matches(&format!("Mounted from {repo}")).count(),
        4,
        "{out}"
    );
    assert!(
        out.contains(&format!("v2: digest: {digest} size:")),
        "{out}"
    );

    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", &dst])).unwrap();
    assert_eq!(doc[0]["Id"], img.config_digest());
    assert_eq!(doc[0]["RootFS"]["Layers"].as_array().unwrap().len(), 3);
    assert_eq!(doc[0]["GuestLayers"].as_array().unwrap().len(), 3);
    assert!(doc[0]["RepoTags"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == &serde_json::json!(dst)));

    // Save, remove everything, load back.
    let archive = env.path("saved.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), &src, &dst]);
    let out = env.ok(&["rmi", &src]);
    assert!(out.contains("Untagged:"), "{out}");
    assert!(!out.contains("Deleted:"), "still tagged as {dst}: {out}");
    let out = env.ok(&["rmi", &dst]);
    assert!(
        out.contains(&format!("Deleted: {}", img.config_digest())),
        "{out}"
    );
    assert!(env.ok(&["images", "-q"]).trim().is_empty());
    assert!(
        tree(&env.path("store/blobs")).is_empty(),
        "rmi collected the blobs"
    );
    let err = env.fails(&["history", &src]);
    assert!(err.contains("no such image"), "{err}");
    let out = env.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains(&format!("Loaded image: {src}")), "{out}");
    assert!(out.contains(&format!("Loaded image: {dst}")), "{out}");
    // stdin works too.
    let mut child = env
        .cmd(&["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&archive).unwrap())
        .unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let out = env.ok(&["history", &src]);
    assert_eq!(out.lines().count(), 5, "{out}");
    let out = env.ok(&["image", "prune"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
}

#[test]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
fn login_logout_and_docker_config() {
    let auth_reg = registry_env("BERTH_TEST_AUTH_REGISTRY");
    let user = registry_env("BERTH_TEST_AUTH_USER");
    let password = registry_env("BERTH_TEST_AUTH_PASSWORD");
    let img = busybox_image_gz();
    let src = format!("{auth_reg}/{}:v1", unique("cli/private"));
    publish(&img, &src, Some(&format!("{user}:{password}")));
    let env = Env::new();

    let err = env.fails(&["pull", "-q", &src]);
    assert!(
        err.contains("unauthorized") && err.contains("berth login"),
        "{err}"
    );

    let login = |pw: &str| {
        let mut child = env
            .cmd(&["login", "-u", &user, "--password-stdin", &auth_reg])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{pw}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = login("wrong");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unauthorized"));
    assert!(
        !env.path("config/auth.json").exists(),
        "nothing stored on failure"
    );
    let out = login(&password);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Login Succeeded"));
    let mode = std::fs::metadata(env.path("config/auth.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    env.ok(&["pull", "-q", &src]);
    env.ok(&["rmi", &src]);
    let out = env.ok(&["logout", &auth_reg]);
    assert!(out.contains("Removing login credentials"), "{out}");
    env.fails(&["pull", "-q", &src]);

    // Docker's config.json is read too.
    use base64_like::encode;
    std::fs::create_dir_all(env.path("docker")).unwrap();
    std::fs::write(
        env.path("docker/config.json"),
        serde_json::to_vec(&serde_json::json!({"auths": {
            format!("http://{auth_reg}"): {"auth": encode(format!("{user}:{password}").as_bytes())}
        }}))
        .unwrap(),
    )
    .unwrap();
    env.ok(&["pull", "-q", &src]);
    env.ok(&["rmi", &src]);

    // Credential helpers, as Docker Desktop configures them: the registry's own helper
    // gets the server on stdin and answers JSON; a store without the login answers
    // "credentials not found"; a helper that is not installed is named.
    std::fs::create_dir_all(env.path("bin")).unwrap();
    let helper = |name: &str, body: &str| {
        let p = env.path(&format!("bin/docker-credential-{name}"));
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    let asked = env.path("asked");
    helper(
        "berthtest",
        &format!(
            "[ \"$1\" = get ] || exit 3\ncat > '{}'\n\
             printf '{{\"ServerURL\":\"x\",\"Username\":\"{user}\",\"Secret\":\"{password}\"}}'",
            asked.display()
        ),
    );
    helper(
        "empty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    let docker_config = |v: serde_json::Value| {
        std::fs::write(
            env.path("docker/config.json"),
            serde_json::to_vec(&v).unwrap(),
        )
        .unwrap()
    };
    docker_config(serde_json::json!({
        "credsStore": "empty",
        "credHelpers": { auth_reg.clone(): "berthtest" }
    }));
    env.ok(&["pull", "-q", &src]);
    assert_eq!(std::fs::read_to_string(&asked).unwrap(), auth_reg);
    env.ok(&["rmi", &src]);
    docker_config(serde_json::json!({ "credsStore": "empty" }));
    let err = env.fails(&["pull", "-q", &src]);
    assert!(err.contains("unauthorized"), "{err}");
    docker_config(serde_json::json!({ "credsStore": "nope" }));
    let err = env.fails(&["pull", "-q", &src]);
    assert!(
        err.contains("docker-credential-nope") && err.contains("not found on PATH"),
        "{err}"
    );
}

/// Minimal base64 for the test's docker config (standard alphabet, padded).
mod base64_like {
    pub fn encode(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn encodes_like_base64() {
        assert_eq!(encode(b"user:pw"), "dXNlcjpwdw==");
        assert_eq!(encode(b"abc"), "YWJj");
    }
}

#[test]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
fn two_berth_processes_pull_one_image_at_once() {
    let reg = registry_env("BERTH_TEST_REGISTRY");
    let img = busybox_image_gz();
    let src = format!("{reg}/{}:v1", unique("cli/race"));
    publish(&img, &src, None);
    let env = Env::new();
    let children: Vec<_> = (0..2)
        .map(|_| {
            env.cmd(&["pull", "-q", &src])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        env.ok(&["images", "-q"]).trim(),
        &img.config_digest()[7..19]
    );
    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", &src])).unwrap();
    assert_eq!(doc[0]["GuestLayers"].as_array().unwrap().len(), 3);
    assert!(
        tree(&env.path("store/tmp")).is_empty(),
        "no staging left behind"
    );
}

fn default_image() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_DEFAULT_IMAGE") {
        return PathBuf::from(p);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-default-image.sh");
    let out = Command::new(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn default_image_loads_offline() {
    let archive = default_image();
    let env = Env::new();
    let out = env.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        out.contains("Loaded image: berth.local/busybox:latest"),
        "{out}"
    );
    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", "berth.local/busybox"])).unwrap();
    assert_eq!(doc[0]["Config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert_eq!(doc[0]["Os"], "linux");
    let out = env.ok(&["history", "berth.local/busybox:latest"]);
    assert!(out.contains("build-default-image.sh"), "{out}");
}

#[test]
fn a_host_only_build_caches_its_steps_and_bad_input_has_dockers_statuses() {
    let env = Env::new();
    let ctx = env.path("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "a").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY a.txt /\nCMD [\"/a.txt\"]\n",
    )
    .unwrap();
    let c = ctx.to_str().unwrap();
    let id = env.ok(&["build", "-q", "-t", "berth.local/hostonly:1", c]);
    let out = env.run(&["build", "-t", "berth.local/hostonly:1", c]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("COPY a.txt / CACHED") && err.contains("0 micro-VMs booted"),
        "{err}"
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), id);
    let history = env.ok(&["history", "berth.local/hostonly:1"]);
    assert!(
        history.contains("COPY a.txt /") && history.contains("CMD [\"/a.txt\"]"),
        "{history}"
    );
    // A bad Dockerfile is the build's failure (1); a bad flag is docker's 125.
    let mut bad = env.cmd(&["build", "-f", "-", c]);
    bad.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = bad.spawn().unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"FROM scratch\nBOGUS x\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2: unknown instruction: BOGUS"));
    let out = env.run(&["build", "--no-such-flag", c]);
    assert_eq!(out.status.code(), Some(125));
    assert!(env.run(&["--help"]).status.success());
    let pruned = env.ok(&["builder", "prune"]);
    assert!(
        pruned.contains("Deleted build cache objects: 2"),
        "{pruned}"
    );
}

#[test]
#[ignore = "needs a registry: run by scripts/test.sh (as an ordinary user)"]
fn a_full_disk_during_pull_is_a_clear_error_and_leaves_the_store_as_it_was() {
    let reg = registry_env("BERTH_TEST_REGISTRY");
    let img = busybox_image_gz();
    let src = format!("{reg}/{}:v1", unique("cli/full"));
    publish(&img, &src, None);
    let env = Env::new();
    let disk = SmallDisk::mount(env.dir.path(), 64);
    env.ok(&["images"]);
    let store = env.path("store");
    let before = tree(&store);
    // The disk runs out ever later in the pull, in the download and then in the
    // preparation of the layers, until it succeeds.
    let mut failures = 0;
    let mut free = 64 * 1024;
    loop {
        disk.fill("filler", free);
        let out = env.run(&["pull", &src]);
        if out.status.success() {
            break;
        }
        failures += 1;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "with {free} bytes free: {err}");
        // Said once, with what to do, and not taken for a broken layer.
        assert_eq!(
            err.matches("No space left on device").count(),
            1,
            "with {free} bytes free: {err}"
        );
        assert!(
            err.contains("the disk is full"),
            "with {free} bytes free: {err}"
        );
        assert!(
            !err.contains("cannot read"),
            "with {free} bytes free: {err}"
        );
        assert_eq!(tree(&store), before, "with {free} bytes free: {err}");
        assert_eq!(env.ok(&["images", "-q"]), "");
        free += 256 * 1024;
        assert!(free < 32 << 20, "the pull never succeeded: {err}");
    }
    assert!(failures >= 4, "the disk ran out only {failures} times");
    // What the failed pulls left is a sound store: the image pulled at last is whole.
    let doc: serde_json::Value =
        serde_json::from_str(&env.ok(&["image", "inspect", &src])).unwrap();
    assert_eq!(doc[0]["GuestLayers"].as_array().unwrap().len(), 3);
    assert!(tree(&env.path("store/tmp")).is_empty(), "no staging left");
    drop(disk);
}

//! `berth build` end to end: `RUN` steps in micro-VMs, a two-stage build whose result
//! runs, the cache across invocations (a second build boots no VM; a changed file
//! reruns from its `COPY`), a failing `RUN`, `history`, consecutive `RUN`s in one VM
//! (files added, changed and deleted across them), and ^C. Run through
//! scripts/with-kvm.sh with BERTH_KERNEL, BERTH_INITRAMFS, BERTH_DEFAULT_IMAGE and
//! BERTH_BIN set (see scripts/test.sh). The host-only steps are checked without a VM in
//! host/engine/tests/build.rs.

use std::path::Path;
use std::time::Duration;

use berth_tests::{text, Berth};

/// No single berth command of these tests takes this long, even nested under emulation.
const COMMAND_LIMIT: Duration = Duration::from_secs(900);

const DOCKERFILE: &str = r#"ARG GREETING=hello
FROM berth.local/busybox:latest AS builder
ARG GREETING
ENV WHO=world
WORKDIR /work
RUN echo early > early.txt
COPY a.txt .
RUN echo "$GREETING $WHO from $(cat a.txt)" > out.txt && ls /work
FROM berth.local/busybox:latest
COPY --from=builder /work/out.txt /srv/
WORKDIR /srv
CMD ["cat", "out.txt"]
"#;

fn build(berth: &Berth, context: &Path, extra: &[&str]) -> (String, String) {
    let ctx = context.to_str().unwrap();
    let mut args = vec!["build"];
    args.extend_from_slice(extra);
    args.push(ctx);
    let out = berth.output(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("berth {args:?}:\n{stderr}");
    assert!(
        out.status.success(),
        "berth {args:?} failed ({:?}):\n{stderr}\n{}",
        out.status.code(),
        berth.diagnostics()
    );
    (stdout.trim().to_string(), stderr)
}

/// The step lines of a build's progress that were not cached.
fn done_steps(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with('#') && l.contains("] ") && !l.ends_with(" CACHED"))
        .filter_map(|l| l.split_once("] ").map(|(_, t)| t.to_string()))
        .filter(|t| !t.starts_with("FROM") && !t.starts_with("ARG"))
        .collect()
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn a_two_stage_build_runs_its_steps_in_micro_vms_and_caches_them() {
    let berth = Berth::new("build-e2e", COMMAND_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    std::fs::write(ctx.join("a.txt"), "one").unwrap();

    let (id, stderr) = build(&berth, ctx, &["-t", "berth.local/built:1"]);
    assert!(id.starts_with("sha256:"), "{id}");
    assert!(stderr.contains("2 micro-VMs booted"), "{stderr}");
    assert!(
        stderr.contains("a.txt\nearly.txt\nout.txt\n"),
        "the RUN's output is shown:\n{stderr}"
    );
    let ran = berth.ok(&["run", "--rm", "berth.local/built:1"]);
    assert_eq!(ran.trim(), "hello world from one");
    let history = berth.ok(&["history", "--no-trunc", "berth.local/built:1"]);
    assert!(
        history.contains("COPY --from=builder /work/out.txt /srv/"),
        "{history}"
    );
    assert!(history.contains("CMD [\"cat\", \"out.txt\"]"), "{history}");

    // The same build again: nothing to do, no VM.
    let (again, stderr) = build(&berth, ctx, &["-t", "berth.local/built:1"]);
    assert_eq!(again, id);
    assert!(stderr.contains("0 micro-VMs booted"), "{stderr}");
    assert_eq!(done_steps(&stderr), Vec::<String>::new(), "{stderr}");

    // One copied file changed: its COPY and what follows run again, the RUN before
    // it does not.
    std::fs::write(ctx.join("a.txt"), "two").unwrap();
    let (changed, stderr) = build(&berth, ctx, &["-t", "berth.local/built:2"]);
    assert_ne!(changed, id);
    let redone = done_steps(&stderr);
    assert_eq!(
        redone.first().map(String::as_str),
        Some("COPY a.txt ."),
        "{stderr}"
    );
    assert!(!redone.iter().any(|s| s.contains("early")), "{stderr}");
    assert!(stderr.contains("1 micro-VMs booted"), "{stderr}");
    let ran = berth.ok(&["run", "--rm", "berth.local/built:2"]);
    assert_eq!(ran.trim(), "hello world from two");

    // A failing RUN fails the build with its line and exit code, tags nothing, and
    // leaves no container behind.
    let failing = "FROM berth.local/busybox:latest\nRUN echo about to fail && exit 3\n";
    std::fs::write(ctx.join("Dockerfile.fail"), failing).unwrap();
    let file = ctx.join("Dockerfile.fail");
    let out = berth.output(&[
        "build",
        "-f",
        file.to_str().unwrap(),
        "-t",
        "berth.local/failed:1",
        ctx.to_str().unwrap(),
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("code 3"),
        "{stderr}"
    );
    assert!(stderr.contains("about to fail"), "{stderr}");
    assert!(!berth
        .output(&["history", "berth.local/failed:1"])
        .status
        .success());
    assert_eq!(
        berth.ok(&["ps", "-a", "-q"]).trim(),
        "",
        "no step container is left"
    );

    // A build argument reaches the RUN steps after its ARG (each of them runs again,
    // as in docker); -q prints the ID alone.
    let (quiet, stderr) = build(
        &berth,
        ctx,
        &[
            "-q",
            "--build-arg",
            "GREETING=hi",
            "-t",
            "berth.local/built:3",
        ],
    );
    assert_eq!(stderr.trim(), "");
    assert!(quiet.starts_with("sha256:") && quiet != changed, "{quiet}");
    let ran = berth.ok(&["run", "--rm", "berth.local/built:3"]);
    assert_eq!(ran.trim(), "hi world from two");
    // builder prune drops the cache.
    let pruned = berth.ok(&["builder", "prune", "-f"]);
    assert!(pruned.contains("Deleted build cache objects"), "{pruned}");
    let images = berth.ok(&["images"]);
    assert!(
        images.contains("berth.local/built"),
        "tagged images stay: {images}"
    );
}

/// Consecutive `RUN` steps, with only config steps between them, share one VM: each
/// step's layer holds what it changed, deletions included, on top of the steps before.
const STACKED: &str = r#"FROM berth.local/busybox:latest
RUN mkdir /d && echo one > /d/a && echo x > /d/gone && mkdir -p /e && echo e > /e/f
RUN echo two >> /d/a && rm /d/gone /bin/vi
ENV X=1
RUN rm -rf /e && mkdir /e && echo new > /e/g && ls /d /e
RUN test ! -e /d/gone && test ! -e /e/f && test ! -e /bin/vi && echo "$X" > /x
"#;

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn consecutive_runs_share_one_vm_and_each_keeps_its_own_changes() {
    let berth = Berth::new("build-stacked", COMMAND_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    std::fs::write(ctx.join("Dockerfile"), STACKED).unwrap();
    let (_, stderr) = build(&berth, ctx, &["-t", "berth.local/stacked:1"]);
    assert!(stderr.contains("1 micro-VMs booted"), "{stderr}");
    assert!(stderr.contains("/d:\na\n\n/e:\ng\n"), "{stderr}");
    let ran = berth.ok(&[
        "run",
        "--rm",
        "berth.local/stacked:1",
        "sh",
        "-c",
        "cat /d/a /e/g /x; ls /d /e; test -e /bin/vi && echo vi is back; true",
    ]);
    assert_eq!(ran, "one\ntwo\nnew\n1\n/d:\na\n\n/e:\ng\n");
    // One layer per RUN, each with a size; the ENV is an empty layer.
    let history = berth.ok(&["history", "--no-trunc", "berth.local/stacked:1"]);
    let runs: Vec<&str> = history.lines().filter(|l| l.contains("RUN ")).collect();
    assert_eq!(runs.len(), 4, "{history}");
    assert!(
        runs.iter().all(|l| !l.trim_end().ends_with(" 0B")),
        "{history}"
    );
    assert_eq!(
        berth.ok(&["ps", "-a", "-q"]).trim(),
        "",
        "no step container is left"
    );
}

/// ^C stops a build at once: no VM, no container record and no tag is left.
#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn an_interrupted_build_leaves_no_vm_behind() {
    let berth = Berth::new("build-interrupt", COMMAND_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM berth.local/busybox:latest\nRUN echo sleeping now && sleep 600\n",
    )
    .unwrap();
    let log = ctx.join("build.log");
    let child = berth
        .command(&["build", "-t", "berth.local/never:1", ctx.to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    berth_tests::eventually("the RUN step to start", COMMAND_LIMIT, || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("sleeping now"))
    });
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    let rc = unsafe { libc::kill(pid, libc::SIGINT) };
    assert_eq!(rc, 0);
    let started = std::time::Instant::now();
    let out = berth.finish(child, Duration::from_secs(120), "the interrupted build");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    eprintln!("the build stopped {:?} after ^C", started.elapsed());
    assert_eq!(
        berth.ok(&["ps", "-a", "-q"]).trim(),
        "",
        "no step container is left"
    );
    assert!(!berth
        .output(&["history", "berth.local/never:1"])
        .status
        .success());
    let root = berth.root.to_string_lossy().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(
            !(cmdline.contains(&root) && cmdline.contains("vmm")),
            "a VMM is left: {cmdline}"
        );
    }
}

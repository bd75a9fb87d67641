//! `berth build` end to end: `RUN` steps in micro-VMs, a two-stage build whose result
//! runs, the cache across invocations (a second build boots no VM; a changed file
//! reruns from its `COPY`), a failing `RUN`, and `history`. Run through
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

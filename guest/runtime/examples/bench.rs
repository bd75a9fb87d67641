//! Benchmark: create + start + wait (+ delete) of `/bin/true` in a busybox rootfs, berth's
//! runtime against crun, natively, on the same rootfs, interleaved. Driven by
//! scripts/bench-runtime.sh; needs root.
//!
//! ```text
//! bench --rootfs DIR --bundle DIR --work DIR [--iterations N] [--crun PATH]
//! bench once --rootfs DIR --work DIR --id ID      (one berth run, for the subprocess timing)
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_protocol::spec::{docker_spec, RunConfig};
use berth_runtime::{Container, CreateOptions, Layer, RuntimeConfig, Scratch, Stdio};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn need(args: &[String], name: &str) -> String {
    arg(args, name).unwrap_or_else(|| {
        eprintln!("bench: {name} is required");
        std::process::exit(2)
    })
}

/// One berth container: create, start, wait, delete.
fn berth_once(rootfs: &Path, work: &Path, id: &str) -> i32 {
    let mut spec = docker_spec(&RunConfig {
        args: vec!["/bin/true".into()],
        hostname: id.into(),
        ..Default::default()
    });
    // Same limits as crun's default spec (this host's root cannot raise RLIMIT_NOFILE).
    spec.process_mut().as_mut().unwrap().set_rlimits(None);
    let cfg = RuntimeConfig {
        state_root: work.join("state"),
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
    };
    let scratch = work.join("scratch").join(id);
    let opts = CreateOptions {
        id: id.into(),
        spec,
        layers: vec![Layer::Dir(rootfs.to_path_buf())],
        scratch: Scratch::Dir(scratch.clone()),
        user: None,
        stdio: Stdio::null().unwrap(),
    };
    let mut c = Container::create(&cfg, opts).unwrap_or_else(|e| panic!("create: {e}"));
    c.start().unwrap_or_else(|e| panic!("start: {e}"));
    let code = c.wait().unwrap();
    c.delete().unwrap_or_else(|e| panic!("delete: {e}"));
    let _ = std::fs::remove_dir_all(&scratch);
    code
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("once") {
        let code = berth_once(
            Path::new(&need(&args, "--rootfs")),
            Path::new(&need(&args, "--work")),
            &need(&args, "--id"),
        );
        std::process::exit(code);
    }
    let rootfs = PathBuf::from(need(&args, "--rootfs"));
    let bundle = PathBuf::from(need(&args, "--bundle"));
    let work = PathBuf::from(need(&args, "--work"));
    let crun = arg(&args, "--crun").unwrap_or_else(|| "crun".into());
    let n: usize = arg(&args, "--iterations")
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let me = std::env::current_exe().unwrap();

    let mut inproc = Vec::new();
    let mut subproc = Vec::new();
    let mut crun_t = Vec::new();
    // One warm-up round each, then interleaved measurements.
    for i in 0..=n {
        let t = Instant::now();
        assert_eq!(berth_once(&rootfs, &work, &format!("in{i}")), 0);
        let d_in = t.elapsed();

        let t = Instant::now();
        let st = Command::new(&me)
            .args(["once", "--rootfs"])
            .arg(&rootfs)
            .arg("--work")
            .arg(&work)
            .args(["--id", &format!("sub{i}")])
            .status()
            .unwrap();
        let d_sub = t.elapsed();
        assert!(st.success(), "berth run {i} failed: {st}");

        let t = Instant::now();
        let st = Command::new(&crun)
            .args(["--cgroup-manager=disabled", "run", "--bundle"])
            .arg(&bundle)
            .arg(format!("crun-bench-{i}"))
            .status()
            .unwrap();
        let d_crun = t.elapsed();
        assert!(st.success(), "crun run {i} failed: {st}");
        if i > 0 {
            inproc.push(d_in);
            subproc.push(d_sub);
            crun_t.push(d_crun);
        }
    }
    let m_in = median(&mut inproc);
    let m_sub = median(&mut subproc);
    let m_crun = median(&mut crun_t);
    println!("create+start+wait+delete of /bin/true, busybox rootfs, {n} runs each, medians:");
    println!(
        "  berth runtime, one process per run (like crun): {:8.2} ms",
        ms(m_sub)
    );
    println!(
        "  berth runtime, in process (what the agent pays): {:8.2} ms",
        ms(m_in)
    );
    println!(
        "  crun {:<43} {:8.2} ms",
        "(run, --cgroup-manager=disabled):",
        ms(m_crun)
    );
    println!(
        "  ratio berth/crun: {:.2} (process per run), {:.2} (in process)",
        ms(m_sub) / ms(m_crun),
        ms(m_in) / ms(m_crun)
    );
}

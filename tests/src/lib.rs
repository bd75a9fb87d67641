//! End-to-end and VM tests of berth, and the helpers they share.
//!
//! Test binaries named `vm_*` need a `/dev/kvm` able to boot Linux: `scripts/test.sh`
//! runs them through `scripts/with-kvm.sh`. Other tests marked `#[ignore]` need root,
//! the built kernel or a service that `scripts/test.sh` starts; it runs them all.

use std::path::PathBuf;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A path from an environment variable that `scripts/test.sh` sets; panics with what to do
/// when it is missing, so a test that needs it fails instead of passing vacuously.
pub fn required_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!("{var} is not set: run this test through scripts/test.sh, which builds it and sets {var}"),
    }
}

/// The `berth` binary that `scripts/test.sh` built (`BERTH_BIN`), else the workspace's
/// debug build.
pub fn berth_bin() -> PathBuf {
    std::env::var_os("BERTH_BIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/debug/berth"))
}

/// What a command left when it outran its deadline: the output so far.
#[derive(Debug)]
pub struct Overran {
    /// The output up to the kill (status is the kill's).
    pub output: std::process::Output,
}

/// Waits for `child` at most `limit`, reading its stdout and stderr as they come (so a
/// chatty child cannot block on a full pipe); kills it when the limit passes.
pub fn output_within(
    mut child: std::process::Child,
    limit: std::time::Duration,
) -> Result<std::process::Output, Overran> {
    use std::io::Read;
    fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let started = std::time::Instant::now();
    let mut overran = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break s;
        }
        if started.elapsed() > limit {
            overran = true;
            let _ = child.kill();
            break child.wait().expect("wait for the killed child");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // Grandchildren may hold the pipes open: the readers get a moment, not forever.
    let collect = |h: std::thread::JoinHandle<Vec<u8>>| {
        let t = std::time::Instant::now();
        while !h.is_finished() && t.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if h.is_finished() {
            h.join().unwrap_or_default()
        } else {
            b"<the output pipe is still held open by another process>".to_vec()
        }
    };
    let output = std::process::Output {
        status,
        stdout: collect(out),
        stderr: collect(err),
    };
    if overran {
        Err(Overran { output })
    } else {
        Ok(output)
    }
}

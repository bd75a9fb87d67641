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

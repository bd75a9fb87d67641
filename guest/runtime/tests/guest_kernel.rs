//! The runtime inside the real guest kernel: runs scripts/test-runtime-in-vm.sh, which boots
//! the guest kernel under QEMU with the `root` and (cgroup v2) `cgroup` tests as workload.

use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs root and QEMU: run by scripts/test.sh"]
fn runtime_tests_pass_in_the_guest_kernel() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root; run it through scripts/test.sh"
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-runtime-in-vm.sh");
    let st = Command::new("bash").arg(&script).status().unwrap();
    assert!(st.success(), "{} failed: {st}", script.display());
}

//! The built guest kernel has every option of kernel-config/berth.config as asked, and the
//! checker that scripts/build-kernel.sh relies on does catch an option Kconfig dropped.

use std::process::Command;

use berth_tests::{repo_root, required_path};

fn check(fragment: &std::path::Path, config: &std::path::Path) -> std::process::Output {
    Command::new(repo_root().join("scripts/check-kernel-config.sh"))
        .arg(fragment)
        .arg(config)
        .output()
        .expect("run scripts/check-kernel-config.sh")
}

#[test]
#[ignore = "needs the built kernel: run by scripts/test.sh"]
fn built_kernel_config_matches_the_fragment() {
    let config = required_path("BERTH_KERNEL_DIR").join("config");
    let fragment = repo_root().join("kernel-config/berth.config");
    let out = check(&fragment, &config);
    assert!(
        out.status.success(),
        "options missing from the built kernel:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The built config is the fragment's: spot-check options the issue names.
    let text = std::fs::read_to_string(&config).unwrap();
    for opt in [
        "CONFIG_PVH=y",
        "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y",
        "CONFIG_EROFS_FS=y",
        "CONFIG_BLK_DEV_LOOP=y",
        "CONFIG_OVERLAY_FS=y",
        "CONFIG_VIRTIO_VSOCKETS=y",
        "CONFIG_CFS_BANDWIDTH=y",
        "CONFIG_FUSE_FS=y",
        "CONFIG_VIRTIO_FS=y",
    ] {
        assert!(text.lines().any(|l| l == opt), "{opt} in the built .config");
    }
    assert!(
        text.lines().any(|l| l == "# CONFIG_MODULES is not set"),
        "the guest kernel has no module support"
    );
}

#[test]
fn checker_lists_options_the_config_lacks() {
    let dir = std::env::temp_dir().join(format!("berth-kcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fragment = dir.join("fragment");
    let config = dir.join("config");
    std::fs::write(
        &fragment,
        "# comment\nCONFIG_A=y\nCONFIG_B=y\nCONFIG_N=64\n# CONFIG_C is not set\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_N=32\nCONFIG_C=y\n",
    )
    .unwrap();
    let out = check(&fragment, &config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CONFIG_B: asked y, got n"), "{stderr}");
    assert!(stderr.contains("CONFIG_N: asked 64, got 32"), "{stderr}");
    assert!(stderr.contains("CONFIG_C: asked n, got y"), "{stderr}");
    assert!(!stderr.contains("CONFIG_A:"), "{stderr}");

    std::fs::write(&config, "CONFIG_A=y\nCONFIG_B=y\nCONFIG_N=64\n").unwrap();
    let out = check(&fragment, &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Layer tars through the userspace erofs layer writer, as a hostile registry or archive
//! would send them: any bytes (plain, or gzip or zstd as the writer sniffs them), hostile
//! paths, links, whiteouts, PAX records. The writer must refuse or write an image, never
//! panic, and leave no file behind when it refuses.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
}

fuzz_target!(|data: &[u8]| {
    let out = dir().path().join("layer.erofs");
    let _ = std::fs::remove_file(&out);
    match berth_image::erofs::write_layer_image(data, &out, "fuzz") {
        Ok((_diff_id, _size)) => {
            let len = std::fs::metadata(&out).expect("the image is there").len();
            assert!(
                len > 0 && len.is_multiple_of(4096),
                "an image is whole blocks"
            );
        }
        Err(_) => assert!(!out.exists(), "a refused layer leaves no image"),
    }
});

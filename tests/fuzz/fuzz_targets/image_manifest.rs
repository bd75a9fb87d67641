//! What a registry or an archive hands berth about an image: manifests, indexes and
//! manifest lists (with any declared media type), image configs checked against a
//! manifest, platform selection, and the references, digests and platforms named in them.
#![no_main]

use std::str::FromStr;

use berth_image::manifest::{self, ManifestKind, Platform};
use berth_image::{Digest, Reference};
use libfuzzer_sys::fuzz_target;

const DECLARED: [&str; 7] = [
    "",
    "application/json",
    manifest::OCI_MANIFEST,
    manifest::OCI_INDEX,
    manifest::DOCKER_MANIFEST,
    manifest::DOCKER_LIST,
    "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    // A manifest, then (after a NUL) a config for it.
    let (doc, config) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let declared = DECLARED[usize::from(which) % DECLARED.len()];
    match manifest::parse_manifest(doc, declared, "fuzz") {
        Ok((_, ManifestKind::Image(m))) => {
            manifest::validate(&m, "fuzz").expect("a parsed manifest is valid");
            Digest::try_from(m.config().digest()).expect("a sha256 config digest");
            for l in m.layers() {
                manifest::layer_compression(l.media_type(), "fuzz").expect("validated layers");
                Digest::try_from(l.digest()).expect("sha256 layer digests");
            }
            if let Ok(c) = manifest::parse_config(config, &m, "fuzz") {
                assert_eq!(c.rootfs.diff_ids.len(), m.layers().len());
            }
        }
        Ok((_, ManifestKind::Index(i))) => {
            for wanted in ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"] {
                let wanted = Platform::from_str(wanted).expect("a valid platform");
                if let Ok(d) = manifest::select_platform(&i, &wanted, "fuzz") {
                    assert!(d.platform().as_ref().is_some_and(|p| wanted.matches(p)));
                    Digest::try_from(d.digest()).expect("a sha256 manifest digest");
                }
            }
        }
        Err(_) => {}
    }
    let text = String::from_utf8_lossy(rest);
    if let Ok(r) = Reference::parse(&text) {
        let _ = (r.name(), r.manifest_ref(), r.familiar(), r.api_host());
        let again = Reference::parse(&r.to_string()).expect("a reference prints parseable");
        assert_eq!(again.to_string(), r.to_string());
    }
    if let Ok(d) = Digest::from_str(&text) {
        let _ = (d.hex(), d.short());
    }
    if let Ok(p) = Platform::from_str(&text) {
        let again = Platform::from_str(&p.to_string()).expect("a platform prints parseable");
        assert_eq!(again, p);
    }
});

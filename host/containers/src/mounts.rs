//! Mounts as docker spells them on its command line (`-v SRC:DST[:OPTS]`,
//! `--mount type=...,source=...,target=...`, `--tmpfs PATH[:OPTS]`): parsed here once, so
//! the CLI and the Docker API read them the same way, and kept on the container's spec.

use std::path::{Path, PathBuf};

use berth_units::parse_size;
use serde::{Deserialize, Serialize};

/// Why a mount is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// invalid mount "{spec}": {why}
    #[error("invalid mount \"{spec}\": {why}")]
    Spec {
        /// What was given.
        spec: String,
        /// What is wrong with it.
        why: String,
    },
    /// duplicate mount point: {0} (each target takes one mount)
    #[error("duplicate mount point: {0} (each target takes one mount)")]
    Duplicate(String),
}

/// What is mounted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSource {
    /// A host folder.
    Bind {
        /// Its absolute path.
        source: PathBuf,
        /// Create it when missing (`-v` does, `--mount` refuses).
        #[serde(default)]
        create: bool,
    },
    /// A volume under berth's state root.
    Volume {
        /// Its name; empty for an anonymous volume until the container is created.
        name: String,
        /// Made for this container alone (`-v /path`, an image's `VOLUME`): `rm -v`
        /// removes it with the container.
        #[serde(default)]
        anonymous: bool,
    },
    /// A tmpfs in the guest's memory.
    Tmpfs {
        /// Its size limit in bytes (the kernel's default: half the VM's memory).
        #[serde(default)]
        size_bytes: Option<u64>,
        /// The mode of its root folder.
        #[serde(default)]
        mode: Option<u32>,
        /// Extra mount flags (`noexec`, `nosuid`, `nodev` and their opposites).
        #[serde(default)]
        flags: Vec<String>,
    },
}

/// One mount of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// What is mounted.
    #[serde(flatten)]
    pub source: MountSource,
    /// The absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}

impl MountSpec {
    /// docker's name for the kind: `bind`, `volume` or `tmpfs`.
    pub fn kind(&self) -> &'static str {
        match self.source {
            MountSource::Bind { .. } => "bind",
            MountSource::Volume { .. } => "volume",
            MountSource::Tmpfs { .. } => "tmpfs",
        }
    }
}

/// Whether `name` is a valid volume name, as docker's: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_volume_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() >= 2
        && name.len() <= 255
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn spec_error(spec: &str, why: impl Into<String>) -> MountError {
    MountError::Spec {
        spec: spec.to_string(),
        why: why.into(),
    }
}

/// Checks a container path: absolute, not `/`, without `..`.
fn check_target(spec: &str, target: &str) -> Result<String, MountError> {
    let path = Path::new(target);
    if !path.is_absolute() {
        return Err(spec_error(
            spec,
            format!("the container path {target} is not absolute"),
        ));
    }
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(spec_error(
            spec,
            format!("the container path {target} must not contain .."),
        ));
    }
    let clean = target.trim_end_matches('/');
    if clean.is_empty() {
        return Err(spec_error(
            spec,
            "the container's / cannot be a mount point",
        ));
    }
    Ok(clean.to_string())
}

/// A `-v` or `--mount` source: an absolute host path, else a volume name.
fn source(spec: &str, text: &str, create: bool) -> Result<MountSource, MountError> {
    if text.starts_with('/') {
        if Path::new(text)
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(spec_error(
                spec,
                format!("the host path {text} must not contain .."),
            ));
        }
        return Ok(MountSource::Bind {
            source: PathBuf::from(text),
            create,
        });
    }
    if valid_volume_name(text) {
        return Ok(MountSource::Volume {
            name: text.to_string(),
            anonymous: false,
        });
    }
    Err(spec_error(
        spec,
        format!(
            "\"{text}\" is neither an absolute host path nor a volume name: give a host \
             path from / (\"$PWD/{}\"), or a name of letters, digits, _, . and -",
            text.trim_start_matches("./")
        ),
    ))
}

/// Parses `-v [SRC:]DST[:OPTS]`: SRC is a host folder (from `/`, created when missing) or
/// a volume name; without SRC the container gets an anonymous volume. OPTS are `ro`,
/// `rw` and the ones berth has no use for but docker accepts (`z`, `Z`, `nocopy`,
/// `cached`, `delegated`, `consistent`, and the propagation modes).
pub fn parse_volume(spec: &str) -> Result<MountSpec, MountError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => (None, *dst, ""),
        [src, dst] => (Some(*src), *dst, ""),
        [src, dst, opts] => (Some(*src), *dst, *opts),
        _ => return Err(spec_error(spec, "use [SOURCE:]TARGET[:OPTIONS]")),
    };
    let target = check_target(spec, dst)?;
    let source = match src {
        None => MountSource::Volume {
            name: String::new(),
            anonymous: true,
        },
        Some("") => return Err(spec_error(spec, "the source is empty")),
        Some(s) => source(spec, s, true)?,
    };
    let mut read_only = false;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" | "readonly" => read_only = true,
            "rw" => read_only = false,
            "z" | "Z" | "nocopy" | "cached" | "delegated" | "consistent" | "private"
            | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {}
            other => {
                return Err(spec_error(
                    spec,
                    format!("unknown option \"{other}\" (berth knows ro and rw)"),
                ))
            }
        }
    }
    Ok(MountSpec {
        source,
        target,
        read_only,
    })
}

/// Parses a boolean `--mount` value: none (true), `true`, `false`, `1`, `0`.
fn flag(spec: &str, key: &str, value: Option<&str>) -> Result<bool, MountError> {
    match value {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(v) => Err(spec_error(spec, format!("{key}={v}: use true or false"))),
    }
}

/// Parses an octal mode such as `1777` or `0755`.
fn parse_mode(spec: &str, text: &str) -> Result<u32, MountError> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| spec_error(spec, format!("mode {text} is not an octal mode like 1777")))
}

/// Parses `--mount type=bind|volume|tmpfs,source=...,target=...[,readonly]` (the type
/// defaults to `volume`, as docker's). A bind's host folder must exist.
pub fn parse_mount(spec: &str) -> Result<MountSpec, MountError> {
    let (mut typ, mut src, mut dst) = ("volume", None, None);
    let (mut read_only, mut size_bytes, mut mode) = (false, None, None);
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        match (key, value) {
            ("type", Some(t)) => typ = t,
            ("source" | "src", Some(s)) => src = Some(s),
            ("target" | "destination" | "dst", Some(d)) => dst = Some(d),
            ("readonly" | "ro", v) => read_only = flag(spec, key, v)?,
            ("tmpfs-size", Some(s)) => {
                size_bytes = Some(parse_size(s).ok_or_else(|| {
                    spec_error(spec, format!("tmpfs-size={s}: use a size like 64m"))
                })?)
            }
            ("tmpfs-mode", Some(m)) => mode = Some(parse_mode(spec, m)?),
            ("volume-driver", Some("local")) => {}
            ("bind-propagation" | "consistency" | "volume-nocopy" | "bind-nonrecursive", _) => {}
            _ => {
                return Err(spec_error(
                    spec,
                    format!(
                        "unknown field \"{field}\" (berth knows type, source, target, \
                         readonly, tmpfs-size and tmpfs-mode)"
                    ),
                ))
            }
        }
    }
    let target = check_target(
        spec,
        dst.ok_or_else(|| spec_error(spec, "target is required"))?,
    )?;
    let source = match (typ, src) {
        ("bind", Some(s)) if s.starts_with('/') => source(spec, s, false)?,
        ("bind", Some(s)) => {
            return Err(spec_error(
                spec,
                format!("the host path {s} is not absolute"),
            ))
        }
        ("bind", None) => return Err(spec_error(spec, "a bind mount needs a source")),
        ("volume", Some(s)) if valid_volume_name(s) => MountSource::Volume {
            name: s.to_string(),
            anonymous: false,
        },
        ("volume", Some(s)) => {
            return Err(spec_error(
                spec,
                format!("\"{s}\" is not a valid volume name"),
            ))
        }
        ("volume", None) => MountSource::Volume {
            name: String::new(),
            anonymous: true,
        },
        ("tmpfs", None) => MountSource::Tmpfs {
            size_bytes,
            mode,
            flags: Vec::new(),
        },
        ("tmpfs", Some(_)) => return Err(spec_error(spec, "a tmpfs takes no source")),
        (t, _) => {
            return Err(spec_error(
                spec,
                format!("unknown type \"{t}\" (use bind, volume or tmpfs)"),
            ))
        }
    };
    if (size_bytes.is_some() || mode.is_some()) && !matches!(source, MountSource::Tmpfs { .. }) {
        return Err(spec_error(
            spec,
            "tmpfs-size and tmpfs-mode are for type=tmpfs",
        ));
    }
    Ok(MountSpec {
        source,
        target,
        read_only,
    })
}

/// Parses `--tmpfs PATH[:OPTS]`, OPTS being `size=`, `mode=`, `ro`, `rw`, and the flags
/// `noexec`, `exec`, `nosuid`, `suid`, `nodev`, `dev`.
pub fn parse_tmpfs(spec: &str) -> Result<MountSpec, MountError> {
    let (path, opts) = spec.split_once(':').unwrap_or((spec, ""));
    let target = check_target(spec, path)?;
    let (mut size_bytes, mut mode, mut read_only, mut flags) = (None, None, false, Vec::new());
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("size", s)) => {
                size_bytes = Some(parse_size(s).ok_or_else(|| {
                    spec_error(spec, format!("size={s}: use a size like 64m"))
                })?)
            }
            Some(("mode", m)) => mode = Some(parse_mode(spec, m)?),
            None if opt == "ro" => read_only = true,
            None if opt == "rw" => read_only = false,
            None if matches!(opt, "noexec" | "exec" | "nosuid" | "suid" | "nodev" | "dev") => {
                flags.push(opt.to_string())
            }
            _ => {
                return Err(spec_error(
                    spec,
                    format!("unknown tmpfs option \"{opt}\" (berth knows size, mode, ro, rw, noexec, nosuid and nodev)"),
                ))
            }
        }
    }
    Ok(MountSpec {
        source: MountSource::Tmpfs {
            size_bytes,
            mode,
            flags,
        },
        target,
        read_only,
    })
}

/// Refuses two mounts on one target.
pub fn check_mounts(mounts: &[MountSpec]) -> Result<(), MountError> {
    let mut seen = std::collections::HashSet::new();
    for m in mounts {
        if !seen.insert(m.target.as_str()) {
            return Err(MountError::Duplicate(m.target.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(source: &str, create: bool) -> MountSource {
        MountSource::Bind {
            source: source.into(),
            create,
        }
    }

    #[test]
    fn volume_flags_as_docker_reads_them() {
        let m = parse_volume("/host/src:/src").unwrap();
        assert_eq!(m.source, bind("/host/src", true));
        assert_eq!((m.target.as_str(), m.read_only), ("/src", false));
        let m = parse_volume("/h:/data/:ro,z").unwrap();
        assert_eq!((m.target.as_str(), m.read_only), ("/data", true));
        let m = parse_volume("cache:/var/cache").unwrap();
        assert_eq!(
            m.source,
            MountSource::Volume {
                name: "cache".into(),
                anonymous: false
            }
        );
        let m = parse_volume("/var/lib/db").unwrap();
        assert!(matches!(
            m.source,
            MountSource::Volume {
                anonymous: true,
                ..
            }
        ));
        for bad in [
            "./src:/src",
            "src/x:/src",
            "/h:rel",
            "/h:/",
            "/h:/a:ro:x",
            "/h:/a:bogus",
            ":/a",
            "/h/../etc:/a",
            "/h:/a/../b",
            "a:/x",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
        let err = parse_volume("./src:/src").unwrap_err().to_string();
        assert!(
            err.contains("absolute") && err.contains("$PWD/src"),
            "{err}"
        );
    }

    #[test]
    fn mount_flags_as_docker_reads_them() {
        let m = parse_mount("type=bind,source=/h,target=/c,readonly").unwrap();
        assert_eq!(m.source, bind("/h", false));
        assert!(m.read_only);
        let m = parse_mount("type=bind,src=/h,dst=/c,ro=false").unwrap();
        assert!(!m.read_only);
        let m = parse_mount("source=data,target=/d").unwrap();
        assert_eq!(m.kind(), "volume");
        let m = parse_mount("type=volume,target=/d").unwrap();
        assert!(matches!(
            m.source,
            MountSource::Volume {
                anonymous: true,
                ..
            }
        ));
        let m = parse_mount("type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=1777").unwrap();
        assert_eq!(
            m.source,
            MountSource::Tmpfs {
                size_bytes: Some(64 << 20),
                mode: Some(0o1777),
                flags: vec![]
            }
        );
        for bad in [
            "type=bind,target=/c",
            "type=bind,source=rel,target=/c",
            "type=bind,source=/h",
            "type=nfs,source=/h,target=/c",
            "type=tmpfs,source=/h,target=/c",
            "type=bind,source=/h,target=/c,colour=red",
            "type=bind,source=/h,target=/c,tmpfs-size=1m",
            "type=tmpfs,target=/t,tmpfs-mode=999",
            "type=bind,source=/h,target=/c,readonly=maybe",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tmpfs_flags_and_sizes() {
        let m = parse_tmpfs("/run:size=1g,mode=755,noexec").unwrap();
        assert_eq!(
            m.source,
            MountSource::Tmpfs {
                size_bytes: Some(1 << 30),
                mode: Some(0o755),
                flags: vec!["noexec".into()]
            }
        );
        assert!(parse_tmpfs("/t").is_ok());
        assert!(parse_tmpfs("t").is_err());
        assert!(parse_tmpfs("/t:size=lots").is_err());
        assert!(parse_tmpfs("/t:uid=0").is_err());
    }

    #[test]
    fn two_mounts_on_one_target_are_refused() {
        let a = parse_volume("/a:/data").unwrap();
        let b = parse_tmpfs("/data/").unwrap();
        assert_eq!(
            check_mounts(&[a.clone(), b]),
            Err(MountError::Duplicate("/data".into()))
        );
        assert!(check_mounts(&[a, parse_tmpfs("/other").unwrap()]).is_ok());
    }

    #[test]
    fn specs_survive_the_record() {
        let m = parse_volume("cache:/c:ro").unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<MountSpec>(&json).unwrap(), m);
    }
}

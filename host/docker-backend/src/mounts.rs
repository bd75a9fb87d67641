//! docker's mounts as berth's: `HostConfig.Binds` (`-v`), `HostConfig.Mounts` (`--mount`),
//! `HostConfig.Tmpfs` (`--tmpfs`) and `Config.Volumes` (anonymous volumes) into
//! [`MountSpec`]s with berth's own parsers, and a container's mounts back into what
//! docker's inspect shows.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use berth_containers::mounts::{check_mounts, parse_tmpfs, parse_volume, valid_volume_name};
use berth_containers::{MountSource, MountSpec, RunSpec};
use berth_docker_api::{BackendError, MountPoint, MountRequest};

fn invalid(e: impl std::fmt::Display) -> BackendError {
    BackendError::InvalidArgument(e.to_string())
}

fn mount_error(m: &MountRequest, why: impl std::fmt::Display) -> BackendError {
    invalid(format!("invalid mount config for type {:?}: {why}", m.typ))
}

fn has_parent(path: &str) -> bool {
    Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
}

/// A `--mount` target: from `/`, not `/`, without `..` (the API checked the first two).
fn target(m: &MountRequest) -> Result<String, BackendError> {
    let clean = m.target.trim_end_matches('/');
    if !m.target.starts_with('/') || clean.is_empty() {
        return Err(mount_error(
            m,
            format!("the container path {} must be absolute and not /", m.target),
        ));
    }
    if has_parent(clean) {
        return Err(mount_error(
            m,
            format!("the container path {} must not contain ..", m.target),
        ));
    }
    Ok(clean.to_string())
}

/// One `HostConfig.Mounts` entry as berth's mount.
pub fn from_request(m: &MountRequest) -> Result<MountSpec, BackendError> {
    let target = target(m)?;
    let source = match m.typ.as_str() {
        "bind" => {
            if !m.source.starts_with('/') || has_parent(&m.source) {
                return Err(mount_error(
                    m,
                    format!("the host path {} must be absolute, without ..", m.source),
                ));
            }
            MountSource::Bind {
                source: PathBuf::from(&m.source),
                create: m.create_mountpoint,
            }
        }
        "volume" if m.source.is_empty() => MountSource::Volume {
            name: String::new(),
            anonymous: true,
        },
        "volume" if valid_volume_name(&m.source) => MountSource::Volume {
            name: m.source.clone(),
            anonymous: false,
        },
        "volume" => {
            return Err(mount_error(
                m,
                format!(
                    "\"{}\" is not a valid volume name: use 2 or more letters, digits, _, . \
                     and -, starting with a letter or digit (or a bind mount of a host path)",
                    m.source
                ),
            ))
        }
        "tmpfs" => {
            // berth's --tmpfs parser reads the extra options (noexec, nosuid, size=...).
            let extra = parse_tmpfs(&format!("/tmpfs:{}", m.tmpfs_options.join(",")))
                .map_err(|e| mount_error(m, e))?;
            let MountSource::Tmpfs {
                size_bytes,
                mode,
                flags,
            } = extra.source
            else {
                return Err(mount_error(m, "the tmpfs options do not describe a tmpfs"));
            };
            if m.tmpfs_mode.is_some_and(|mode| mode > 0o7777) {
                return Err(mount_error(
                    m,
                    format!(
                        "tmpfs mode {:o} is not a mode like 1777",
                        m.tmpfs_mode.unwrap_or(0)
                    ),
                ));
            }
            MountSource::Tmpfs {
                size_bytes: m.tmpfs_size_bytes.or(size_bytes),
                mode: m.tmpfs_mode.or(mode),
                flags,
            }
        }
        other => {
            return Err(invalid(format!(
                "berth does not support mounts of type \"{other}\": use bind, volume or tmpfs"
            )))
        }
    };
    Ok(MountSpec {
        source,
        target,
        read_only: m.read_only,
    })
}

/// A create body's mounts, in docker's order: binds, mounts, tmpfs, then an anonymous
/// volume for each `Config.Volumes` path no other mount covers (compose names every
/// bind's path there too). Two mounts on one target are refused.
pub fn from_config(
    binds: &[String],
    mounts: &[MountRequest],
    tmpfs: &BTreeMap<String, String>,
    volumes: &[String],
) -> Result<Vec<MountSpec>, BackendError> {
    let mut out = Vec::new();
    for b in binds {
        out.push(parse_volume(b).map_err(invalid)?);
    }
    for m in mounts {
        out.push(from_request(m)?);
    }
    for (path, opts) in tmpfs {
        let spec = if opts.is_empty() {
            path.clone()
        } else {
            format!("{path}:{opts}")
        };
        out.push(parse_tmpfs(&spec).map_err(invalid)?);
    }
    for path in volumes {
        let anonymous = parse_volume(path).map_err(invalid)?;
        if !out.iter().any(|m| m.target == anonymous.target) {
            out.push(anonymous);
        }
    }
    check_mounts(&out).map_err(invalid)?;
    Ok(out)
}

/// What a container's mounts were asked as, for inspect: `HostConfig.Binds` (host
/// folders and named volumes as `-v` strings), `HostConfig.Tmpfs` and the paths of
/// its anonymous volumes (`Config.Volumes`).
pub fn asked(mounts: &[MountSpec]) -> (Vec<String>, BTreeMap<String, String>, Vec<String>) {
    let (mut binds, mut tmpfs, mut volumes) = (Vec::new(), BTreeMap::new(), Vec::new());
    let ro = |m: &MountSpec| if m.read_only { ":ro" } else { "" };
    for m in mounts {
        match &m.source {
            MountSource::Bind { source, .. } => {
                binds.push(format!("{}:{}{}", source.display(), m.target, ro(m)))
            }
            MountSource::Volume {
                anonymous: true, ..
            } => volumes.push(m.target.clone()),
            MountSource::Volume { name, .. } => binds.push(format!("{name}:{}{}", m.target, ro(m))),
            MountSource::Tmpfs {
                size_bytes,
                mode,
                flags,
            } => {
                let mut opts: Vec<String> = Vec::new();
                if m.read_only {
                    opts.push("ro".into());
                }
                if let Some(n) = size_bytes {
                    opts.push(format!("size={n}"));
                }
                if let Some(mode) = mode {
                    opts.push(format!("mode={mode:o}"));
                }
                opts.extend(flags.iter().cloned());
                tmpfs.insert(m.target.clone(), opts.join(","));
            }
        }
    }
    (binds, tmpfs, volumes)
}

/// A container's mounts as docker's inspect `Mounts`.
pub fn points(root: &Path, spec: &RunSpec) -> Vec<MountPoint> {
    berth_engine::mounts::mount_points(root, spec)
        .into_iter()
        .map(|m| MountPoint {
            typ: m.kind.to_string(),
            name: m.name,
            source: m.source.display().to_string(),
            destination: m.destination,
            driver: if m.kind == "volume" {
                "local".into()
            } else {
                String::new()
            },
            mode: if m.rw { String::new() } else { "ro".into() },
            rw: m.rw,
            propagation: if m.kind == "bind" {
                "rprivate".into()
            } else {
                String::new()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(typ: &str, source: &str, target: &str) -> MountRequest {
        MountRequest {
            typ: typ.into(),
            source: source.into(),
            target: target.into(),
            ..MountRequest::default()
        }
    }

    #[test]
    fn binds_mounts_tmpfs_and_volumes_become_mount_specs() {
        let tmpfs: BTreeMap<String, String> = [
            ("/x".to_string(), "size=2m".to_string()),
            ("/y".to_string(), String::new()),
        ]
        .into();
        let mut t = req("tmpfs", "", "/t/");
        t.tmpfs_size_bytes = Some(1 << 20);
        t.tmpfs_mode = Some(0o1777);
        t.tmpfs_options = vec!["noexec".into()];
        let mut b = req("bind", "/src", "/src");
        b.read_only = true;
        let m = from_config(
            &["/h:/c:ro".into(), "shared:/shared:rw".into()],
            &[
                t,
                b,
                req("volume", "", "/anon"),
                req("volume", "cache", "/cache"),
            ],
            &tmpfs,
            // compose lists every path, binds' too: only /v gets an anonymous volume.
            &["/shared".into(), "/v".into(), "/c/".into()],
        )
        .unwrap();
        let targets: Vec<&str> = m.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(
            targets,
            ["/c", "/shared", "/t", "/src", "/anon", "/cache", "/x", "/y", "/v"]
        );
        assert_eq!(
            m[0].source,
            MountSource::Bind {
                source: "/h".into(),
                create: true
            }
        );
        assert!(m[0].read_only);
        assert_eq!(
            m[1].source,
            MountSource::Volume {
                name: "shared".into(),
                anonymous: false
            }
        );
        assert_eq!(
            m[2].source,
            MountSource::Tmpfs {
                size_bytes: Some(1 << 20),
                mode: Some(0o1777),
                flags: vec!["noexec".into()]
            }
        );
        assert_eq!(
            m[3].source,
            MountSource::Bind {
                source: "/src".into(),
                create: false
            },
            "--mount never creates a host folder"
        );
        assert!(m[3].read_only);
        assert!(matches!(
            m[4].source,
            MountSource::Volume {
                anonymous: true,
                ..
            }
        ));
        assert!(matches!(
            &m[6].source,
            MountSource::Tmpfs { size_bytes: Some(n), .. } if *n == 2 << 20
        ));
        assert!(matches!(
            m[8].source,
            MountSource::Volume {
                anonymous: true,
                ..
            }
        ));

        let (binds, shown_tmpfs, volumes) = asked(&m);
        assert_eq!(
            binds,
            ["/h:/c:ro", "shared:/shared", "/src:/src:ro", "cache:/cache"]
        );
        assert_eq!(shown_tmpfs["/t"], "size=1048576,mode=1777,noexec");
        assert_eq!(shown_tmpfs["/y"], "");
        assert_eq!(volumes, ["/anon", "/v"]);
    }

    #[test]
    fn bad_mounts_are_refused() {
        let none = BTreeMap::new();
        let one = |m: MountRequest| from_config(&[], &[m], &none, &[]);
        for bad in [
            req("bind", "rel", "/c"),
            req("bind", "/h/../etc", "/c"),
            req("bind", "/h", "/c/../d"),
            req("bind", "/h", "/"),
            req("volume", "x", "/c"),
            req("volume", "a/b", "/c"),
            req("npipe", "x", "/c"),
            MountRequest {
                tmpfs_options: vec!["uid=0".into()],
                ..req("tmpfs", "", "/t")
            },
            MountRequest {
                tmpfs_mode: Some(0o17777),
                ..req("tmpfs", "", "/t")
            },
        ] {
            let what = format!("{bad:?}");
            assert!(
                matches!(one(bad), Err(BackendError::InvalidArgument(_))),
                "{what}"
            );
        }
        for binds in [&["./src:/src"][..], &["/h:/a:bogus"], &["/h:/d", "/g:/d/"]] {
            let binds: Vec<String> = binds.iter().map(|b| b.to_string()).collect();
            assert!(
                matches!(
                    from_config(&binds, &[], &none, &[]),
                    Err(BackendError::InvalidArgument(_))
                ),
                "{binds:?}"
            );
        }
        let dup =
            from_config(&["/h:/d".into()], &[req("tmpfs", "", "/d")], &none, &[]).unwrap_err();
        assert!(
            dup.to_string().contains("duplicate mount point: /d"),
            "{dup}"
        );
        let bad_tmpfs: BTreeMap<String, String> =
            [("/t".to_string(), "size=lots".to_string())].into();
        assert!(from_config(&[], &[], &bad_tmpfs, &[]).is_err());
        assert!(from_config(&[], &[], &none, &["relative".into()]).is_err());
    }
}

//! A container's host folders, volumes and tmpfs mounts: the VM's virtio-fs shares are
//! mounted once in the VM, under [`SHARES_DIR`], and bound into the container from there;
//! tmpfs mounts go to the runtime as they are.

use std::io;
use std::path::{Path, PathBuf};

use berth_protocol::{ContainerMount, MountSource};
use nix::mount::{mount, MsFlags};
use oci_spec::runtime::{Mount, MountBuilder, Spec};

/// Where the VM mounts its virtio-fs shares, outside every container's root.
pub const SHARES_DIR: &str = "/run/berth/shares";

/// The OCI mount of `m`, whose share (if it is one) is mounted at `share_dir`.
fn oci_mount(m: &ContainerMount, share_dir: &Path) -> io::Result<Mount> {
    let ro = m.read_only.then(|| "ro".to_string());
    let builder = MountBuilder::default().destination(&m.target);
    let built = match &m.source {
        MountSource::Share { .. } => builder.typ("bind").source(share_dir).options(
            ["rbind", "rprivate"]
                .into_iter()
                .map(String::from)
                .chain(ro)
                .collect::<Vec<_>>(),
        ),
        MountSource::Tmpfs {
            size_bytes,
            mode,
            flags,
        } => {
            let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
            options.extend(flags.iter().cloned());
            options.extend(ro);
            if let Some(s) = size_bytes {
                options.push(format!("size={s}"));
            }
            if let Some(m) = mode {
                options.push(format!("mode={m:o}"));
            }
            builder.typ("tmpfs").source("tmpfs").options(options)
        }
    };
    built.build().map_err(io::Error::other)
}

/// Mounts the share `tag` at its place under `shares` (once: a VM runs one container,
/// but a restart creates it again).
fn mount_share(shares: &Path, tag: &str, read_only: bool) -> io::Result<PathBuf> {
    let dir = shares.join(tag);
    std::fs::create_dir_all(&dir)?;
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    match mount(Some(tag), &dir, Some("virtiofs"), flags, None::<&str>) {
        Ok(()) | Err(nix::errno::Errno::EBUSY) => Ok(dir),
        Err(e) => Err(io::Error::other(format!(
            "mounting the virtio-fs share {tag} on {}: {e} (is the VM's virtio-fs device there?)",
            dir.display()
        ))),
    }
}

/// Mounts the shares of `mounts` in the VM and adds every mount to `spec`, parents
/// before what they hold.
pub fn provide(spec: &mut Spec, mounts: &[ContainerMount]) -> io::Result<()> {
    provide_with(spec, mounts, |tag, ro| {
        mount_share(Path::new(SHARES_DIR), tag, ro)
    })
}

fn provide_with(
    spec: &mut Spec,
    mounts: &[ContainerMount],
    mut share: impl FnMut(&str, bool) -> io::Result<PathBuf>,
) -> io::Result<()> {
    let mut ordered: Vec<&ContainerMount> = mounts.iter().collect();
    ordered.sort_by_key(|m| Path::new(&m.target).components().count());
    let mut all: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    for m in ordered {
        let dir = match &m.source {
            MountSource::Share { tag } => share(tag, m.read_only)?,
            MountSource::Tmpfs { .. } => PathBuf::new(),
        };
        // A user's mount replaces a default one on the same path (docker lets `-v` or
        // `--tmpfs` cover `/dev/shm`, say).
        all.retain(|d| d.destination() != Path::new(&m.target));
        all.push(oci_mount(m, &dir)?);
    }
    spec.set_mounts(Some(all));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_bound_and_parents_come_first() {
        let mut spec = Spec::default();
        let before = spec.mounts().as_ref().map_or(0, Vec::len);
        let mounts = vec![
            ContainerMount {
                target: "/src/cache".into(),
                read_only: false,
                source: MountSource::Tmpfs {
                    size_bytes: Some(1 << 20),
                    mode: Some(0o1777),
                    flags: vec!["noexec".into()],
                },
            },
            ContainerMount {
                target: "/src".into(),
                read_only: true,
                source: MountSource::Share {
                    tag: "berth0".into(),
                },
            },
            ContainerMount {
                target: "/dev/shm".into(),
                read_only: false,
                source: MountSource::Tmpfs {
                    size_bytes: None,
                    mode: None,
                    flags: vec![],
                },
            },
        ];
        let mut asked = Vec::new();
        provide_with(&mut spec, &mounts, |tag, ro| {
            asked.push((tag.to_string(), ro));
            Ok(PathBuf::from("/run/berth/shares").join(tag))
        })
        .unwrap();
        assert_eq!(asked, [("berth0".to_string(), true)]);
        let all = spec.mounts().clone().unwrap();
        assert_eq!(all.len(), before + 2, "/dev/shm replaced the default one");
        let pos = |t: &str| all.iter().position(|m| m.destination() == Path::new(t));
        assert!(pos("/src") < pos("/src/cache"), "parents first");
        let src = &all[pos("/src").unwrap()];
        assert_eq!(src.typ().as_deref(), Some("bind"));
        assert_eq!(
            src.source().as_deref(),
            Some(Path::new("/run/berth/shares/berth0"))
        );
        assert!(src.options().as_ref().unwrap().contains(&"ro".to_string()));
        let cache = &all[pos("/src/cache").unwrap()];
        let opts = cache.options().clone().unwrap();
        for o in ["nosuid", "nodev", "noexec", "size=1048576", "mode=1777"] {
            assert!(opts.contains(&o.to_string()), "{opts:?}");
        }
    }
}

//! A container's mounts: the image's `VOLUME`s added to what the user asked, volumes and
//! host folders readied when the container is created, and the two views the VM needs
//! of them: virtio-fs shares for the VMM, and mounts for the agent.

use std::path::{Path, PathBuf};

use berth_containers::mounts::check_mounts;
use berth_containers::{ContainerRecord, MountSource, MountSpec, RunSpec, Volume, VolumeStore};
use berth_protocol::{ContainerMount, MountSource as GuestSource, MAX_MOUNTS};

use crate::error::{Context, Error, Result};
use crate::Engine;

pub use berth_containers::mounts::{parse_mount, parse_tmpfs, parse_volume};

/// Most host folders and volumes one container shares (one virtio-fs device each).
pub const MAX_SHARES: usize = berth_vmm::config::MAX_SHARES;

/// The user's mounts, then an anonymous volume for each of the image's `VOLUME`s that
/// no mount covers, checked: no two on one target, within the limits.
pub fn with_image_volumes(asked: &[MountSpec], image_volumes: &[String]) -> Result<Vec<MountSpec>> {
    let mut mounts = asked.to_vec();
    for v in image_volumes {
        let target = v.trim_end_matches('/');
        if target.is_empty()
            || !target.starts_with('/')
            || mounts.iter().any(|m| m.target == target)
        {
            continue;
        }
        mounts.push(MountSpec {
            source: MountSource::Volume {
                name: String::new(),
                anonymous: true,
            },
            target: target.to_string(),
            read_only: false,
        });
    }
    check_mounts(&mounts).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    if mounts.len() > MAX_MOUNTS {
        return Err(Error::InvalidArgument(format!(
            "{} mounts are too many: berth mounts at most {MAX_MOUNTS}",
            mounts.len()
        )));
    }
    let shares = mounts.iter().filter(|m| is_share(m)).count();
    if shares > MAX_SHARES {
        return Err(Error::InvalidArgument(format!(
            "{shares} host folders and volumes are too many: berth shares at most {MAX_SHARES}"
        )));
    }
    Ok(mounts)
}

/// Whether `m` takes a virtio-fs share (host folders and volumes do, tmpfs mounts not).
pub(crate) fn is_share(m: &MountSpec) -> bool {
    !matches!(m.source, MountSource::Tmpfs { .. })
}

/// The virtio-fs tag of a container's `i`-th share.
fn tag(i: usize) -> String {
    format!("berth{i}")
}

/// One virtio-fs share of a container's VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The device's tag.
    pub tag: String,
    /// The host folder.
    pub path: PathBuf,
    /// Whether the device refuses writes.
    pub read_only: bool,
}

/// The shares of a container's VM, in the order of its mounts.
pub fn shares(root: &Path, spec: &RunSpec) -> Result<Vec<Share>> {
    let volumes = VolumeStore::open(root)?;
    let mut out = Vec::new();
    for m in &spec.mounts {
        let path = match &m.source {
            MountSource::Bind { source, .. } => source.clone(),
            MountSource::Volume { name, .. } => {
                volumes.get(name)?;
                volumes.data(name)
            }
            MountSource::Tmpfs { .. } => continue,
        };
        if !path.is_dir() {
            return Err(Error::NotFound(format!(
                "the host folder {} of mount {} is gone: recreate it, or remove the container",
                path.display(),
                m.target
            )));
        }
        out.push(Share {
            tag: tag(out.len()),
            path,
            read_only: m.read_only,
        });
    }
    Ok(out)
}

/// The mounts the agent makes in the container, the shares tagged as [`shares`] tags them.
pub fn guest_mounts(spec: &RunSpec) -> Vec<ContainerMount> {
    let mut share = 0;
    spec.mounts
        .iter()
        .map(|m| ContainerMount {
            target: m.target.clone(),
            read_only: m.read_only,
            source: match &m.source {
                MountSource::Tmpfs {
                    size_bytes,
                    mode,
                    flags,
                } => GuestSource::Tmpfs {
                    size_bytes: *size_bytes,
                    mode: *mode,
                    flags: flags.clone(),
                },
                _ => {
                    share += 1;
                    GuestSource::Share {
                        tag: tag(share - 1),
                    }
                }
            },
        })
        .collect()
}

/// One mount as `inspect` shows it (docker's `Mounts` entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    pub kind: &'static str,
    /// The volume's name (empty for others).
    pub name: String,
    /// The host path (a volume's data folder; empty for a tmpfs).
    pub source: PathBuf,
    /// The path in the container.
    pub destination: String,
    /// Whether it is writable.
    pub rw: bool,
}

/// The mounts of `spec` as `inspect` shows them.
pub fn mount_points(root: &Path, spec: &RunSpec) -> Vec<MountPoint> {
    let volumes = VolumeStore::open(root).ok();
    spec.mounts
        .iter()
        .map(|m| {
            let (name, source) = match &m.source {
                MountSource::Bind { source, .. } => (String::new(), source.clone()),
                MountSource::Volume { name, .. } => (
                    name.clone(),
                    volumes.as_ref().map(|v| v.data(name)).unwrap_or_default(),
                ),
                MountSource::Tmpfs { .. } => (String::new(), PathBuf::new()),
            };
            MountPoint {
                kind: m.kind(),
                name,
                source,
                destination: m.target.clone(),
                rw: !m.read_only,
            }
        })
        .collect()
}

/// The volumes a record's mounts name.
pub fn volume_names(record: &ContainerRecord) -> impl Iterator<Item = (&str, bool)> {
    record.spec.mounts.iter().filter_map(|m| match &m.source {
        MountSource::Volume { name, anonymous } => Some((name.as_str(), *anonymous)),
        _ => None,
    })
}

impl Engine {
    /// The volume store under the state root.
    pub fn volumes(&self) -> Result<VolumeStore> {
        Ok(VolumeStore::open(&self.root)?)
    }

    /// Readies the mounts of a container being created: anonymous volumes made and named,
    /// named volumes made when missing, host folders of `-v` made when missing and those
    /// of `--mount` required. Returns the anonymous volumes made, for an undo.
    pub(crate) fn ready_mounts(&self, mounts: &mut [MountSpec]) -> Result<Vec<String>> {
        let volumes = self.volumes()?;
        let mut made = Vec::new();
        let result = (|| {
            for m in mounts.iter_mut() {
                match &mut m.source {
                    MountSource::Volume { name, anonymous } => {
                        let v = volumes.create(
                            (!name.is_empty()).then_some(name.as_str()),
                            Default::default(),
                            *anonymous,
                        )?;
                        if *anonymous {
                            made.push(v.name.clone());
                        }
                        *name = v.name;
                    }
                    MountSource::Bind { source, create } => {
                        if *create && !source.exists() {
                            std::fs::create_dir_all(&*source).with_context(|| {
                                format!("create the host folder {} for -v", source.display())
                            })?;
                        }
                        let meta = std::fs::metadata(&*source).map_err(|_| {
                            Error::InvalidArgument(format!(
                                "invalid mount config: bind source path does not exist: {}",
                                source.display()
                            ))
                        })?;
                        if !meta.is_dir() {
                            return Err(Error::InvalidArgument(format!(
                                "{} is a file: berth shares host folders, not single files; \
                                 mount the folder that holds it",
                                source.display()
                            )));
                        }
                    }
                    MountSource::Tmpfs { .. } => {}
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            self.remove_volumes(&made);
            return Err(e);
        }
        Ok(made)
    }

    /// Removes anonymous volumes, best effort (a failure is logged).
    pub(crate) fn remove_volumes(&self, names: &[String]) {
        let Ok(volumes) = self.volumes() else { return };
        for n in names {
            if let Err(e) = volumes.remove(n) {
                tracing::warn!("cannot remove volume {n}: {e}");
            }
        }
    }

    /// The anonymous volumes of `record` no other container uses.
    pub(crate) fn anonymous_volumes(&self, record: &ContainerRecord) -> Result<Vec<String>> {
        let others = self.store.list()?;
        Ok(volume_names(record)
            .filter(|(_, anonymous)| *anonymous)
            .map(|(n, _)| n)
            .filter(|n| {
                !others
                    .iter()
                    .filter(|o| o.id != record.id)
                    .any(|o| volume_names(o).any(|(m, _)| m == *n))
            })
            .map(str::to_string)
            .collect())
    }

    /// Creates volume `name` (a random name when `None`), or returns the existing one.
    pub fn volume_create(
        &self,
        name: Option<&str>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Volume> {
        Ok(self.volumes()?.create(name, labels, false)?)
    }

    /// Every volume, with the containers using each.
    pub fn volume_list(&self) -> Result<Vec<(Volume, Vec<String>)>> {
        let containers = self.store.list()?;
        Ok(self
            .volumes()?
            .list()?
            .into_iter()
            .map(|v| {
                let users = containers
                    .iter()
                    .filter(|c| volume_names(c).any(|(n, _)| n == v.name))
                    .map(|c| c.name.clone())
                    .collect();
                (v, users)
            })
            .collect())
    }

    /// Volume `name` and where its data lives.
    pub fn volume(&self, name: &str) -> Result<(Volume, PathBuf)> {
        let volumes = self.volumes()?;
        Ok((volumes.get(name)?, volumes.data(name)))
    }

    /// Removes volume `name`, refused while a container (running or not) uses it.
    pub fn volume_remove(&self, name: &str) -> Result<()> {
        let volumes = self.volumes()?;
        volumes.get(name)?;
        let users: Vec<String> = self
            .store
            .list()?
            .into_iter()
            .filter(|c| volume_names(c).any(|(n, _)| n == name))
            .map(|c| c.short_id().to_string())
            .collect();
        if !users.is_empty() {
            return Err(berth_containers::Error::VolumeInUse {
                name: name.to_string(),
                containers: users.join(", "),
            }
            .into());
        }
        Ok(volumes.remove(name)?)
    }

    /// Removes the volumes no container uses (with `all`, named ones too; else only
    /// anonymous ones, as docker's `volume prune`). Returns the names and bytes freed.
    pub fn volume_prune(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut bytes = 0;
        for (v, users) in self.volume_list()? {
            if !users.is_empty() || !(all || v.anonymous) {
                continue;
            }
            let size = dir_size(&self.volumes()?.data(&v.name));
            match self.volume_remove(&v.name) {
                Ok(()) => {
                    bytes += size;
                    removed.push(v.name);
                }
                Err(e) => tracing::warn!("cannot prune volume {}: {e}", v.name),
            }
        }
        Ok((removed, bytes))
    }
}

/// Bytes in the files under `dir`, not following symlinks, best effort.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_containers::mounts::{parse_tmpfs, parse_volume};

    #[test]
    fn image_volumes_fill_what_the_user_left() {
        let asked = vec![parse_volume("/h:/data").unwrap()];
        let m = with_image_volumes(&asked, &["/data".into(), "/var/lib/x/".into()]).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].target, "/var/lib/x");
        assert!(matches!(
            m[1].source,
            MountSource::Volume {
                anonymous: true,
                ..
            }
        ));
        let dup = vec![parse_volume("/h:/a").unwrap(), parse_tmpfs("/a").unwrap()];
        assert_eq!(
            with_image_volumes(&dup, &[]).unwrap_err().kind(),
            crate::ErrorKind::InvalidArgument
        );
        let many: Vec<_> = (0..=MAX_SHARES)
            .map(|i| parse_volume(&format!("/h:/m{i}")).unwrap())
            .collect();
        assert!(with_image_volumes(&many, &[]).is_err());
    }

    #[test]
    fn shares_and_guest_mounts_agree_on_tags() {
        let root = tempfile::tempdir().unwrap();
        let host = root.path().join("src");
        std::fs::create_dir(&host).unwrap();
        let v = VolumeStore::open(root.path()).unwrap();
        v.create(Some("cache"), Default::default(), false).unwrap();
        let spec = RunSpec {
            mounts: vec![
                parse_volume(&format!("{}:/src:ro", host.display())).unwrap(),
                parse_tmpfs("/tmp").unwrap(),
                parse_volume("cache:/cache").unwrap(),
            ],
            ..RunSpec::default()
        };
        let shares = shares(root.path(), &spec).unwrap();
        assert_eq!(
            shares,
            [
                Share {
                    tag: "berth0".into(),
                    path: host.clone(),
                    read_only: true
                },
                Share {
                    tag: "berth1".into(),
                    path: v.data("cache"),
                    read_only: false
                }
            ]
        );
        let guest = guest_mounts(&spec);
        assert_eq!(
            guest[2].source,
            GuestSource::Share {
                tag: "berth1".into()
            }
        );
        assert!(matches!(guest[1].source, GuestSource::Tmpfs { .. }));
        std::fs::remove_dir(&host).unwrap();
        assert_eq!(
            super::shares(root.path(), &spec).unwrap_err().kind(),
            crate::ErrorKind::NotFound,
            "a vanished host folder is named"
        );
    }
}

//! Where a container's layers and scratch space are in this VM. The host names a disk by
//! the serial it gave it, never by a device name it would have to guess, and may give a
//! byte range of it (an image's layers share one disk). This turns those into the
//! runtime's devices and folders, reading `/sys/block`, so call it off the async threads.

use std::path::{Path, PathBuf};

use berth_protocol::{ByteRange, ErrorKind, Source, WireError};
use berth_runtime::{Layer, Scratch};

/// Where the kernel lists block devices.
const SYS_BLOCK: &str = "/sys/block";
/// Most block devices looked at for a serial (a berth VM has a few dozen at most).
const MAX_SCANNED: usize = 4096;
/// Where whole disks shared by the VM's containers ([`Source::DiskDir`]) are mounted, one
/// folder per device name.
const SHARED_DISKS: &str = "/run/berth-disks";

/// Serialises mounting shared disks, so that two creates never mount one twice.
static SHARED_MOUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The layers and the scratch space of a create request. `/sys/block` is read once, when
/// a source names a disk by its serial, however many layers share that disk.
pub fn sources(
    layers: &[Source],
    scratch: Option<&Source>,
) -> Result<(Vec<Layer>, Scratch), WireError> {
    let mut disks = Disks::new(Path::new(SYS_BLOCK));
    let layers = layers
        .iter()
        .enumerate()
        .map(|(i, s)| layer(&mut disks, i, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((layers, scratch_space(&mut disks, scratch)?))
}

/// Layer `i` of a create request.
fn layer(disks: &mut Disks, i: usize, s: &Source) -> Result<Layer, WireError> {
    let field = format!("layers[{i}]");
    match s {
        Source::Dir { path } => Ok(Layer::Dir(PathBuf::from(path))),
        Source::Device { path, fstype } => Ok(Layer::Device {
            path: device_path(&field, path)?,
            fstype: fstype.clone(),
            range: None,
        }),
        Source::Disk {
            serial,
            range,
            fstype,
        } => Ok(Layer::Device {
            path: disks.by_serial(&field, serial)?,
            fstype: fstype.clone(),
            range: range.map(|r| checked(&field, r)).transpose()?,
        }),
        Source::DiskDir {
            serial,
            fstype,
            dir,
        } => Ok(Layer::Dir(disk_dir(disks, &field, serial, fstype, dir)?)),
    }
}

/// The folder `dir` of the whole disk with serial `serial`, mounted once for the VM.
fn disk_dir(
    disks: &mut Disks,
    field: &str,
    serial: &str,
    fstype: &Option<String>,
    dir: &str,
) -> Result<PathBuf, WireError> {
    let rel = relative_dir(field, dir)?;
    let dev = disks.by_serial(field, serial)?;
    let name = dev.file_name().unwrap_or_default();
    let target = Path::new(SHARED_DISKS).join(name);
    let _one_at_a_time = SHARED_MOUNT.lock().unwrap_or_else(|e| e.into_inner());
    if !is_mounted(&target) {
        berth_runtime::mount_shared(&dev, &target, fstype.as_deref())
            .map_err(|e| WireError::new(ErrorKind::System, format!("{field}: {e}")))?;
    }
    Ok(target.join(rel))
}

/// Whether `p` is the root of a mount (its device differs from its parent's).
fn is_mounted(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(p), p.parent().map(std::fs::metadata)) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// A [`Source::DiskDir`] folder: plain names joined by `/`, nothing that climbs out.
fn relative_dir(field: &str, dir: &str) -> Result<PathBuf, WireError> {
    let ok = !dir.is_empty()
        && dir.len() <= berth_protocol::MAX_DISK_DIR
        && dir
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if !ok {
        return Err(invalid(
            field,
            format!(
                "{dir:?} is not a folder of the disk: give plain names joined by /, \
                 at most {} bytes",
                berth_protocol::MAX_DISK_DIR
            ),
        ));
    }
    Ok(PathBuf::from(dir))
}

/// The scratch space of a create request; a tmpfs when there is none.
fn scratch_space(disks: &mut Disks, s: Option<&Source>) -> Result<Scratch, WireError> {
    let field = "scratch";
    match s {
        None => Ok(Scratch::Tmpfs),
        Some(Source::Dir { path }) => Ok(Scratch::Dir(PathBuf::from(path))),
        Some(Source::Device { path, fstype }) => Ok(Scratch::Device {
            path: device_path(field, path)?,
            fstype: fstype.clone(),
        }),
        Some(Source::Disk {
            serial,
            range,
            fstype,
        }) => {
            if range.is_some() {
                return Err(invalid(
                    field,
                    "the scratch space is a whole disk, not a range of one".into(),
                ));
            }
            Ok(Scratch::Device {
                path: disks.by_serial(field, serial)?,
                fstype: fstype.clone(),
            })
        }
        Some(Source::DiskDir {
            serial,
            fstype,
            dir,
        }) => {
            let d = disk_dir(disks, field, serial, fstype, dir)?;
            std::fs::create_dir_all(&d).map_err(|e| {
                WireError::new(
                    ErrorKind::System,
                    format!("{field}: creating {}: {e}", d.display()),
                )
            })?;
            Ok(Scratch::Dir(d))
        }
    }
}

/// The VM's block devices and their serials, listed from `sys_block` on first use.
struct Disks<'a> {
    sys_block: &'a Path,
    /// `(name, serial)` of each device that has a serial, by name.
    listed: Option<Vec<(String, String)>>,
}

impl<'a> Disks<'a> {
    fn new(sys_block: &'a Path) -> Self {
        Self {
            sys_block,
            listed: None,
        }
    }

    /// The `/dev` node of the block device whose serial is `serial`.
    fn by_serial(&mut self, field: &str, serial: &str) -> Result<PathBuf, WireError> {
        let listed = match &mut self.listed {
            Some(listed) => listed,
            none => none.insert(list(self.sys_block, field)?),
        };
        if let Some((name, _)) = listed.iter().find(|(_, s)| s == serial) {
            return Ok(Path::new("/dev").join(name));
        }
        let seen: Vec<String> = listed.iter().map(|(n, s)| format!("{n} ({s})")).collect();
        Err(invalid(
            field,
            format!(
                "no disk has serial {serial:?}; the VM's disks: {}",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            ),
        ))
    }
}

/// Every block device under `sys_block` that has a serial, as `(name, serial)`, by name.
fn list(sys_block: &Path, field: &str) -> Result<Vec<(String, String)>, WireError> {
    let entries = std::fs::read_dir(sys_block).map_err(|e| {
        WireError::new(
            ErrorKind::System,
            format!("{field}: listing {}: {e}", sys_block.display()),
        )
    })?;
    let mut listed = Vec::new();
    for entry in entries.flatten().take(MAX_SCANNED) {
        let Ok(serial) = std::fs::read_to_string(entry.path().join("serial")) else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        listed.push((name, serial.trim_end().to_string()));
    }
    listed.sort();
    Ok(listed)
}

fn invalid(field: &str, message: String) -> WireError {
    WireError {
        field: Some(field.to_string()),
        ..WireError::new(ErrorKind::InvalidConfig, format!("{field}: {message}"))
    }
}

fn device_path(field: &str, path: &str) -> Result<PathBuf, WireError> {
    if !path.starts_with("/dev/") {
        return Err(invalid(field, format!("{path} is not a device under /dev")));
    }
    Ok(PathBuf::from(path))
}

fn checked(field: &str, r: ByteRange) -> Result<(u64, u64), WireError> {
    if !r.is_valid() {
        return Err(invalid(
            field,
            format!(
                "bytes {}+{} are not whole 512-byte sectors of a disk",
                r.offset, r.length
            ),
        ));
    }
    Ok((r.offset, r.length))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys_block(disks: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, serial) in disks {
            std::fs::create_dir(d.path().join(name)).unwrap();
            std::fs::write(d.path().join(name).join("serial"), format!("{serial}\n")).unwrap();
        }
        // A device without a serial (a loop device) is passed over.
        std::fs::create_dir(d.path().join("loop0")).unwrap();
        d
    }

    #[test]
    fn disks_are_found_by_serial_whatever_their_order() {
        let d = sys_block(&[("vdb", "berth-scratch"), ("vda", "berth-layers")]);
        let mut disks = Disks::new(d.path());
        assert_eq!(
            disks.by_serial("scratch", "berth-scratch").unwrap(),
            Path::new("/dev/vdb")
        );
        // Listed once: later lookups use that listing, not /sys/block again.
        std::fs::remove_dir_all(d.path().join("vda")).unwrap();
        assert_eq!(
            disks.by_serial("layers[0]", "berth-layers").unwrap(),
            Path::new("/dev/vda")
        );
        let e = disks.by_serial("layers[3]", "berth-nope").unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        assert_eq!(e.field.as_deref(), Some("layers[3]"));
        assert!(
            e.message
                .contains("vda (berth-layers), vdb (berth-scratch)"),
            "{}",
            e.message
        );
    }

    #[test]
    fn bad_sources_are_refused_with_their_field() {
        let mut disks = Disks::new(Path::new("/nonexistent"));
        let e = layer(
            &mut disks,
            2,
            &Source::Device {
                path: "/etc/passwd".into(),
                fstype: None,
            },
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("layers[2]"));
        let e = checked(
            "layers[1]",
            ByteRange {
                offset: 100,
                length: 512,
            },
        )
        .unwrap_err();
        assert!(
            e.message.contains("layers[1]: bytes 100+512"),
            "{}",
            e.message
        );
        let e = scratch_space(
            &mut disks,
            Some(&Source::Disk {
                serial: "berth-scratch".into(),
                range: Some(ByteRange {
                    offset: 0,
                    length: 512,
                }),
                fstype: None,
            }),
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("scratch"));
        assert_eq!(scratch_space(&mut disks, None).unwrap(), Scratch::Tmpfs);
    }

    #[test]
    fn a_disk_folder_is_plain_names_and_never_climbs_out() {
        assert_eq!(
            relative_dir("layers[2]", "build/3/upper").unwrap(),
            PathBuf::from("build/3/upper")
        );
        let long = "a/".repeat(berth_protocol::MAX_DISK_DIR);
        for bad in [
            "", "/abs", "a/../b", "..", "a//b", "./a", "a/", &long, "a\0b",
        ] {
            let e = relative_dir("layers[2]", bad).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("layers[2]"), "{bad:?}");
            assert!(e.message.contains("not a folder of the disk"), "{bad:?}");
        }
    }
}

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

/// Layer `i` of a create request.
pub fn layer(i: usize, s: &Source) -> Result<Layer, WireError> {
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
            path: by_serial(Path::new(SYS_BLOCK), &field, serial)?,
            fstype: fstype.clone(),
            range: range.map(|r| checked(&field, r)).transpose()?,
        }),
    }
}

/// The scratch space of a create request; a tmpfs when there is none.
pub fn scratch(s: Option<&Source>) -> Result<Scratch, WireError> {
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
                path: by_serial(Path::new(SYS_BLOCK), field, serial)?,
                fstype: fstype.clone(),
            })
        }
    }
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

/// The `/dev` node of the block device under `sys_block` whose `serial` is `serial`.
fn by_serial(sys_block: &Path, field: &str, serial: &str) -> Result<PathBuf, WireError> {
    let entries = std::fs::read_dir(sys_block).map_err(|e| {
        WireError::new(
            ErrorKind::System,
            format!("{field}: listing {}: {e}", sys_block.display()),
        )
    })?;
    let mut seen = Vec::new();
    for entry in entries.flatten().take(MAX_SCANNED) {
        let Ok(found) = std::fs::read_to_string(entry.path().join("serial")) else {
            continue;
        };
        let name = entry.file_name().to_string_lossy().into_owned();
        if found.trim_end() == serial {
            return Ok(Path::new("/dev").join(name));
        }
        seen.push(format!("{name} ({})", found.trim_end()));
    }
    seen.sort();
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
        assert_eq!(
            by_serial(d.path(), "scratch", "berth-scratch").unwrap(),
            Path::new("/dev/vdb")
        );
        assert_eq!(
            by_serial(d.path(), "layers[0]", "berth-layers").unwrap(),
            Path::new("/dev/vda")
        );
        let e = by_serial(d.path(), "layers[3]", "berth-nope").unwrap_err();
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
        let e = layer(
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
        let e = scratch(Some(&Source::Disk {
            serial: "berth-scratch".into(),
            range: Some(ByteRange {
                offset: 0,
                length: 512,
            }),
            fstype: None,
        }))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("scratch"));
        assert_eq!(scratch(None).unwrap(), Scratch::Tmpfs);
    }
}

//! Packing a container's overlay upper directory as an OCI layer tar.
//!
//! overlayfs records a deleted file as a 0/0 character device and a directory that hides
//! its lower contents with the `trusted.overlay.opaque=y` xattr. OCI layers use
//! `.wh.NAME` files and a `.wh..wh..opq` file instead; this module converts the former into
//! the latter. Hard links inside the upper dir stay hard links.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use tar::{EntryType, Header};

use crate::error::{Result, RuntimeError};

/// OCI whiteout prefix.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// OCI opaque-directory marker.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 256];
    // SAFETY: valid C strings and a buffer of buf.len() bytes.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        None
    } else {
        Some(buf[..r as usize].to_vec())
    }
}

/// Whether `dir` is an opaque overlay directory.
pub fn is_opaque(dir: &Path) -> bool {
    ["trusted.overlay.opaque", "user.overlay.opaque"]
        .iter()
        .any(|x| get_xattr(dir, x).as_deref() == Some(b"y"))
}

fn header_for(meta: &std::fs::Metadata, kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn empty_file_header() -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(0);
    h.set_mtime(0);
    h
}

fn io_err<'a>(what: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> RuntimeError + 'a {
    move |e| RuntimeError::io(what, p, e)
}

/// Writes the OCI layer tar of `upper` to `out`. Returns the number of entries.
///
/// `mount_targets` (relative paths, like `etc/hosts`) are left out while they are empty
/// regular files: the files the runtime made only to bind-mount over, which docker keeps
/// out of commits too.
pub fn write_layer<W: Write>(upper: &Path, out: W, mount_targets: &[&Path]) -> Result<u64> {
    let mut b = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let mut count = 0;
    walk(
        upper,
        Path::new(""),
        mount_targets,
        &mut b,
        &mut links,
        &mut count,
    )?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err("finishing the tar of", upper))?;
    Ok(count)
}

fn walk<W: Write>(
    root: &Path,
    rel: &Path,
    skip: &[&Path],
    b: &mut tar::Builder<W>,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
    count: &mut u64,
) -> Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io_err("reading", &dir))?
        .collect::<std::result::Result<_, _>>()
        .map_err(io_err("reading", &dir))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let path = e.path();
        let relp = rel.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(io_err("inspecting", &path))?;
        let ft = meta.file_type();
        if ft.is_file() && meta.len() == 0 && skip.contains(&relp.as_path()) {
            continue;
        }
        let add = |b: &mut tar::Builder<W>, h: &mut Header, p: &Path, data: &[u8]| {
            b.append_data(h, p, data)
                .map_err(|e| RuntimeError::io("writing the tar entry", p, e))
        };
        if ft.is_char_device() && meta.rdev() == 0 {
            let mut wh = std::ffi::OsString::from(WHITEOUT_PREFIX);
            wh.push(&name);
            add(b, &mut empty_file_header(), &rel.join(wh), &[])?;
            *count += 1;
            continue;
        }
        if ft.is_dir() {
            let mut h = header_for(&meta, EntryType::Directory);
            add(b, &mut h, &relp, &[])?;
            *count += 1;
            if is_opaque(&path) {
                add(b, &mut empty_file_header(), &relp.join(OPAQUE_MARKER), &[])?;
                *count += 1;
            }
            walk(root, &relp, skip, b, links, count)?;
            continue;
        }
        if !ft.is_symlink() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                let mut h = header_for(&meta, EntryType::Link);
                b.append_link(&mut h, &relp, first)
                    .map_err(|e| RuntimeError::io("writing the tar entry", &relp, e))?;
                *count += 1;
                continue;
            }
            links.insert(key, relp.clone());
        }
        if ft.is_file() {
            let mut h = header_for(&meta, EntryType::Regular);
            h.set_size(meta.len());
            let f = std::fs::File::open(&path).map_err(io_err("opening", &path))?;
            b.append_data(&mut h, &relp, f)
                .map_err(|e| RuntimeError::io("writing the tar entry", &relp, e))?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io_err("reading link", &path))?;
            let mut h = header_for(&meta, EntryType::Symlink);
            b.append_link(&mut h, &relp, &target)
                .map_err(|e| RuntimeError::io("writing the tar entry", &relp, e))?;
        } else {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else if ft.is_fifo() {
                EntryType::Fifo
            } else {
                // Sockets do not belong in a layer.
                continue;
            };
            let mut h = header_for(&meta, kind);
            let rdev = meta.rdev();
            h.set_device_major(libc::major(rdev)).ok();
            h.set_device_minor(libc::minor(rdev)).ok();
            add(b, &mut h, &relp, &[])?;
        }
        *count += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_files_links_and_dirs_are_packed() {
        let t = tempfile::tempdir().unwrap();
        let u = t.path();
        std::fs::create_dir_all(u.join("etc/app")).unwrap();
        std::fs::write(u.join("etc/app/conf"), b"x=1\n").unwrap();
        std::fs::hard_link(u.join("etc/app/conf"), u.join("etc/conf2")).unwrap();
        std::os::unix::fs::symlink("app/conf", u.join("etc/link")).unwrap();
        let mut out = Vec::new();
        std::fs::write(u.join("etc/hosts"), b"").unwrap();
        std::fs::write(u.join("etc/hostname"), b"kept\n").unwrap();
        write_layer(
            u,
            &mut out,
            &[Path::new("etc/hosts"), Path::new("etc/hostname")],
        )
        .unwrap();
        let mut a = tar::Archive::new(&out[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            seen.push((
                e.path().unwrap().display().to_string(),
                e.header().entry_type(),
            ));
        }
        assert!(seen.contains(&("etc/app/conf".into(), EntryType::Regular)));
        assert!(seen.contains(&("etc/link".into(), EntryType::Symlink)));
        // "app" sorts before "conf2": the second name of the inode becomes a hard link.
        assert!(seen.contains(&("etc/conf2".into(), EntryType::Link)));
        // An empty mount target stays out; one with content is the user's and goes in.
        assert!(!seen.iter().any(|(p, _)| p == "etc/hosts"), "{seen:?}");
        assert!(seen.contains(&("etc/hostname".into(), EntryType::Regular)));
    }
}

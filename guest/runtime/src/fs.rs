//! Path helpers that never leave a container's root.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::error::{Result, RuntimeError};

/// Resolves `path` (taken as inside the container) to a host path under `root`, following
/// symlinks as the container would see them: an absolute link restarts at `root`, and `..`
/// never climbs above it. Components that do not exist are appended as they are.
pub fn resolve_in_root(root: &Path, path: impl AsRef<Path>) -> Result<PathBuf> {
    let mut todo: VecDeque<OsString> = components(path.as_ref());
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        let mut cand = root.to_path_buf();
        cand.extend(&done);
        cand.push(&c);
        match std::fs::symlink_metadata(&cand) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(RuntimeError::io(
                        "resolving",
                        path.as_ref(),
                        std::io::Error::from_raw_os_error(libc::ELOOP),
                    ));
                }
                let target = std::fs::read_link(&cand)
                    .map_err(|e| RuntimeError::io("reading link", &cand, e))?;
                if target.is_absolute() {
                    done.clear();
                }
                for t in components(&target).into_iter().rev() {
                    todo.push_front(t);
                }
            }
            _ => done.push(c),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&done);
    Ok(out)
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Joins a container path under `root` lexically (no symlinks followed), refusing `..`.
pub fn join_lexical(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::RootDir | Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        symlink("/usr/bin", r.join("bin")).unwrap();
        symlink("../../../../../etc", r.join("usr/escape")).unwrap();
        symlink("/", r.join("rootlink")).unwrap();
        assert_eq!(resolve_in_root(r, "/bin/sh").unwrap(), r.join("usr/bin/sh"));
        assert_eq!(
            resolve_in_root(r, "/usr/escape/passwd").unwrap(),
            r.join("etc/passwd")
        );
        assert_eq!(resolve_in_root(r, "/rootlink/../x").unwrap(), r.join("x"));
        symlink("loop", r.join("loop")).unwrap();
        assert!(resolve_in_root(r, "/loop").is_err());
        assert_eq!(join_lexical(r, Path::new("/a/./b")).unwrap(), r.join("a/b"));
        assert!(join_lexical(r, Path::new("/a/../b")).is_none());
    }
}

//! The files docker gives every container: `/etc/hostname` and `/etc/hosts`, written per
//! container and bind-mounted over the image's, so that the container's own name resolves
//! and the image's files stay untouched (and out of `commit`).

use std::io;
use std::path::Path;

use oci_spec::runtime::{Mount, MountBuilder, Spec};

/// Where each file goes in the container, and its name in the per-container folder.
const FILES: [(&str, &str); 2] = [("/etc/hostname", "hostname"), ("/etc/hosts", "hosts")];

/// The files' places relative to the container's root (`etc/hosts`), for `commit` to leave
/// out the empty files made to mount them on.
pub fn mount_targets() -> Vec<&'static Path> {
    FILES
        .iter()
        .map(|(dest, _)| Path::new(dest.trim_start_matches('/')))
        .collect()
}

/// The container's hostname: the spec's, else the first 12 digits of its ID (docker's).
pub fn hostname(spec: &Spec, id: &str) -> String {
    spec.hostname()
        .as_deref()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| id.chars().take(12).collect())
}

/// `/etc/hosts`: loopback names, and the hostname on 127.0.1.1 (there is no network yet).
pub fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n\
         127.0.1.1\t{hostname}\n"
    )
}

/// Writes the files into `dir` and adds their bind mounts to `spec`, leaving alone any
/// the spec already mounts (a user's volume wins).
pub fn provide(spec: &mut Spec, dir: &Path, id: &str) -> io::Result<()> {
    let name = hostname(spec, id);
    std::fs::create_dir_all(dir)?;
    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    for (dest, file) in FILES {
        if mounts.iter().any(|m| m.destination() == Path::new(dest)) {
            continue;
        }
        let text = match file {
            "hostname" => format!("{name}\n"),
            _ => hosts(&name),
        };
        let path = dir.join(file);
        std::fs::write(&path, text)?;
        let mount = MountBuilder::default()
            .destination(dest)
            .typ("bind")
            .source(&path)
            .options(vec!["rbind".to_string(), "rprivate".to_string()])
            .build()
            .map_err(io::Error::other)?;
        mounts.push(mount);
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_and_mounted_unless_the_spec_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::default();
        spec.set_hostname(Some("web".into()));
        let before = spec.mounts().as_ref().map_or(0, Vec::len);
        provide(&mut spec, dir.path(), "0123456789abcdef").unwrap();
        let mounts = spec.mounts().clone().unwrap();
        assert_eq!(mounts.len(), before + 2);
        let hosts_mount = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/etc/hosts"))
            .unwrap();
        assert_eq!(hosts_mount.typ().as_deref(), Some("bind"));
        let text = std::fs::read_to_string(hosts_mount.source().as_ref().unwrap()).unwrap();
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"), "{text}");
        assert!(text.ends_with("127.0.1.1\tweb\n"), "{text}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("hostname")).unwrap(),
            "web\n"
        );

        // A spec that mounts /etc/hosts itself keeps its own.
        let dir2 = tempfile::tempdir().unwrap();
        let mut mine = Spec::default();
        mine.set_hostname(None);
        let own = MountBuilder::default()
            .destination("/etc/hosts")
            .typ("bind")
            .source("/somewhere/hosts")
            .build()
            .unwrap();
        let mut ms = mine.mounts().clone().unwrap_or_default();
        ms.push(own);
        mine.set_mounts(Some(ms));
        provide(&mut mine, dir2.path(), "0123456789abcdef").unwrap();
        let ms = mine.mounts().clone().unwrap();
        let hosts: Vec<_> = ms
            .iter()
            .filter(|m| m.destination() == Path::new("/etc/hosts"))
            .collect();
        assert_eq!(hosts.len(), 1);
        assert_eq!(
            hosts[0].source().as_deref(),
            Some(Path::new("/somewhere/hosts"))
        );
        assert!(!dir2.path().join("hosts").exists());
        assert_eq!(
            std::fs::read_to_string(dir2.path().join("hostname")).unwrap(),
            "0123456789ab\n",
            "docker's default hostname: the short ID"
        );
    }
}

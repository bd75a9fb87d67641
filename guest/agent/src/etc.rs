//! The files docker gives every container: `/etc/hostname`, `/etc/hosts` and, with a
//! network, `/etc/resolv.conf`, written per container and bind-mounted over the image's,
//! so that the container's own name resolves, its resolver is the one the host chose, and
//! the image's files stay untouched (and out of `commit`).

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use berth_protocol::{HostEntry, NetworkConfig};
use oci_spec::runtime::{Mount, MountBuilder, Spec};

/// Where each file goes in the container, and its name in the per-container folder.
const FILES: [(&str, &str); 3] = [
    ("/etc/hostname", "hostname"),
    ("/etc/hosts", "hosts"),
    ("/etc/resolv.conf", "resolv.conf"),
];

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

/// `/etc/hosts`: loopback names, the extra entries (`--add-host`, the host's names), and
/// the hostname on the container's address (127.0.1.1 without a network).
pub fn hosts(hostname: &str, network: Option<&NetworkConfig>, extra: &[HostEntry]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for h in extra {
        let _ = writeln!(out, "{}\t{}", h.address, h.name);
    }
    let own = network.map_or_else(|| "127.0.1.1".to_string(), |n| n.address.to_string());
    let _ = writeln!(out, "{own}\t{hostname}");
    out
}

/// `/etc/resolv.conf` of a networked container.
pub fn resolv_conf(network: &NetworkConfig) -> String {
    let mut out = String::new();
    for ns in &network.nameservers {
        let _ = writeln!(out, "nameserver {ns}");
    }
    if !network.search.is_empty() {
        let _ = writeln!(out, "search {}", network.search.join(" "));
    }
    out
}

/// Writes the files into `dir` and adds their bind mounts to `spec`, leaving alone any
/// the spec already mounts (a user's volume wins). Without a network the image's
/// `/etc/resolv.conf` stays: there is nothing to resolve with.
pub fn provide(
    spec: &mut Spec,
    dir: &Path,
    id: &str,
    network: Option<&NetworkConfig>,
    extra: &[HostEntry],
) -> io::Result<()> {
    let name = hostname(spec, id);
    std::fs::create_dir_all(dir)?;
    let mut mounts: Vec<Mount> = spec.mounts().clone().unwrap_or_default();
    for (dest, file) in FILES {
        if mounts.iter().any(|m| m.destination() == Path::new(dest)) {
            continue;
        }
        let text = match (file, network) {
            ("hostname", _) => format!("{name}\n"),
            ("hosts", _) => hosts(&name, network, extra),
            (_, Some(n)) => resolv_conf(n),
            (_, None) => continue,
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
        provide(&mut spec, dir.path(), "0123456789abcdef", None, &[]).unwrap();
        let mounts = spec.mounts().clone().unwrap();
        assert_eq!(mounts.len(), before + 2, "no resolv.conf without a network");
        assert!(!dir.path().join("resolv.conf").exists());
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
        provide(&mut mine, dir2.path(), "0123456789abcdef", None, &[]).unwrap();
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

    fn network() -> NetworkConfig {
        NetworkConfig {
            address: "192.168.249.2".parse().unwrap(),
            prefix: 24,
            gateway: "192.168.249.1".parse().unwrap(),
            mtu: 1500,
            nameservers: vec!["192.168.249.1".parse().unwrap()],
            search: vec!["corp.example".into()],
        }
    }

    #[test]
    fn a_network_brings_resolv_conf_and_host_entries() {
        let net = network();
        let extra = [
            HostEntry {
                name: "host.docker.internal".into(),
                address: "192.168.249.254".parse().unwrap(),
            },
            HostEntry {
                name: "db".into(),
                address: "10.0.0.5".parse().unwrap(),
            },
        ];
        assert_eq!(
            resolv_conf(&net),
            "nameserver 192.168.249.1\nsearch corp.example\n"
        );
        let h = hosts("web", Some(&net), &extra);
        assert!(
            h.ends_with(
                "192.168.249.254\thost.docker.internal\n10.0.0.5\tdb\n192.168.249.2\tweb\n"
            ),
            "{h}"
        );
        let h = hosts("web", None, &extra[1..]);
        assert!(h.ends_with("10.0.0.5\tdb\n127.0.1.1\tweb\n"), "{h}");

        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::default();
        spec.set_hostname(Some("web".into()));
        provide(
            &mut spec,
            dir.path(),
            "0123456789abcdef",
            Some(&net),
            &extra,
        )
        .unwrap();
        let mounts = spec.mounts().clone().unwrap();
        let resolv = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/etc/resolv.conf"))
            .expect("resolv.conf is mounted");
        assert_eq!(
            std::fs::read_to_string(resolv.source().as_ref().unwrap()).unwrap(),
            resolv_conf(&net)
        );
        assert!(std::fs::read_to_string(dir.path().join("hosts"))
            .unwrap()
            .contains("10.0.0.5\tdb\n"));
    }
}

//! User-defined networks, as docker's: `network create|ls|inspect|rm|prune`, a container's
//! address on one, and the peer folder where the VMs on it meet.
//!
//! Each container is its own VM with its own user-mode gateway, so a network has no
//! switch and no process of its own. Its VMMs meet in the network's *peer folder*,
//! `<runtime>/net/<id>` (short, since it holds sockets): each binds its guest's sockets
//! there and the gateways connect guests to each other through them (`berth_net::peers`).
//! The engine gives each container its address when it is created, under the network
//! store's lock, and links its names (name, short ID, `--network-alias`) to that address
//! in the folder's `names/` when it starts. Removing the network removes the folder.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use berth_containers::{ContainerRecord, Network, NetworkAttachment, NetworkStore, RunSpec};
use berth_net::peers;

use crate::error::{Error, Result};
use crate::Engine;

/// Where berth looks for a free subnet when `network create` is given none: podman's
/// range for user networks, `10.89.N.0/24`, past what other networks and the host's
/// routes use.
const AUTO_SUBNET_BASE: [u8; 2] = [10, 89];
const AUTO_PREFIX: u8 = 24;

/// Parses `A.B.C.D/P` for `--subnet`, checked as berth-net checks a subnet.
pub fn parse_subnet(text: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || {
        Error::InvalidArgument(format!(
            "invalid --subnet \"{text}\": give a private IPv4 network in CIDR form, like 10.89.7.0/24"
        ))
    };
    let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    crate::net::check_subnet(addr, prefix)?;
    Ok((addr, prefix))
}

/// Where the VMs of network `id` meet: `<runtime>/net/<short id>`, made or not.
#[cfg(unix)]
fn peer_dir_path(id: &str) -> Result<PathBuf> {
    Ok(crate::vm::runtime_dir()?
        .join("net")
        .join(&id[..12.min(id.len())]))
}

/// The VMs of a network meet on Unix sockets, which this host lacks.
#[cfg(not(unix))]
fn peer_dir_path(_: &str) -> Result<PathBuf> {
    Err(Error::InvalidArgument(
        "user-defined networks need Unix sockets, which this host lacks".into(),
    ))
}

/// The network folder where the VMs of network `id` meet (made when missing).
pub fn peer_dir(id: &str) -> Result<PathBuf> {
    let dir = peer_dir_path(id)?;
    berth_containers::private_dir(&peers::names_dir(&dir))?;
    if dir.as_os_str().len() > peers::MAX_DIR_LEN {
        return Err(Error::InvalidArgument(format!(
            "the runtime folder makes the network folder {} too long for socket paths: set \
             XDG_RUNTIME_DIR to a shorter folder",
            dir.display()
        )));
    }
    Ok(dir)
}

/// The names a container answers to on its network, as the gateway's DNS looks them up
/// (lower case): its name, its short ID and its aliases.
fn dns_names(record: &ContainerRecord, a: &NetworkAttachment) -> Vec<String> {
    let mut names: Vec<String> = [record.name.as_str(), record.short_id()]
        .into_iter()
        .chain(a.aliases.iter().map(String::as_str))
        .map(berth_net::dns::normalize)
        .filter(|n| berth_net::dns::valid_name(n))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Links `record`'s names to its address in its network's folder (replacing what an
/// earlier container of the same name left).
pub(crate) fn publish_names(record: &ContainerRecord) -> Result<()> {
    let Some(a) = &record.spec.attachment else {
        return Ok(());
    };
    let names = peers::names_dir(&peer_dir(&a.network_id)?);
    for name in dns_names(record, a) {
        let link = names.join(&name);
        let tmp = names.join(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        symlink(&a.address.to_string(), &tmp)?;
        std::fs::rename(&tmp, &link).map_err(Error::Os)?;
    }
    Ok(())
}

#[cfg(unix)]
fn symlink(target: &str, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(Error::Os)
}

#[cfg(not(unix))]
fn symlink(_: &str, link: &Path) -> Result<()> {
    Err(Error::InvalidArgument(format!(
        "user-defined networks need symbolic links and Unix sockets, which this host lacks \
         ({})",
        link.display()
    )))
}

/// Removes the sockets an ended VM of `record` left in its network's folder (a VMM
/// killed outright cannot); sockets a live VMM answers on stay.
pub(crate) fn release_sockets(record: &ContainerRecord) {
    let Some(a) = &record.spec.attachment else {
        return;
    };
    let Ok(dir) = peer_dir_path(&a.network_id) else {
        return;
    };
    let stream = peers::stream_path(&dir, a.address);
    #[cfg(unix)]
    if std::os::unix::net::UnixStream::connect(&stream).is_ok() {
        return;
    }
    let _ = std::fs::remove_file(stream);
    let _ = std::fs::remove_file(peers::datagram_path(&dir, a.address));
}

/// Removes the names of `record` that still point at its address, and its sockets.
pub(crate) fn forget_names(record: &ContainerRecord) {
    release_sockets(record);
    let Some(a) = &record.spec.attachment else {
        return;
    };
    let Ok(dir) = peer_dir_path(&a.network_id) else {
        return;
    };
    let names = peers::names_dir(&dir);
    for name in dns_names(record, a) {
        let link = names.join(name);
        if std::fs::read_link(&link).is_ok_and(|t| t.as_os_str() == a.address.to_string().as_str())
        {
            let _ = std::fs::remove_file(link);
        }
    }
}

/// The subnets the host routes, as (network, mask) pairs, so that an automatic subnet
/// does not hide hosts of the user's LAN. Linux reads `/proc/net/route`; elsewhere none
/// are known yet, and `--subnet` stays the way out.
fn host_routes() -> Vec<(u32, u32)> {
    #[cfg(target_os = "linux")]
    {
        let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        text.lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // Each is the kernel's u32 printed in hex: its bytes in memory are the
                // address in network order.
                let word = |s: &str| u32::from_str_radix(s, 16).ok();
                let dest = u32::from(Ipv4Addr::from(word(f.get(1)?)?.to_ne_bytes()));
                let mask = u32::from(Ipv4Addr::from(word(f.get(7)?)?.to_ne_bytes()));
                // The default route (mask 0) is not a subnet of the LAN.
                (mask != 0).then_some((dest, mask))
            })
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Vec::new()
    }
}

/// The first `10.89.N.0/24` that no network and no host route overlaps.
fn pick_subnet(taken: &[Network], routes: &[(u32, u32)]) -> Option<(Ipv4Addr, u8)> {
    let size_mask = u32::MAX << (32 - u32::from(AUTO_PREFIX));
    (1..=255u8)
        .map(|n| Ipv4Addr::new(AUTO_SUBNET_BASE[0], AUTO_SUBNET_BASE[1], n, 0))
        .find(|candidate| {
            let c = u32::from(*candidate);
            let clash = |net: u32, mask: u32| {
                let m = mask & size_mask;
                net & m == c & m
            };
            !taken.iter().any(|t| t.overlaps(*candidate, AUTO_PREFIX))
                && !routes.iter().any(|&(net, mask)| clash(net, mask))
        })
        .map(|s| (s, AUTO_PREFIX))
}

/// The lowest address of `network` that no container in `used` has.
fn free_address(network: &Network, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let range = crate::net::user_net(network.subnet, network.prefix, None).peer_range();
    let base = u32::from(network.subnet);
    let size = 1u32 << (32 - u32::from(network.prefix.clamp(16, 30)));
    (2..size)
        .map(|i| Ipv4Addr::from(base + i))
        .find(|ip| range.contains(*ip) && !used.contains(ip))
}

impl Engine {
    /// The network store under the state root.
    pub fn networks(&self) -> Result<NetworkStore> {
        Ok(NetworkStore::open(&self.root)?)
    }

    /// `network create`: on `subnet` (`A.B.C.D/P`), else a free `10.89.N.0/24`.
    pub fn network_create(
        &self,
        name: &str,
        subnet: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Network> {
        let store = self.networks()?;
        let (subnet, prefix) = match subnet {
            Some(s) => parse_subnet(s)?,
            None => pick_subnet(&store.list()?, &host_routes()).ok_or_else(|| {
                Error::Conflict(
                    "no free 10.89.N.0/24 subnet is left for a new network: give one with --subnet"
                        .into(),
                )
            })?,
        };
        Ok(store.create(name, subnet, prefix, labels)?)
    }

    /// Network `key` (name, ID or ID prefix).
    pub fn network(&self, key: &str) -> Result<Network> {
        Ok(self.networks()?.get(key)?)
    }

    /// The containers (running or not) on network `n`.
    pub fn network_users(&self, n: &Network) -> Result<Vec<ContainerRecord>> {
        let mut all = self.store.list()?;
        all.retain(|c| on_network(c, n));
        Ok(all)
    }

    /// Every network with the containers on it.
    pub fn network_list(&self) -> Result<Vec<(Network, Vec<ContainerRecord>)>> {
        let containers = self.store.list()?;
        Ok(self
            .networks()?
            .list()?
            .into_iter()
            .map(|n| {
                let on: Vec<ContainerRecord> = containers
                    .iter()
                    .filter(|c| on_network(c, &n))
                    .cloned()
                    .collect();
                (n, on)
            })
            .collect())
    }

    /// Removes network `key`, refused while a container (running or not) is on it.
    pub fn network_remove(&self, key: &str) -> Result<Network> {
        let store = self.networks()?;
        let network = store.get(key)?;
        let users: Vec<String> = self
            .network_users(&network)?
            .into_iter()
            .map(|c| c.name)
            .collect();
        if !users.is_empty() {
            return Err(berth_containers::Error::NetworkInUse {
                name: network.name,
                containers: users.join(", "),
            }
            .into());
        }
        store.remove(&network.name)?;
        if let Ok(dir) = peer_dir_path(&network.id) {
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(network)
    }

    /// Removes every network no container is on; returns their names.
    pub fn network_prune(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        for (n, users) in self.network_list()? {
            if users.is_empty() {
                match self.network_remove(&n.name) {
                    Ok(n) => removed.push(n.name),
                    Err(e) => tracing::warn!("cannot prune network {}: {e}", n.name),
                }
            }
        }
        Ok(removed)
    }

    /// Records a container on user-defined network `spec.network` at its lowest free
    /// address, under the network store's lock so that no two containers get one.
    pub(crate) fn create_on_network(
        &self,
        name: Option<&str>,
        mut spec: RunSpec,
        aliases: &[String],
    ) -> Result<ContainerRecord> {
        let store = self.networks()?;
        let _lock = store.lock()?;
        let network = store.get(&spec.network)?;
        spec.attachment = Some(self.allocate(&network, aliases)?);
        spec.network = network.name;
        Ok(self.store.create(name, spec)?)
    }

    /// `network connect`: puts a container that is not running on network `key`. Each
    /// micro-VM has one network card, so the container leaves the default network (or
    /// none) for it; one already on another user-defined network must be disconnected
    /// first.
    pub fn network_connect(&self, key: &str, container: &str, aliases: &[String]) -> Result<()> {
        let record = self.store.resolve(container)?;
        let store = self.networks()?;
        let _lock = store.lock()?;
        let network = store.get(key)?;
        if on_network(&record, &network) {
            return Err(Error::Conflict(format!(
                "container {} is already connected to network {}",
                record.name, network.name
            )));
        }
        if crate::net::is_user_network(&record.spec.network) {
            return Err(Error::Conflict(format!(
                "container {} is on network {}: berth gives each micro-VM one network card, \
                 so disconnect it from that one first",
                record.name, record.spec.network
            )));
        }
        refuse_running(&record, "connect")?;
        let attachment = self.allocate(&network, aliases)?;
        self.store.update(&record.id, |r| {
            r.spec.network = network.name.clone();
            r.spec.attachment = Some(attachment);
        })?;
        Ok(())
    }

    /// `network disconnect`: takes a container that is not running off network `key`
    /// (docker's `bridge` or `default` for the default network); it is left with no
    /// network (only `lo`).
    pub fn network_disconnect(&self, key: &str, container: &str) -> Result<()> {
        let record = self.store.resolve(container)?;
        let on = if matches!(key, "bridge" | "default") {
            record.spec.network == berth_containers::NETWORK_DEFAULT
        } else {
            on_network(&record, &self.network(key)?)
        };
        if !on {
            return Err(Error::InvalidArgument(format!(
                "container {} is not connected to network {key}",
                record.name
            )));
        }
        refuse_running(&record, "disconnect")?;
        forget_names(&record);
        self.store.update(&record.id, |r| {
            r.spec.network = crate::net::NETWORK_NONE.into();
            r.spec.attachment = None;
            r.spec.publish.clear();
        })?;
        Ok(())
    }

    /// The lowest free address of `network` and the container's `aliases` there; the
    /// caller holds the network store's lock.
    fn allocate(&self, network: &Network, aliases: &[String]) -> Result<NetworkAttachment> {
        if let Some(bad) = aliases.iter().find(|a| !berth_net::dns::valid_name(a)) {
            return Err(Error::InvalidArgument(format!(
                "invalid network alias \"{bad}\": use letters, digits, '-' and '_', in labels \
                 split by dots"
            )));
        }
        let used: HashSet<Ipv4Addr> = self
            .network_users(network)?
            .iter()
            .filter_map(|c| c.spec.attachment.as_ref().map(|a| a.address))
            .collect();
        let address = free_address(network, &used)
            .ok_or_else(|| berth_containers::Error::NetworkFull(network.name.clone()))?;
        Ok(NetworkAttachment {
            network_id: network.id.clone(),
            subnet: network.subnet,
            prefix: network.prefix,
            address,
            aliases: aliases.to_vec(),
        })
    }
}

/// A running container's micro-VM has its network card fixed at boot.
fn refuse_running(record: &ContainerRecord, what: &str) -> Result<()> {
    if record.status() == berth_containers::Status::Running {
        return Err(Error::Conflict(format!(
            "cannot {what} running container {}: its micro-VM's network card is fixed at \
             boot; stop it, {what} it, then start it",
            record.name
        )));
    }
    Ok(())
}

/// Whether container `c` is on network `n`.
pub fn on_network(c: &ContainerRecord, n: &Network) -> bool {
    c.spec
        .attachment
        .as_ref()
        .is_some_and(|a| a.network_id == n.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(subnet: [u8; 4], prefix: u8) -> Network {
        Network {
            name: "n".into(),
            id: "ab".repeat(32),
            subnet: subnet.into(),
            prefix,
            created: 0,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn subnets_are_parsed_and_checked() {
        assert_eq!(
            parse_subnet("10.89.7.0/24").unwrap(),
            (Ipv4Addr::new(10, 89, 7, 0), 24)
        );
        for bad in [
            "10.89.7.0",
            "10.89.7.1/24",
            "8.8.8.0/24",
            "10.0.0.0/8",
            "x/24",
            "10.89.7.0/x",
        ] {
            let e = parse_subnet(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{bad}: {e}");
        }
    }

    #[test]
    fn automatic_subnets_avoid_networks_and_host_routes() {
        assert_eq!(
            pick_subnet(&[], &[]),
            Some((Ipv4Addr::new(10, 89, 1, 0), 24))
        );
        let taken = [network([10, 89, 1, 0], 24)];
        let route = (u32::from(Ipv4Addr::new(10, 89, 2, 0)), u32::MAX << 8);
        assert_eq!(
            pick_subnet(&taken, &[route]),
            Some((Ipv4Addr::new(10, 89, 3, 0), 24))
        );
        let wide = (u32::from(Ipv4Addr::new(10, 0, 0, 0)), u32::MAX << 24);
        assert_eq!(
            pick_subnet(&[], &[wide]),
            None,
            "a /8 route covers them all"
        );
    }

    #[test]
    fn containers_join_leave_and_keep_their_network_in_use() {
        let root = tempfile::tempdir().unwrap();
        let engine = Engine::open_at(root.path()).unwrap();
        let net = engine
            .network_create("appnet", Some("10.89.201.0/24"), BTreeMap::new())
            .unwrap();
        assert!(engine
            .network_create("appnet", None, BTreeMap::new())
            .is_err());
        let spec = |network: &str| RunSpec {
            image: "busybox".into(),
            args: vec!["true".into()],
            network: network.into(),
            ..RunSpec::default()
        };
        let web = engine
            .create_on_network(Some("web"), spec("appnet"), &["www".into()])
            .unwrap();
        let a = web.spec.attachment.clone().unwrap();
        assert_eq!(
            (a.address.to_string(), a.aliases),
            ("10.89.201.2".into(), vec!["www".into()])
        );
        // A container on the default network moves over; a second address is handed out.
        let api = engine
            .store()
            .create(Some("api"), spec(crate::net::NETWORK_NONE))
            .unwrap();
        engine.network_connect("appnet", "api", &[]).unwrap();
        let api = engine.store().resolve(&api.id).unwrap();
        assert_eq!(api.spec.network, "appnet");
        assert_eq!(
            api.spec.attachment.unwrap().address.to_string(),
            "10.89.201.3"
        );
        assert!(
            engine.network_connect("appnet", "api", &[]).is_err(),
            "already on it"
        );
        let e = engine.network_remove("appnet").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Conflict, "{e}");
        assert!(e.to_string().contains("web"), "{e}");
        engine.network_disconnect("appnet", "api").unwrap();
        assert!(
            engine.network_disconnect("appnet", "api").is_err(),
            "not on it any more"
        );
        let api = engine.store().resolve("api").unwrap();
        assert_eq!(
            (api.spec.network.as_str(), api.spec.attachment),
            ("none", None)
        );
        let plain = engine
            .store()
            .create(Some("plain"), spec(berth_containers::NETWORK_DEFAULT))
            .unwrap();
        engine.network_disconnect("bridge", "plain").unwrap();
        assert_eq!(
            engine.store().resolve(&plain.id).unwrap().spec.network,
            "none"
        );
        assert!(
            engine.network_prune().unwrap().is_empty(),
            "web is still on it"
        );
        engine.store().remove(&web.id).unwrap();
        assert_eq!(engine.network_prune().unwrap(), ["appnet"]);
        assert_eq!(
            engine.network(&net.id).unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
    }

    #[test]
    fn addresses_are_handed_out_lowest_first() {
        let n = network([10, 89, 4, 0], 29);
        let mut used = HashSet::new();
        let mut got = Vec::new();
        while let Some(ip) = free_address(&n, &used) {
            used.insert(ip);
            got.push(ip.octets()[3]);
        }
        // .0 network, .1 gateway, .6 the host's address, .7 broadcast.
        assert_eq!(got, [2, 3, 4, 5]);
    }
}

//! User-defined networks: records under the state root, and where a container is on one.
//!
//! ```text
//! networks/.lock                 flock taken for every change
//! networks/<name>/network.json   the Network
//! ```
//!
//! A network is only a record here: its VMs meet in a peer folder the engine keeps in the
//! runtime folder (see `berth_net::peers`). Whether a network is in use is the
//! containers' business: the engine checks before it removes one.

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mounts::valid_volume_name;
use crate::{generate_id, io, lock_file, now, private_dir, write_json, Error, Lock, Result};

/// The names docker gives its own networks; no user-defined network may take them.
pub const RESERVED_NETWORKS: [&str; 4] = ["default", "bridge", "none", "host"];

/// One user-defined network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// Its ID (64 hex digits).
    pub id: String,
    /// The subnet's network address.
    pub subnet: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// User labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Network {
    /// The short ID, as `network ls` prints it.
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
    /// `A.B.C.D/P`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.subnet, self.prefix)
    }
    /// Whether this network's subnet and `subnet`/`prefix` share addresses.
    pub fn overlaps(&self, subnet: Ipv4Addr, prefix: u8) -> bool {
        let p = self.prefix.min(prefix).min(32);
        let mask = u32::MAX.checked_shl(32 - u32::from(p)).unwrap_or(0);
        u32::from(self.subnet) & mask == u32::from(subnet) & mask
    }
}

/// Where a container is on a user-defined network, fixed when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    /// The network's ID (a network made again under the same name is another one).
    pub network_id: String,
    /// The subnet's network address.
    pub subnet: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The container's address there.
    pub address: Ipv4Addr,
    /// Other names it answers to there (`--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// The network store.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
}

impl NetworkStore {
    /// Opens (creating it if needed) the network store under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join("networks");
        private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// Takes the store's lock: held across choosing an address and recording the
    /// container, so two containers never get one address.
    pub fn lock(&self) -> Result<Lock> {
        lock_file(&self.dir.join(".lock"))
    }

    fn meta(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("network.json")
    }

    /// Records network `name` on `subnet`/`prefix` (checked by the caller). Taken names,
    /// docker's own names, and a subnet another network has are refused.
    pub fn create(
        &self,
        name: &str,
        subnet: Ipv4Addr,
        prefix: u8,
        labels: BTreeMap<String, String>,
    ) -> Result<Network> {
        if !valid_volume_name(name) || RESERVED_NETWORKS.contains(&name) {
            return Err(Error::InvalidNetworkName(name.to_string()));
        }
        let _lock = self.lock()?;
        if self.get(name).is_ok() {
            return Err(Error::NetworkExists(name.to_string()));
        }
        if let Some(other) = self
            .list()?
            .into_iter()
            .find(|n| n.overlaps(subnet, prefix))
        {
            return Err(Error::SubnetTaken {
                subnet: format!("{subnet}/{prefix}"),
                network: other.name,
            });
        }
        let dir = self.dir.join(name);
        private_dir(&dir)?;
        let network = Network {
            name: name.to_string(),
            id: generate_id()?,
            subnet,
            prefix,
            created: now(),
            labels,
        };
        write_json(&self.meta(name), &network)?;
        Ok(network)
    }

    /// Network `key`: its name, its ID, or a unique ID prefix.
    pub fn get(&self, key: &str) -> Result<Network> {
        if valid_volume_name(key) {
            match fs::read(self.meta(key)) {
                Ok(text) => {
                    let path = self.meta(key);
                    return serde_json::from_slice(&text)
                        .map_err(|source| Error::Corrupt { path, source });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("read", &self.meta(key))(e)),
            }
        }
        let lower = key.to_ascii_lowercase();
        if key.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::NetworkNotFound(key.to_string()));
        }
        let mut found = self
            .list()?
            .into_iter()
            .filter(|n| n.id.starts_with(&lower));
        match (found.next(), found.next()) {
            (Some(n), None) => Ok(n),
            (Some(_), Some(_)) => Err(Error::Ambiguous {
                prefix: key.to_string(),
                matches: "several networks".into(),
            }),
            _ => Err(Error::NetworkNotFound(key.to_string())),
        }
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<Network>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io("read", &self.dir))? {
            let entry = entry.map_err(io("read", &self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !valid_volume_name(&name) {
                continue; // the lock, or not ours
            }
            let path = self.meta(&name);
            match fs::read(&path) {
                Ok(text) => out.push(
                    serde_json::from_slice(&text)
                        .map_err(|source| Error::Corrupt { path, source })?,
                ),
                // A folder without its record is a create in progress, or not ours.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("read", &path)(e)),
            }
        }
        out.sort_by(|a: &Network, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes network `name`'s record. The caller has checked that no container is on it.
    pub fn remove(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        let network = self.get(name)?;
        let dir = self.dir.join(&network.name);
        fs::remove_dir_all(&dir).map_err(io("remove", &dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_created_found_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(root.path()).unwrap();
        let n = store
            .create("backend", Ipv4Addr::new(10, 89, 1, 0), 24, BTreeMap::new())
            .unwrap();
        assert_eq!(n.cidr(), "10.89.1.0/24");
        assert_eq!(store.get("backend").unwrap(), n);
        assert_eq!(store.get(n.short_id()).unwrap(), n, "by ID prefix");
        assert!(matches!(
            store.create("backend", Ipv4Addr::new(10, 89, 2, 0), 24, BTreeMap::new()),
            Err(Error::NetworkExists(_))
        ));
        assert!(matches!(
            store.create("other", Ipv4Addr::new(10, 89, 0, 0), 16, BTreeMap::new()),
            Err(Error::SubnetTaken { .. })
        ));
        store
            .create("front", Ipv4Addr::new(10, 89, 2, 0), 24, BTreeMap::new())
            .unwrap();
        let names: Vec<_> = store.list().unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["backend", "front"]);
        store.remove("backend").unwrap();
        assert!(matches!(
            store.get("backend"),
            Err(Error::NetworkNotFound(_))
        ));
        assert!(!root.path().join("networks/backend").exists());
    }

    #[test]
    fn reserved_and_hostile_names_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(root.path()).unwrap();
        for bad in ["bridge", "none", "host", "default", "../x", "a/b", "", ".x"] {
            assert!(
                store
                    .create(bad, Ipv4Addr::new(10, 89, 3, 0), 24, BTreeMap::new())
                    .is_err(),
                "{bad}"
            );
        }
        assert!(matches!(store.get("../x"), Err(Error::NetworkNotFound(_))));
    }
}

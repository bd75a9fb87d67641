//! Named volumes: folders under the state root that outlive the containers using them.
//!
//! ```text
//! volumes/.lock               flock taken for every change
//! volumes/<name>/volume.json  the Volume
//! volumes/<name>/_data        what containers see (docker's layout)
//! ```
//!
//! Whether a volume is in use is the containers' business: the engine checks before it
//! removes one.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mounts::valid_volume_name;
use crate::{
    dir_builder, generate_id, io, lock_file, now, private_dir, write_json, Error, Lock, Result,
};

/// One volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Its name (64 hex digits for an anonymous one).
    pub name: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// User labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image's `VOLUME`).
    #[serde(default)]
    pub anonymous: bool,
}

/// The volume store.
#[derive(Debug, Clone)]
pub struct VolumeStore {
    dir: PathBuf,
}

impl VolumeStore {
    /// Opens (creating it if needed) the volume store under `root`.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join("volumes");
        private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// Takes the store's lock.
    pub fn lock(&self) -> Result<Lock> {
        lock_file(&self.dir.join(".lock"))
    }

    fn meta(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("volume.json")
    }

    /// The folder containers see of volume `name`.
    pub fn data(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    /// Creates volume `name` (a random one when `None`, anonymous or not). Creating a
    /// name that exists returns that volume, as docker does.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<Volume> {
        let name = match name {
            Some(n) if valid_volume_name(n) => n.to_string(),
            Some(n) => return Err(Error::InvalidVolumeName(n.to_string())),
            None => generate_id()?,
        };
        let _lock = self.lock()?;
        if let Ok(v) = self.get(&name) {
            return Ok(v);
        }
        let data = self.data(&name);
        // Anyone in the container may write a volume: the container decides, as docker's.
        dir_builder(0o755)
            .recursive(true)
            .create(&data)
            .map_err(io("create", &data))?;
        let volume = Volume {
            name,
            created: now(),
            labels,
            anonymous,
        };
        write_json(&self.meta(&volume.name), &volume)?;
        Ok(volume)
    }

    /// Volume `name`.
    pub fn get(&self, name: &str) -> Result<Volume> {
        if !valid_volume_name(name) {
            return Err(Error::VolumeNotFound(name.to_string()));
        }
        let path = self.meta(name);
        match fs::read(&path) {
            Ok(text) => {
                serde_json::from_slice(&text).map_err(|source| Error::Corrupt { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::VolumeNotFound(name.to_string()))
            }
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io("read", &self.dir))? {
            let entry = entry.map_err(io("read", &self.dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            match self.get(&name) {
                Ok(v) => out.push(v),
                // A folder without its record is a create in progress, or not ours.
                Err(Error::VolumeNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes volume `name` and everything in it. The caller has checked that no
    /// container uses it.
    pub fn remove(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        self.get(name)?;
        let dir = self.dir.join(name);
        // The record goes first: a half-removed volume is no longer listed.
        let meta = self.meta(name);
        fs::remove_file(&meta).map_err(io("remove", &meta))?;
        fs::remove_dir_all(&dir).map_err(io("remove", &dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_created_listed_and_removed() {
        let root = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(root.path()).unwrap();
        let v = store.create(Some("data"), BTreeMap::new(), false).unwrap();
        fs::write(store.data("data").join("f"), "kept").unwrap();
        let again = store.create(Some("data"), BTreeMap::new(), false).unwrap();
        assert_eq!(again, v, "creating an existing name returns it");
        assert_eq!(
            fs::read_to_string(store.data("data").join("f")).unwrap(),
            "kept"
        );
        let anon = store.create(None, BTreeMap::new(), true).unwrap();
        assert_eq!(anon.name.len(), 64);
        let names: Vec<_> = store.list().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names.len(), 2);
        assert!(names.contains(&"data".to_string()));
        store.remove("data").unwrap();
        assert!(!root.path().join("volumes/data").exists());
        assert!(matches!(store.get("data"), Err(Error::VolumeNotFound(_))));
        assert!(matches!(
            store.remove("data"),
            Err(Error::VolumeNotFound(_))
        ));
    }

    #[test]
    fn hostile_names_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(root.path()).unwrap();
        for bad in ["../x", "a/b", "", ".hidden", "x"] {
            assert!(
                store.create(Some(bad), BTreeMap::new(), false).is_err(),
                "{bad}"
            );
            assert!(store.get(bad).is_err());
        }
        assert!(!root.path().join("x").exists());
    }
}

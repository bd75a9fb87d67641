//! Registry credentials: berth's own `auth.json` (written by `berth login`) and docker's
//! `config.json`, both in docker's format (`{"auths": {"host": {"auth": base64("user:pass")}}}`).
//!
//! berth's file is `$BERTH_CONFIG_DIR/auth.json`, else `$XDG_CONFIG_HOME/berth/auth.json`,
//! else `~/.config/berth/auth.json` (mode 0600). Docker's is `$DOCKER_CONFIG/config.json`,
//! else `~/.docker/config.json`; berth reads it and never writes it, and runs the
//! credential helpers it names ([`crate::credhelper`]). berth's file wins.

use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::error::{Error, IoContext, Result};
use crate::reference::DOCKER_HUB;

/// A user name and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// The `Basic` Authorization header value.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// berth's credentials file.
pub fn berth_auth_path() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("BERTH_CONFIG_DIR").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d).join("auth.json"));
    }
    if let Some(d) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(d).join("berth/auth.json"));
    }
    home()
        .map(|h| h.join(".config/berth/auth.json"))
        .ok_or(Error::NoDataDir)
}

/// Docker's config file.
pub fn docker_config_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    home().map(|h| h.join(".docker/config.json"))
}

/// The key berth writes for a registry (docker's own convention for Docker Hub).
pub fn config_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// Reduces a config key (`https://host/v1/`, `host`, ...) to the registry name it means.
fn key_registry(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        h => h.to_string(),
    }
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match fs::read(path) {
        Ok(data) => serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| Error::Credentials {
                path: path.to_path_buf(),
                reason: format!("not valid JSON: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(path),
    }
}

fn find_in(path: &Path, registry: &str) -> Result<Option<Credentials>> {
    let Some(v) = read_json(path)? else {
        return Ok(None);
    };
    // Docker's order: the registry's own helper, then the file's entries, then the
    // default store.
    if let Some(helpers) = v.get("credHelpers").and_then(|h| h.as_object()) {
        for (key, helper) in helpers {
            if key_registry(key) == registry {
                let helper = helper.as_str().ok_or_else(|| Error::Credentials {
                    path: path.to_path_buf(),
                    reason: format!("credHelpers entry {key:?} is not a string"),
                })?;
                return crate::credhelper::get(helper, key);
            }
        }
    }
    let empty = serde_json::Map::new();
    let auths = v.get("auths").and_then(|a| a.as_object()).unwrap_or(&empty);
    for (key, entry) in auths {
        if key_registry(key) != registry {
            continue;
        }
        if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
            let bad = |reason: &str| Error::Credentials {
                path: path.to_path_buf(),
                reason: format!("entry {key:?}: {reason}"),
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| bad("\"auth\" is not base64"))?;
            let raw = String::from_utf8(raw).map_err(|_| bad("\"auth\" is not UTF-8"))?;
            let (u, p) = raw
                .split_once(':')
                .ok_or_else(|| bad("\"auth\" is not user:password"))?;
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
        if let (Some(u), Some(p)) = (
            entry.get("username").and_then(|u| u.as_str()),
            entry.get("password").and_then(|p| p.as_str()),
        ) {
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
    }
    match v.get("credsStore") {
        Some(serde_json::Value::String(store)) if !store.is_empty() => {
            crate::credhelper::get(store, &config_key(registry))
        }
        Some(serde_json::Value::String(_)) | None => Ok(None),
        Some(_) => Err(Error::Credentials {
            path: path.to_path_buf(),
            reason: "\"credsStore\" is not a string".into(),
        }),
    }
}

/// Finds credentials for a registry (berth's file first, then docker's).
pub fn lookup(registry: &str) -> Result<Option<Credentials>> {
    if let Some(c) = find_in(&berth_auth_path()?, registry)? {
        return Ok(Some(c));
    }
    if let Some(p) = docker_config_path() {
        return find_in(&p, registry);
    }
    Ok(None)
}

fn write_private(path: &Path, v: &serde_json::Value) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).at(dir)?;
    let mut f = tempfile::NamedTempFile::new_in(dir).at(dir)?;
    // Owner-only on Unix; on Windows the file takes its folder's access list.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(f.path(), fs::Permissions::from_mode(0o600)).at(f.path())?;
    }
    let data = serde_json::to_vec_pretty(v).map_err(|e| Error::Credentials {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    f.write_all(&data).at(path)?;
    f.as_file().sync_all().at(path)?;
    f.persist(path).map_err(|e| e.error).at(path)?;
    Ok(())
}

/// Stores credentials in berth's file; returns its path.
pub fn store(registry: &str, creds: &Credentials) -> Result<PathBuf> {
    let path = berth_auth_path()?;
    let mut v = read_json(&path)?.unwrap_or_else(|| serde_json::json!({}));
    let obj = v.as_object_mut().ok_or_else(|| Error::Credentials {
        path: path.clone(),
        reason: "not a JSON object".into(),
    })?;
    let auths = obj
        .entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| Error::Credentials {
            path: path.clone(),
            reason: "\"auths\" is not an object".into(),
        })?;
    auths.retain(|k, _| key_registry(k) != registry);
    let raw = format!("{}:{}", creds.username, creds.password);
    auths.insert(
        config_key(registry),
        serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(raw)}),
    );
    write_private(&path, &v)?;
    Ok(path)
}

/// Removes a registry's credentials from berth's file. Returns whether any were there.
pub fn remove(registry: &str) -> Result<bool> {
    let path = berth_auth_path()?;
    let Some(mut v) = read_json(&path)? else {
        return Ok(false);
    };
    let Some(auths) = v.get_mut("auths").and_then(|a| a.as_object_mut()) else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|k, _| key_registry(k) != registry);
    let removed = auths.len() != before;
    if removed {
        write_private(&path, &v)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_registries() {
        assert_eq!(key_registry("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(key_registry("registry-1.docker.io"), "docker.io");
        assert_eq!(key_registry("http://localhost:5000"), "localhost:5000");
        assert_eq!(key_registry("ghcr.io"), "ghcr.io");
    }

    #[test]
    fn reads_docker_style_auths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        fs::write(
            &p,
            serde_json::to_vec(&serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": auth},
                "127.0.0.1:5001": {"username": "bob", "password": "pw"}
            }}))
            .unwrap(),
        )
        .unwrap();
        let c = find_in(&p, "docker.io").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3:cret")
        );
        let c = find_in(&p, "127.0.0.1:5001").unwrap().unwrap();
        assert_eq!(c.username, "bob");
        assert!(find_in(&p, "quay.io").unwrap().is_none());
        fs::write(&p, b"{\"auths\": {\"x.io\": {\"auth\": \"%%%\"}}}").unwrap();
        assert!(find_in(&p, "x.io").is_err());
        assert!(format!("{c:?}").contains("redacted"));
    }
}

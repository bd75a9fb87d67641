//! Users and groups from the image's /etc/passwd and /etc/group.

use std::path::Path;

use crate::error::{Result, RuntimeError};

/// A user the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary gids.
    pub groups: Vec<u32>,
    /// Home directory from passwd (`/` when unknown).
    pub home: String,
}

#[derive(Debug, Clone)]
struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone)]
struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Passwd {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Group {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Reads a file of the image without following a symlink out of `rootfs`: /etc/passwd in
/// an image is read through [`crate::fs::resolve_in_root`].
fn read_image_file(rootfs: &Path, path: &str) -> String {
    crate::fs::resolve_in_root(rootfs, path)
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// Resolves docker's `USER[:GROUP]` (names or numbers) against the image, as docker does:
/// a numeric user need not exist; a name must; supplementary groups are the groups that
/// list the user as a member, plus `extra_gids`.
pub fn resolve(
    rootfs: &Path,
    user: Option<&str>,
    default_uid: u32,
    default_gid: u32,
    extra_gids: &[u32],
) -> Result<ResolvedUser> {
    let passwd = parse_passwd(&read_image_file(rootfs, "/etc/passwd"));
    let groups = parse_group(&read_image_file(rootfs, "/etc/group"));
    resolve_in(&passwd, &groups, user, default_uid, default_gid, extra_gids)
}

fn resolve_in(
    passwd: &[Passwd],
    groups: &[Group],
    user: Option<&str>,
    default_uid: u32,
    default_gid: u32,
    extra_gids: &[u32],
) -> Result<ResolvedUser> {
    let (u, g) = match user.filter(|s| !s.is_empty()) {
        Some(s) => match s.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (s.to_string(), None),
        },
        None => (default_uid.to_string(), None),
    };
    let entry = match u.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|p| p.uid == uid)
            .cloned()
            .unwrap_or(Passwd {
                name: String::new(),
                uid,
                gid: if user.is_some() { 0 } else { default_gid },
                home: "/".into(),
            }),
        Err(_) => passwd
            .iter()
            .find(|p| p.name == u)
            .cloned()
            .ok_or_else(|| RuntimeError::UnknownUser(u.clone()))?,
    };
    let mut gid = entry.gid;
    if user.is_none() {
        gid = default_gid;
    }
    if let Some(g) = g.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                groups
                    .iter()
                    .find(|x| x.name == g)
                    .ok_or(RuntimeError::UnknownGroup(g.clone()))?
                    .gid
            }
        };
    }
    let mut supp: Vec<u32> = Vec::new();
    if !entry.name.is_empty() {
        for gr in groups {
            if gr.members.contains(&entry.name) && !supp.contains(&gr.gid) {
                supp.push(gr.gid);
            }
        }
    }
    for g in extra_gids {
        if !supp.contains(g) {
            supp.push(*g);
        }
    }
    Ok(ResolvedUser {
        uid: entry.uid,
        gid,
        groups: supp,
        home: if entry.home.is_empty() {
            "/".into()
        } else {
            entry.home
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken line\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:alice,bob\nalice:x:1000:\naudio:x:29:alice\nnogroup:x:65534:\n";

    fn r(user: Option<&str>) -> Result<ResolvedUser> {
        resolve_in(&parse_passwd(PASSWD), &parse_group(GROUP), user, 0, 0, &[])
    }

    #[test]
    fn names_numbers_and_groups_resolve_like_docker() {
        let a = r(Some("alice")).unwrap();
        assert_eq!((a.uid, a.gid, a.home.as_str()), (1000, 1000, "/home/alice"));
        assert_eq!(a.groups, vec![10, 29]);
        let n = r(Some("nobody:nogroup")).unwrap();
        assert_eq!((n.uid, n.gid), (65534, 65534));
        let num = r(Some("4242:77")).unwrap();
        assert_eq!((num.uid, num.gid, num.groups.len()), (4242, 77, 0));
        let by_uid = r(Some("1000")).unwrap();
        assert_eq!((by_uid.gid, by_uid.groups.len()), (1000, 2));
        let root = r(None).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
    }

    #[test]
    fn unknown_names_give_docker_messages() {
        assert_eq!(
            r(Some("mallory")).unwrap_err().to_string(),
            "unable to find user mallory: no matching entries in passwd file"
        );
        assert_eq!(
            r(Some("alice:staff")).unwrap_err().to_string(),
            "unable to find group staff: no matching entries in group file"
        );
    }
}

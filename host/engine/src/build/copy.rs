//! `COPY` and `ADD` on the host: the build context as `.dockerignore` leaves it, and a
//! step's layer as a tar made from it, from an earlier stage, or from a local archive.
//!
//! docker's rules: a directory source copies its contents; several sources (or a
//! wildcard) need a destination that ends in `/`; a file goes into a destination that
//! ends in `/` or is a directory already, else it becomes the destination. Everything
//! copied is owned by 0:0 unless `--chown` says otherwise. Directories above the
//! destination keep their metadata from the image.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_dockerfile::ignore::{context_files, glob_matches, Ignore};
use berth_dockerfile::CopyArgs;
use berth_image::{tree, LocalImage, Store};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A build context: its root and the paths `.dockerignore` leaves.
#[derive(Debug, Clone)]
pub(super) struct Context {
    root: PathBuf,
    files: Arc<BTreeSet<String>>,
}

impl Context {
    /// Lists `root` without what its `.dockerignore` excludes.
    pub fn open(root: &Path) -> Result<Context> {
        let meta = std::fs::metadata(root).map_err(|e| {
            Error::InvalidArgument(format!(
                "the build context {} cannot be read: {e}",
                root.display()
            ))
        })?;
        if !meta.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "the build context {} is not a directory",
                root.display()
            )));
        }
        let ignore_path = root.join(".dockerignore");
        let ignore = match std::fs::read_to_string(&ignore_path) {
            Ok(text) => Ignore::parse(&text)
                .map_err(|e| Error::Build(format!("{}: {e}", ignore_path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ignore::default(),
            Err(e) => return Err(Error::Build(format!("{}: {e}", ignore_path.display()))),
        };
        let files = context_files(root, &ignore)
            .map_err(|e| Error::Build(format!("read the build context {}: {e}", root.display())))?;
        Ok(Context {
            root: root.to_path_buf(),
            files: Arc::new(files.into_iter().collect()),
        })
    }
}

/// `COPY`/`ADD` arguments with their variables expanded.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    sources: Vec<String>,
    dest: String,
    pub from: Option<String>,
    chown: Option<String>,
    chmod: Option<u32>,
    add: bool,
}

type Expand<'a> = &'a dyn Fn(&str) -> Result<String>;

impl Resolved {
    pub fn new(args: &CopyArgs, add: bool, expand: Expand<'_>) -> Result<Resolved> {
        let sources = args
            .sources
            .iter()
            .map(|s| expand(s))
            .collect::<Result<Vec<_>>>()?;
        let chmod = match &args.chmod {
            None => None,
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        Error::Build(format!("invalid --chmod={m}: give an octal mode like 755"))
                    })?,
            ),
        };
        Ok(Resolved {
            sources,
            dest: expand(&args.dest)?,
            from: args.from.clone(),
            chown: args.chown.as_deref().map(expand).transpose()?,
            chmod,
            add,
        })
    }

    fn verb(&self) -> &'static str {
        if self.add {
            "ADD"
        } else {
            "COPY"
        }
    }
}

/// A layer tar in a temporary file, and the digest of its bytes (the cache key's part).
pub(super) struct Layer {
    pub digest: String,
    pub file: LayerFile,
}

/// The temporary file of a [`Layer`]; removed when dropped.
pub(super) struct LayerFile(tempfile::NamedTempFile);

impl LayerFile {
    /// A new empty layer file, and the file to write it through.
    pub fn create() -> std::io::Result<(LayerFile, File)> {
        let tmp = tempfile::NamedTempFile::new()?;
        let f = tmp.reopen()?;
        Ok((LayerFile(tmp), f))
    }

    /// The file, from its start.
    pub fn into_reader(self) -> Result<File> {
        let mut f = self.0.reopen()?;
        f.rewind()?;
        // The path goes now; the open file stays readable.
        drop(self.0);
        Ok(f)
    }
}

enum Data {
    None,
    Host(PathBuf),
    Bytes(Vec<u8>),
}

struct Out {
    header: tar::Header,
    data: Data,
    /// `--chown` and `--chmod` apply (not to directories the image had).
    copied: bool,
}

/// One source, found: a directory's contents or a single entry.
enum Item {
    /// Entries by path relative to the directory.
    Dir(Vec<(String, Out)>),
    /// One entry and its name.
    Single(String, Box<Out>),
    /// The entries of an archive `ADD` extracts.
    Archive(Vec<(String, Out)>),
}

/// The layer of a `COPY` or `ADD` onto `base` (`None`: scratch so far), from `from`
/// (a stage's or image's files) or the context.
pub(super) fn make_layer(
    images: &Store,
    base: Option<&LocalImage>,
    from: Option<&LocalImage>,
    context: &Context,
    args: &Resolved,
    workdir: &str,
) -> std::result::Result<Layer, String> {
    let verb = args.verb();
    let dest = super::plan::join(workdir, &args.dest);
    let dest_says_dir = args.dest.ends_with('/') || args.dest == "." || args.dest.ends_with("/.");
    let mut items = Vec::new();
    let mut wildcard = false;
    for src in &args.sources {
        if args.add && (src.starts_with("http://") || src.starts_with("https://")) {
            return Err(format!(
                "ADD {src}: berth builds offline and does not download; fetch the file into \
                 the build context and COPY it"
            ));
        }
        if src.starts_with("git@") || src.ends_with(".git") {
            return Err(format!("{verb} {src}: git sources are not supported"));
        }
        let has_wildcard = src.contains(['*', '?', '[']);
        wildcard |= has_wildcard;
        match from {
            Some(img) => items.extend(from_image(images, img, src, has_wildcard, verb)?),
            None => items.extend(from_context(context, src, has_wildcard, args.add, verb)?),
        }
    }
    let several = items.len() > 1 || items.iter().any(|i| matches!(i, Item::Single(..)));
    if (items.len() > 1 || wildcard) && !dest_says_dir && several {
        return Err(format!(
            "when using {verb} with more than one source file, the destination must be a \
             directory and end with a /"
        ));
    }
    let wanted: Vec<String> = ancestors(&dest).chain([dest.clone()]).collect();
    let wanted_refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let existing = match base {
        Some(img) => tree::headers_of(images, img, &wanted_refs).map_err(|e| e.to_string())?,
        None => BTreeMap::new(),
    };
    let dest_rel = dest.trim_start_matches('/').to_string();
    let dest_is_dir = dest_says_dir
        || items.len() > 1
        || existing
            .get(Path::new(&dest_rel))
            .is_some_and(|h| h.entry_type().is_dir());
    let owner = match &args.chown {
        Some(spec) => Some(resolve_owner(images, base, spec)?),
        None => None,
    };
    let mut outs: BTreeMap<String, Out> = BTreeMap::new();
    let under = |rel: &str| -> String {
        if dest_rel.is_empty() {
            rel.to_string()
        } else if rel.is_empty() {
            dest_rel.clone()
        } else {
            format!("{dest_rel}/{rel}")
        }
    };
    for item in items {
        match item {
            Item::Dir(entries) | Item::Archive(entries) => {
                if !dest_rel.is_empty() && !existing.contains_key(Path::new(&dest_rel)) {
                    outs.insert(dest_rel.clone(), new_dir(true));
                }
                for (rel, out) in entries {
                    outs.insert(under(&rel), out);
                }
            }
            Item::Single(name, out) => {
                let path = if dest_is_dir {
                    under(&name)
                } else {
                    dest_rel.clone()
                };
                if path.is_empty() {
                    return Err(format!("{verb}: cannot copy a file onto /"));
                }
                if dest_is_dir
                    && !dest_rel.is_empty()
                    && !existing.contains_key(Path::new(&dest_rel))
                {
                    outs.insert(dest_rel.clone(), new_dir(true));
                }
                outs.insert(path, *out);
            }
        }
    }
    // Every directory above an entry: as the image has it, else a new one.
    let paths: Vec<String> = outs.keys().cloned().collect();
    for p in paths {
        for a in ancestors(&format!("/{p}")) {
            let rel = a.trim_start_matches('/').to_string();
            if rel.is_empty() || outs.contains_key(&rel) {
                continue;
            }
            let out = match existing.get(Path::new(&rel)) {
                Some(h) => Out {
                    header: h.clone(),
                    data: Data::None,
                    copied: false,
                },
                None => new_dir(false),
            };
            outs.insert(rel, out);
        }
    }
    for out in outs.values_mut() {
        if !out.copied {
            continue;
        }
        if let Some((uid, gid)) = owner {
            out.header.set_uid(uid.into());
            out.header.set_gid(gid.into());
        }
        if let Some(mode) = args.chmod {
            out.header.set_mode(mode);
        }
    }
    write_layer(outs).map_err(|e| format!("write the layer of {verb}: {e}"))
}

/// A layer that makes directory `dir` (absolute) and its missing parents, or `None`
/// when `base` has it already (`WORKDIR`).
pub(super) fn dir_layer(
    images: &Store,
    base: Option<&LocalImage>,
    dir: &str,
) -> Result<Option<Layer>> {
    let wanted: Vec<String> = ancestors(dir).chain([dir.to_string()]).collect();
    let refs: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let existing = match base {
        Some(img) => tree::headers_of(images, img, &refs)?,
        None => BTreeMap::new(),
    };
    let rel = dir.trim_start_matches('/');
    if rel.is_empty()
        || existing
            .get(Path::new(rel))
            .is_some_and(|h| h.entry_type().is_dir())
    {
        return Ok(None);
    }
    let mut outs = BTreeMap::new();
    for p in &wanted {
        let r = p.trim_start_matches('/').to_string();
        if r.is_empty() {
            continue;
        }
        let out = match existing.get(Path::new(&r)) {
            Some(h) if h.entry_type().is_dir() => Out {
                header: h.clone(),
                data: Data::None,
                copied: false,
            },
            _ => new_dir(false),
        };
        outs.insert(r, out);
    }
    Ok(Some(write_layer(outs).map_err(|e| {
        Error::Build(format!("write the layer of WORKDIR {dir}: {e}"))
    })?))
}

/// `/a/b/c` → `/`, `/a`, `/a/b`.
fn ancestors(path: &str) -> impl Iterator<Item = String> {
    let parts: Vec<String> = path
        .split('/')
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect();
    (0..parts.len()).map(move |n| format!("/{}", parts[..n].join("/")))
}

fn new_dir(copied: bool) -> Out {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    Out {
        header: h,
        data: Data::None,
        copied,
    }
}

/// `src` (relative to the context root) as items.
fn from_context(
    context: &Context,
    src: &str,
    wildcard: bool,
    add: bool,
    verb: &str,
) -> std::result::Result<Vec<Item>, String> {
    let clean = clean_source(src)
        .ok_or_else(|| format!("{verb} {src}: the source is outside the build context"))?;
    let missing = || {
        format!(
            "{verb} source {src}: not found in the build context {} (or excluded by \
             .dockerignore)",
            context.root.display()
        )
    };
    let matches: Vec<String> = if clean.is_empty() {
        vec![String::new()]
    } else if wildcard {
        context
            .files
            .iter()
            .filter(|f| glob_matches(&clean, f))
            .cloned()
            .collect()
    } else if context.files.contains(&clean) {
        vec![clean.clone()]
    } else {
        vec![]
    };
    if matches.is_empty() {
        return Err(missing());
    }
    let mut items = Vec::new();
    for rel in matches {
        let path = context.root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(|e| format!("{verb} {src}: {e}"))?;
        if meta.is_dir() {
            let prefix = if rel.is_empty() {
                String::new()
            } else {
                format!("{rel}/")
            };
            let mut entries = Vec::new();
            for f in context.files.iter().filter(|f| f.starts_with(&prefix)) {
                if let Some(out) =
                    host_entry(&context.root.join(f)).map_err(|e| format!("{verb} {f}: {e}"))?
                {
                    entries.push((f[prefix.len()..].to_string(), out));
                }
            }
            items.push(Item::Dir(entries));
            continue;
        }
        if add && meta.is_file() {
            if let Some(entries) = archive_entries(&path).map_err(|e| format!("ADD {src}: {e}"))? {
                items.push(Item::Archive(entries));
                continue;
            }
        }
        let name = rel.rsplit('/').next().unwrap_or(&rel).to_string();
        if let Some(out) = host_entry(&path).map_err(|e| format!("{verb} {src}: {e}"))? {
            items.push(Item::Single(name, Box::new(out)));
        }
    }
    Ok(items)
}

/// A context path without `./`, `//` or a leading `/`; `None` if it leaves the context.
fn clean_source(src: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in src.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// A host file as a layer entry, owned by 0:0; `None` for sockets and the like.
fn host_entry(path: &Path) -> std::io::Result<Option<Out>> {
    let meta = std::fs::symlink_metadata(path)?;
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    h.set_uid(0);
    h.set_gid(0);
    let data = if meta.is_file() {
        Data::Host(path.to_path_buf())
    } else if meta.is_dir() {
        h.set_size(0);
        Data::None
    } else if meta.file_type().is_symlink() {
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_link_name(std::fs::read_link(path)?)?;
        Data::None
    } else {
        return Ok(None);
    };
    Ok(Some(Out {
        header: h,
        data,
        copied: true,
    }))
}

/// The entries of `path` if it is a tar (plain or gzip), else `None`.
fn archive_entries(path: &Path) -> std::io::Result<Option<Vec<(String, Out)>>> {
    let mut head = [0u8; 512];
    let mut f = File::open(path)?;
    let n = read_up_to(&mut f, &mut head)?;
    let gz = n >= 2 && head[..2] == [0x1f, 0x8b];
    let plain = n >= 262 && &head[257..262] == b"ustar";
    if !gz && !plain {
        return Ok(None);
    }
    let file = File::open(path)?;
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().to_string();
        let rel = clean_source(&raw).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the archive's entry {raw} leaves the destination"),
            )
        })?;
        if rel.is_empty() {
            continue;
        }
        // A fresh header: the archive's may leave numeric fields blank.
        let theirs = entry.header();
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(theirs.entry_type());
        header.set_mode(theirs.mode().unwrap_or(0o644) & 0o7777);
        header.set_uid(theirs.uid().unwrap_or(0));
        header.set_gid(theirs.gid().unwrap_or(0));
        header.set_mtime(theirs.mtime().unwrap_or(0));
        if let Some(link) = entry.link_name()? {
            header.set_link_name(&link)?;
        }
        let mut data = Vec::new();
        if header.entry_type().is_file() {
            entry.read_to_end(&mut data)?;
        } else if !matches!(
            header.entry_type(),
            tar::EntryType::Directory | tar::EntryType::Symlink | tar::EntryType::Link
        ) {
            continue;
        }
        entries.push((
            rel,
            Out {
                header,
                data: Data::Bytes(data),
                copied: true,
            },
        ));
    }
    Ok(Some(entries))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `src` of an earlier stage or an image, as items.
fn from_image(
    images: &Store,
    img: &LocalImage,
    src: &str,
    wildcard: bool,
    verb: &str,
) -> std::result::Result<Vec<Item>, String> {
    let clean = clean_source(src.trim_start_matches('/'))
        .ok_or_else(|| format!("{verb} --from {src}: the path leaves the image's root"))?;
    let (dir, pattern) = if wildcard {
        match clean.rsplit_once('/') {
            Some((d, _)) => (d.to_string(), Some(clean.clone())),
            None => (String::new(), Some(clean.clone())),
        }
    } else {
        (clean.clone(), None)
    };
    let files = tree::files_under(images, img, &format!("/{dir}")).map_err(|e| e.to_string())?;
    let as_out = |e: &tree::TreeEntry| {
        let mut header = e.header.clone();
        header.set_uid(0);
        header.set_gid(0);
        Out {
            header,
            data: Data::Bytes(e.data.clone()),
            copied: true,
        }
    };
    let tops: Vec<String> = match &pattern {
        Some(p) => files
            .keys()
            .map(|k| k.to_string_lossy().to_string())
            .filter(|k| glob_matches(p, k))
            .collect(),
        None if clean.is_empty() || files.contains_key(Path::new(&clean)) => vec![clean.clone()],
        None => vec![],
    };
    if tops.is_empty() {
        return Err(format!(
            "{verb} --from: {src} not found in the stage or image"
        ));
    }
    let mut items = Vec::new();
    for top in tops {
        let is_dir = top.is_empty()
            || files
                .get(Path::new(&top))
                .is_some_and(|e| e.header.entry_type().is_dir());
        if is_dir {
            let prefix = if top.is_empty() {
                String::new()
            } else {
                format!("{top}/")
            };
            let entries = files
                .iter()
                .map(|(k, e)| (k.to_string_lossy().to_string(), e))
                .filter(|(k, _)| k.starts_with(&prefix) && k.len() > prefix.len())
                .map(|(k, e)| (k[prefix.len()..].to_string(), as_out(e)))
                .collect();
            items.push(Item::Dir(entries));
        } else {
            let name = top.rsplit('/').next().unwrap_or(&top).to_string();
            items.push(Item::Single(
                name,
                Box::new(as_out(&files[Path::new(&top)])),
            ));
        }
    }
    Ok(items)
}

/// `--chown=user[:group]`: numbers, or names from the image's `/etc/passwd` and
/// `/etc/group`.
fn resolve_owner(
    images: &Store,
    base: Option<&LocalImage>,
    spec: &str,
) -> std::result::Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let table = |path: &str| -> std::result::Result<String, String> {
        let Some(img) = base else {
            return Ok(String::new());
        };
        let files = tree::files_under(images, img, path).map_err(|e| e.to_string())?;
        Ok(files
            .get(Path::new(path.trim_start_matches('/')))
            .map(|e| String::from_utf8_lossy(&e.data).to_string())
            .unwrap_or_default())
    };
    let lookup = |text: &str, name: &str| -> Option<(u32, Option<u32>)> {
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 3 && f[0] == name)
                .then(|| Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok()))))?
        })
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(n) => (n, None),
        Err(_) => lookup(&table("/etc/passwd")?, user)
            .ok_or_else(|| format!("--chown={spec}: no user {user} in the image's /etc/passwd"))?,
    };
    let gid = match group {
        None => primary.unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(&table("/etc/group")?, g)
                .map(|(gid, _)| gid)
                .ok_or_else(|| format!("--chown={spec}: no group {g} in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

struct HashWriter<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `outs` (sorted, parents first) as a tar in a temporary file.
fn write_layer(outs: BTreeMap<String, Out>) -> std::io::Result<Layer> {
    let tmp = tempfile::NamedTempFile::new()?;
    let writer = HashWriter {
        inner: std::io::BufWriter::new(tmp.reopen()?),
        hash: Sha256::new(),
    };
    let mut builder = tar::Builder::new(writer);
    for (path, out) in outs {
        let mut header = out.header;
        let is_dir = header.entry_type().is_dir();
        let name = if is_dir { format!("{path}/") } else { path };
        match out.data {
            Data::Host(p) => {
                let f = File::open(&p)?;
                let len = f.metadata()?.len();
                header.set_size(len);
                builder.append_data(&mut header, &name, f.take(len))?;
            }
            Data::Bytes(b) => {
                header.set_size(b.len() as u64);
                builder.append_data(&mut header, &name, &b[..])?;
            }
            Data::None => {
                header.set_size(0);
                let link = header.link_name()?.map(|l| l.into_owned());
                match link {
                    Some(l) if header.entry_type().is_symlink() => {
                        builder.append_link(&mut header, &name, l)?
                    }
                    _ => builder.append_data(&mut header, &name, std::io::empty())?,
                }
            }
        }
    }
    let mut writer = builder.into_inner()?;
    writer.flush()?;
    let digest = super::hex(&writer.hash.finalize());
    Ok(Layer {
        digest,
        file: LayerFile(tmp),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_in_the_context() {
        assert_eq!(clean_source("./a//b/").as_deref(), Some("a/b"));
        assert_eq!(clean_source("/a/../b").as_deref(), Some("b"));
        assert_eq!(clean_source("."), Some(String::new()));
        assert_eq!(clean_source("../x"), None);
    }

    #[test]
    fn ancestors_run_from_the_root() {
        let a: Vec<String> = ancestors("/a/b/c").collect();
        assert_eq!(a, ["/", "/a", "/a/b"]);
    }
}

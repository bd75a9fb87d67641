//! Image commands: pull, push, images, rmi, tag, history, load, save, login, logout, and the
//! `image` group (ls, pull, push, rm, tag, inspect, history, load, save, prune).

use crate::format::{print_table, truncate};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use berth_image::registry::BlobPush;
use berth_image::{ops, Client, ClientOptions, Digest, Platform, Reference, Store};
use berth_units::{human_duration, human_size};
use clap::{Args, Subcommand};

/// Registry options shared by pull and push.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Use plain HTTP for this registry (localhost always may); BERTH_INSECURE_REGISTRIES
    /// lists more, comma-separated.
    #[arg(long)]
    pub insecure: bool,
    /// Print no progress.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `pull` arguments.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// Platform to pick from a multi-platform image (default: the guest's, linux/<host arch>).
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Image reference (`alpine`, `localhost:5000/app:1`, `name@sha256:...`).
    pub image: String,
}

/// `push` arguments.
#[derive(Debug, Clone, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Local image reference, pushed to the registry it names.
    pub image: String,
}

/// `images` arguments.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Full image IDs.
    #[arg(long)]
    pub no_trunc: bool,
    /// Show manifest digests.
    #[arg(long)]
    pub digests: bool,
}

/// `rmi` arguments.
#[derive(Debug, Clone, Args)]
pub struct RmiArgs {
    /// Remove an image ID with several tags.
    #[arg(short, long)]
    pub force: bool,
    /// Images (references or ID prefixes).
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `tag` arguments.
#[derive(Debug, Clone, Args)]
pub struct TagArgs {
    /// Existing image.
    pub source: String,
    /// New reference.
    pub target: String,
}

/// `history` arguments.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Sizes and dates in human form.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Only IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Image.
    pub image: String,
}

/// `load` arguments.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Archive to read (default: stdin).
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Print less.
    #[arg(short, long)]
    pub quiet: bool,
    /// Platform to pick from multi-platform archives.
    #[arg(long)]
    pub platform: Option<String>,
}

/// `save` arguments.
#[derive(Debug, Clone, Args)]
pub struct SaveArgs {
    /// Archive to write (default: stdout, which must not be a terminal).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Images to save.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `login` arguments.
#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin).
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
    /// Use plain HTTP for this registry.
    #[arg(long)]
    pub insecure: bool,
    /// Registry (default: Docker Hub).
    pub server: Option<String>,
}

/// `logout` arguments.
#[derive(Debug, Clone, Args)]
pub struct LogoutArgs {
    /// Registry (default: Docker Hub).
    pub server: Option<String>,
}

/// `inspect` arguments.
#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// Images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// The `image` command group.
#[derive(Debug, Clone, Subcommand)]
pub enum ImageSub {
    /// List images.
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// Remove images.
    #[command(alias = "rmi")]
    Rm(RmiArgs),
    /// Tag an image.
    Tag(TagArgs),
    /// Show an image's details as JSON.
    Inspect(InspectArgs),
    /// Show an image's history.
    History(HistoryArgs),
    /// Load images from a docker-save or OCI archive.
    Load(LoadArgs),
    /// Save images to an archive (OCI layout and docker-save at once).
    Save(SaveArgs),
    /// Remove untagged images and unreferenced data.
    Prune,
}

/// Image commands; flattened into berth's top-level commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push an image to a registry.
    Push(PushArgs),
    /// List images.
    Images(ListArgs),
    /// Remove images.
    Rmi(RmiArgs),
    /// Tag an image.
    Tag(TagArgs),
    /// Show an image's history.
    History(HistoryArgs),
    /// Load images from a docker-save or OCI archive.
    Load(LoadArgs),
    /// Save images to an archive (OCI layout and docker-save at once).
    Save(SaveArgs),
    /// Log in to a registry.
    Login(LoginArgs),
    /// Log out from a registry.
    Logout(LogoutArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageSub),
}

/// A registry client with berth's flags.
pub(crate) fn client(platform: Option<&str>, insecure: bool, quiet: bool) -> Result<Client> {
    let mut opts = ClientOptions {
        insecure,
        progress: !quiet,
        ..ClientOptions::default()
    };
    if let Some(p) = platform {
        opts.platform = p.parse::<Platform>()?;
    }
    Ok(Client::new(opts)?)
}

/// Runs an image command.
pub async fn run(cmd: ImageCommand) -> Result<()> {
    match cmd {
        ImageCommand::Pull(a) | ImageCommand::Image(ImageSub::Pull(a)) => pull(a).await,
        ImageCommand::Push(a) | ImageCommand::Image(ImageSub::Push(a)) => push(a).await,
        ImageCommand::Images(a) | ImageCommand::Image(ImageSub::Ls(a)) => list(a),
        ImageCommand::Rmi(a) | ImageCommand::Image(ImageSub::Rm(a)) => rmi(a),
        ImageCommand::Tag(a) | ImageCommand::Image(ImageSub::Tag(a)) => {
            Store::open_default()?.tag(&a.source, &a.target)?;
            Ok(())
        }
        ImageCommand::History(a) | ImageCommand::Image(ImageSub::History(a)) => history(a),
        ImageCommand::Load(a) | ImageCommand::Image(ImageSub::Load(a)) => load(a),
        ImageCommand::Save(a) | ImageCommand::Image(ImageSub::Save(a)) => save(a),
        ImageCommand::Image(ImageSub::Inspect(a)) => {
            let store = Store::open_default()?;
            let mut docs = Vec::new();
            for i in &a.images {
                docs.push(inspect_json(&store, i)?);
            }
            println!("{}", serde_json::to_string_pretty(&docs)?);
            Ok(())
        }
        ImageCommand::Image(ImageSub::Prune) => prune(),
        ImageCommand::Login(a) => login(a).await,
        ImageCommand::Logout(a) => logout(a),
    }
}

/// The docker-like `inspect` document of an image (for a top-level `inspect` that also
/// knows containers).
pub fn inspect_json(store: &Store, image: &str) -> Result<serde_json::Value> {
    let img = store.resolve(image)?;
    Ok(ops::inspect(store, &img)?)
}

async fn pull(a: PullArgs) -> Result<()> {
    let store = Store::open_default()?;
    let reference = Reference::parse(&a.image)?;
    let client = client(a.platform.as_deref(), a.registry.insecure, a.registry.quiet)?;
    let had: Vec<_> = store
        .resolve(&reference.to_string())
        .ok()
        .into_iter()
        .collect();
    if !a.registry.quiet {
        println!(
            "{}: Pulling from {}",
            reference.manifest_ref(),
            reference.repository
        );
    }
    let report = client.pull(&store, &reference).await?;
    if !a.registry.quiet {
        for (l, _) in report.image.layers() {
            let digest = Digest::try_from(l.digest())?;
            let state = if report.downloaded.contains(&digest) {
                "Pull complete"
            } else {
                "Already exists"
            };
            println!("{}: {state}", digest.short());
        }
        println!("Digest: {}", report.digest);
        let status = match had.first() {
            Some(old) if old.manifest_digest == report.image.manifest_digest => {
                "Image is up to date"
            }
            _ => "Downloaded newer image",
        };
        println!("Status: {status} for {}", reference.familiar());
    }
    println!("{reference}");
    Ok(())
}

async fn push(a: PushArgs) -> Result<()> {
    let store = Store::open_default()?;
    let reference = Reference::parse(&a.image)?;
    if reference.tag.is_none() {
        bail!("push needs a tag, not only a digest: tag the image first with `berth tag`");
    }
    let client = client(None, a.registry.insecure, a.registry.quiet)?;
    println!("The push refers to repository [{}]", reference.name());
    let report = client.push(&store, &a.image, Some(&reference)).await?;
    for (d, outcome) in &report.blobs {
        match outcome {
            BlobPush::Exists => println!("{}: Layer already exists", d.short()),
            BlobPush::Mounted(from) => println!("{}: Mounted from {from}", d.short()),
            BlobPush::Pushed => println!("{}: Pushed", d.short()),
        }
    }
    println!(
        "{}: digest: {} size: {}",
        reference.manifest_ref(),
        report.manifest_digest,
        report.manifest_size
    );
    Ok(())
}

fn age(created: Option<&str>) -> String {
    created
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| ago(t.with_timezone(&chrono::Utc)))
        .unwrap_or_else(|| "N/A".to_string())
}

/// "5 minutes ago", as docker prints a past time.
fn ago(t: chrono::DateTime<chrono::Utc>) -> String {
    let d = chrono::Utc::now().signed_duration_since(t);
    format!("{} ago", human_duration(d.to_std().unwrap_or_default()))
}

fn list(a: ListArgs) -> Result<()> {
    let store = Store::open_default()?;
    let mut rows: Vec<[String; 6]> = Vec::new();
    for img in store.list()? {
        let id = if a.no_trunc {
            img.id.to_string()
        } else {
            img.id.short().to_string()
        };
        let size = img
            .layers()
            .map(|(d, diff)| store.layer_size(diff).unwrap_or(d.size()))
            .sum::<u64>();
        let created = age(img.config.created.as_deref());
        let mut names: Vec<(String, String)> = Vec::new();
        for k in &img.refs {
            match Reference::parse(k) {
                Ok(r) if r.tag.is_some() && r.digest.is_none() => {
                    let tag = r.tag.clone().unwrap_or_default();
                    let repo = Reference {
                        tag: None,
                        digest: None,
                        ..r
                    }
                    .familiar();
                    names.push((repo, tag));
                }
                Ok(r) => names.push((
                    Reference {
                        tag: None,
                        digest: None,
                        ..r
                    }
                    .familiar(),
                    "<none>".into(),
                )),
                Err(_) => names.push(("<none>".into(), "<none>".into())),
            }
        }
        if names.is_empty() {
            names.push(("<none>".into(), "<none>".into()));
        }
        for (repo, tag) in names {
            rows.push([
                repo,
                tag,
                img.manifest_digest.to_string(),
                id.clone(),
                created.clone(),
                human_size(size),
            ]);
        }
    }
    rows.sort();
    let mut out = std::io::stdout().lock();
    if a.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for r in rows {
            if seen.insert(r[3].clone()) {
                writeln!(out, "{}", r[3])?;
            }
        }
        return Ok(());
    }
    let mut table = vec![if a.digests {
        vec!["REPOSITORY", "TAG", "DIGEST", "IMAGE ID", "CREATED", "SIZE"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    } else {
        vec!["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
            .into_iter()
            .map(String::from)
            .collect()
    }];
    for r in rows {
        let mut row = vec![r[0].clone(), r[1].clone()];
        if a.digests {
            row.push(r[2].clone());
        }
        row.extend([r[3].clone(), r[4].clone(), r[5].clone()]);
        table.push(row);
    }
    print_table(&mut out, &table)?;
    Ok(())
}

fn rmi(a: RmiArgs) -> Result<()> {
    let store = Store::open_default()?;
    let mut failed = false;
    for i in &a.images {
        let before = store.resolve(i);
        match store.remove(i, a.force) {
            Ok((removed, gc)) => {
                for r in removed {
                    let shown = Reference::parse(&r).map(|r| r.familiar()).unwrap_or(r);
                    println!("Untagged: {shown}");
                }
                if let Ok(img) = before {
                    if store.resolve(img.id.as_str()).is_err() {
                        println!("Deleted: {}", img.id);
                    }
                }
                tracing::info!(
                    "removed {} blobs and {} layer images, {} freed",
                    gc.blobs_removed,
                    gc.layers_removed,
                    human_size(gc.bytes_freed)
                );
            }
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("some images could not be removed");
    }
    Ok(())
}

fn prune() -> Result<()> {
    let store = Store::open_default()?;
    let (removed, gc) = store.prune()?;
    if !removed.is_empty() {
        println!("Deleted Images:");
        for r in &removed {
            println!(
                "deleted: {}",
                r.trim_start_matches(berth_image::store::UNTAGGED)
            );
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(gc.bytes_freed));
    Ok(())
}

fn history(a: HistoryArgs) -> Result<()> {
    let store = Store::open_default()?;
    let img = store.resolve(&a.image)?;
    let rows = ops::history(&store, &img);
    let mut out = std::io::stdout().lock();
    let id_of = |r: &ops::HistoryRow| match &r.id {
        Some(d) if a.no_trunc => d.to_string(),
        Some(d) => d.short().to_string(),
        None => "<missing>".to_string(),
    };
    if a.quiet {
        for r in &rows {
            writeln!(out, "{}", id_of(r))?;
        }
        return Ok(());
    }
    let mut table = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        .map(String::from)
        .to_vec()];
    for r in &rows {
        let created = match (r.created, a.human) {
            (Some(t), true) => ago(t),
            (Some(t), false) => t.to_rfc3339(),
            (None, _) => "N/A".into(),
        };
        let by = r.created_by.replace('\n', " ");
        let by = if a.no_trunc { by } else { truncate(&by, 45) };
        let size = if a.human {
            human_size(r.size)
        } else {
            r.size.to_string()
        };
        table.push(vec![id_of(r), created, by, size, r.comment.clone()]);
    }
    print_table(&mut out, &table)?;
    Ok(())
}

fn load(a: LoadArgs) -> Result<()> {
    let store = Store::open_default()?;
    let platform = match &a.platform {
        Some(p) => p.parse()?,
        None => Platform::host(),
    };
    // Layer images are written in userspace: no root needed, so always prepare them.
    let prepare = true;
    let images = match &a.input {
        Some(p) => berth_image::archive::load(&store, p, &platform, prepare)?,
        None => {
            if std::io::stdin().is_terminal() {
                bail!("berth load reads an archive from stdin or -i FILE; stdin is a terminal");
            }
            // The archive is read twice at most in one pass, but from a file: spool stdin.
            let staging = store.staging()?;
            let spool = staging.path_for("stdin.tar");
            let mut f =
                std::fs::File::create(&spool).with_context(|| spool.display().to_string())?;
            std::io::copy(&mut std::io::stdin().lock(), &mut f)?;
            drop(f);
            berth_image::archive::load(&store, &spool, &platform, prepare)?
        }
    };
    for img in images {
        let tags = img.tags();
        if tags.is_empty() {
            println!("Loaded image ID: {}", img.id);
        }
        for t in tags {
            let shown = Reference::parse(&t).map(|r| r.familiar()).unwrap_or(t);
            println!("Loaded image: {shown}");
        }
    }
    let _ = a.quiet;
    Ok(())
}

fn save(a: SaveArgs) -> Result<()> {
    let store = Store::open_default()?;
    match &a.output {
        Some(p) => {
            // Written next to the target and renamed: a failed save leaves no partial file.
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let tmp = tempfile::NamedTempFile::new_in(dir)
                .with_context(|| format!("cannot write in {}", dir.display()))?;
            let mut w = std::io::BufWriter::new(tmp);
            berth_image::archive::save(&store, &a.images, &mut w)?;
            let tmp = w.into_inner().map_err(|e| e.into_error())?;
            tmp.persist(p)
                .map_err(|e| e.error)
                .with_context(|| format!("cannot write {}", p.display()))?;
        }
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("refusing to write an archive to a terminal: use -o FILE or redirect stdout");
            }
            berth_image::archive::save(&store, &a.images, std::io::BufWriter::new(stdout.lock()))?;
        }
    }
    Ok(())
}

fn registry_name(server: Option<&str>) -> String {
    match server {
        None => berth_image::reference::DOCKER_HUB.to_string(),
        Some(s) => {
            let s = s
                .strip_prefix("https://")
                .or_else(|| s.strip_prefix("http://"))
                .unwrap_or(s);
            let host = s.split('/').next().unwrap_or(s);
            match host {
                "index.docker.io" | "registry-1.docker.io" => {
                    berth_image::reference::DOCKER_HUB.to_string()
                }
                h => h.to_string(),
            }
        }
    }
}

fn read_line_no_echo(prompt: &str) -> Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let quiet = crate::terminal::TerminalMode::no_echo();
    let mut line = String::new();
    let r = std::io::stdin().read_line(&mut line);
    if quiet.is_some() {
        drop(quiet);
        eprintln!();
    }
    r?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

async fn login(a: LoginArgs) -> Result<()> {
    let registry = registry_name(a.server.as_deref());
    let username = match a.username {
        Some(u) => u,
        None => {
            if !std::io::stdin().is_terminal() {
                bail!("give a user name with -u");
            }
            eprint!("Username: ");
            let mut u = String::new();
            std::io::stdin().read_line(&mut u)?;
            u.trim().to_string()
        }
    };
    let password = if a.password_stdin {
        let mut p = String::new();
        std::io::stdin().read_to_string(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if std::io::stdin().is_terminal() {
        read_line_no_echo("Password: ")?
    } else {
        bail!("give a password with --password-stdin or -p");
    };
    if username.is_empty() || password.is_empty() {
        bail!("user name and password must not be empty");
    }
    let creds = berth_image::auth::Credentials { username, password };
    let client = client(None, a.insecure, true)?;
    client.check_login(&registry, &creds).await?;
    let path = berth_image::auth::store(&registry, &creds)?;
    eprintln!("Credentials saved in {}", path.display());
    println!("Login Succeeded");
    Ok(())
}

fn logout(a: LogoutArgs) -> Result<()> {
    let registry = registry_name(a.server.as_deref());
    if berth_image::auth::remove(&registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names_are_normalised() {
        assert_eq!(registry_name(None), "docker.io");
        assert_eq!(
            registry_name(Some("https://index.docker.io/v1/")),
            "docker.io"
        );
        assert_eq!(registry_name(Some("127.0.0.1:5000")), "127.0.0.1:5000");
        assert_eq!(
            registry_name(Some("http://localhost:5001/")),
            "localhost:5001"
        );
    }
}

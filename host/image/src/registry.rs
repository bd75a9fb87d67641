//! Registry client: the Docker Registry HTTP API v2 / OCI distribution protocol over reqwest
//! (rustls). Anonymous, Bearer-token and Basic authentication; parallel verified layer
//! downloads with progress bars and retries; push with existence checks, cross-repository
//! mounts and the manifest last.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use futures_util::{stream, StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::auth::{self, Credentials};
use crate::error::{Error, IoContext, Result};
use crate::manifest::{self, Descriptor, ImageManifest, ManifestKind, Platform, MANIFEST_ACCEPT};
use crate::reference::{api_host, Digest, Reference};
use crate::store::{LocalImage, RefEntry, Store};

const RETRIES: u32 = 4;

/// A blob to fetch or push: a descriptor's digest, as the store keys it, and its size.
#[derive(Debug, Clone)]
struct Blob {
    digest: Digest,
    size: u64,
}

impl TryFrom<&Descriptor> for Blob {
    type Error = Error;
    fn try_from(d: &Descriptor) -> Result<Self> {
        Ok(Blob {
            digest: Digest::try_from(d.digest())?,
            size: d.size(),
        })
    }
}

/// The blobs of a manifest's layers, lowest first.
fn layer_blobs(m: &ImageManifest) -> Result<Vec<Blob>> {
    m.layers().iter().map(Blob::try_from).collect()
}

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Allow plain HTTP for every registry (`--insecure`).
    pub insecure: bool,
    /// Registries reached over plain HTTP (besides localhost); BERTH_INSECURE_REGISTRIES.
    pub insecure_registries: Vec<String>,
    /// Show progress bars on stderr (when it is a terminal).
    pub progress: bool,
    /// The platform to pick from indexes.
    pub platform: Platform,
    /// Parallel blob transfers.
    pub parallel: usize,
    /// Build the guest-ready layer images during pull (no root needed).
    pub prepare_layers: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let insecure_registries = std::env::var("BERTH_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        ClientOptions {
            insecure: false,
            insecure_registries,
            progress: true,
            platform: Platform::host(),
            parallel: 6,
            prepare_layers: true,
        }
    }
}

/// What happened to one blob during a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobPush {
    /// The registry had it already.
    Exists,
    /// Mounted from another repository of the same registry.
    Mounted(String),
    /// Uploaded.
    Pushed,
}

/// The result of a push.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// Where it went.
    pub target: Reference,
    /// Per blob (layers, then config).
    pub blobs: Vec<(Digest, BlobPush)>,
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// The manifest size.
    pub manifest_size: u64,
}

/// The result of a pull.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// The pulled image.
    pub image: LocalImage,
    /// The reference key it was stored under.
    pub reference: Reference,
    /// Layers downloaded (the others were present).
    pub downloaded: Vec<Digest>,
    /// The digest the registry reported for the reference (index or manifest).
    pub digest: Digest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Challenge {
    scheme: String,
    params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` header (`Bearer realm="...",service="...",scope="..."`).
fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                value.push(*c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

fn is_local(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

fn detail_of(body: &str) -> String {
    // Registries answer {"errors":[{"code":..,"message":..}]}.
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
        if let Some(errs) = v.get("errors").and_then(|e| e.as_array()) {
            let msgs: Vec<String> = errs
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("code").and_then(|c| c.as_str()).unwrap_or("ERROR"),
                        e.get("message").and_then(|c| c.as_str()).unwrap_or("")
                    )
                })
                .collect();
            if !msgs.is_empty() {
                return msgs.join("; ");
            }
        }
    }
    let t = body.trim();
    if t.is_empty() {
        "no details".to_string()
    } else {
        t.chars().take(300).collect()
    }
}

/// A registry client.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    opts: ClientOptions,
    /// (api host, scope) -> Authorization header value.
    auth_cache: Mutex<HashMap<(String, String), String>>,
    /// Credentials given explicitly (login), by registry name.
    explicit: Mutex<HashMap<String, Credentials>>,
}

struct Target<'a> {
    registry: &'a str,
    scopes: Vec<String>,
}

impl Client {
    /// A client with the given options.
    pub fn new(opts: ClientOptions) -> Result<Client> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| Error::Transport {
                registry: "-".into(),
                what: "HTTP client setup".into(),
                detail: e.to_string(),
            })?;
        Ok(Client {
            http,
            opts,
            auth_cache: Mutex::new(HashMap::new()),
            explicit: Mutex::new(HashMap::new()),
        })
    }

    /// The client's options.
    pub fn options(&self) -> &ClientOptions {
        &self.opts
    }

    fn base_url(&self, registry: &str) -> String {
        let host = api_host(registry);
        let plain = self.opts.insecure
            || is_local(host)
            || self
                .opts
                .insecure_registries
                .iter()
                .any(|r| r == registry || r == host);
        format!("{}://{host}", if plain { "http" } else { "https" })
    }

    /// The credentials given for `registry`, else those of the config files, read (and
    /// any credential helper run) off the async threads.
    async fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(c) = self
            .explicit
            .lock()
            .map_err(|_| poisoned())?
            .get(registry)
            .cloned()
        {
            return Ok(Some(c));
        }
        let registry = registry.to_string();
        tokio::task::spawn_blocking(move || auth::lookup(&registry))
            .await
            .map_err(|e| Error::Malformed {
                what: "credential lookup".into(),
                reason: e.to_string(),
            })?
    }

    /// Answers a 401 challenge: returns the Authorization header value to retry with.
    async fn authenticate(
        &self,
        registry: &str,
        challenge: Option<&str>,
        scopes: &[String],
        sent_credentials: bool,
    ) -> Result<String> {
        let creds = self.credentials(registry).await?;
        let unauthorized = |detail: String| Error::Unauthorized {
            registry: registry.to_string(),
            detail,
        };
        let ch = challenge.and_then(parse_challenge).ok_or_else(|| {
            unauthorized("the registry sent no WWW-Authenticate challenge".into())
        })?;
        match ch.scheme.as_str() {
            "basic" => match creds {
                Some(c) if !sent_credentials => Ok(c.basic_header()),
                Some(_) => Err(unauthorized(
                    "the registry refused the stored credentials".into(),
                )),
                None => Err(unauthorized("authentication required".into())),
            },
            "bearer" => {
                let realm = ch
                    .params
                    .get("realm")
                    .ok_or_else(|| unauthorized("Bearer challenge without realm".into()))?;
                let mut url = reqwest::Url::parse(realm)
                    .map_err(|e| unauthorized(format!("bad token realm {realm:?}: {e}")))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = ch.params.get("service") {
                        q.append_pair("service", s);
                    }
                    let mut any = false;
                    for s in scopes {
                        q.append_pair("scope", s);
                        any = true;
                    }
                    if !any {
                        if let Some(s) = ch.params.get("scope") {
                            q.append_pair("scope", s);
                        }
                    }
                }
                let mut req = self.http.get(url.clone());
                if let Some(c) = &creds {
                    req = req.header(AUTHORIZATION, c.basic_header());
                }
                let resp = req.send().await.map_err(|e| Error::Transport {
                    registry: registry.to_string(),
                    what: format!("token from {realm}"),
                    detail: e.to_string(),
                })?;
                let status = resp.status();
                let (body, whole) = read_up_to(resp, MAX_TOKEN_ANSWER).await.unwrap_or_default();
                if status.is_success() && !whole {
                    return Err(unauthorized(format!(
                        "the token server's answer is larger than {} MiB",
                        MAX_TOKEN_ANSWER >> 20
                    )));
                }
                let body = String::from_utf8_lossy(&body).into_owned();
                if !status.is_success() {
                    let who = if creds.is_some() {
                        "the token server refused the stored credentials"
                    } else {
                        "the token server requires credentials"
                    };
                    return Err(unauthorized(format!(
                        "{who} ({status}: {})",
                        detail_of(&body)
                    )));
                }
                let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| {
                    unauthorized(format!(
                        "token server answered something that is not JSON: {e}"
                    ))
                })?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| unauthorized("the token server answered no token".into()))?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(unauthorized(format!(
                "unsupported authentication scheme {other:?}"
            ))),
        }
    }

    /// Sends a request with authentication and retries. `make` builds it afresh each time.
    async fn send(
        &self,
        target: &Target<'_>,
        what: &str,
        make: &(dyn Fn(&reqwest::Client, Option<&str>) -> reqwest::RequestBuilder + Sync),
    ) -> Result<reqwest::Response> {
        let host = api_host(target.registry).to_string();
        let scope_key = target.scopes.join(" ");
        let cache_key = (host.clone(), scope_key.clone());
        let mut auth = self
            .auth_cache
            .lock()
            .map_err(|_| poisoned())?
            .get(&cache_key)
            .cloned();
        let mut auth_rounds = 0;
        let mut attempt = 0;
        loop {
            let result = make(&self.http, auth.as_deref()).send().await;
            let transient = match result {
                Err(e) => {
                    if attempt + 1 < RETRIES && (e.is_connect() || e.is_timeout() || e.is_request())
                    {
                        format!("{e}")
                    } else {
                        return Err(Error::Transport {
                            registry: target.registry.to_string(),
                            what: what.to_string(),
                            detail: error_chain(&e),
                        });
                    }
                }
                Ok(resp) => {
                    let status = resp.status();
                    if status == StatusCode::UNAUTHORIZED && auth_rounds < 2 {
                        let challenge = resp
                            .headers()
                            .get(WWW_AUTHENTICATE)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let value = self
                            .authenticate(
                                target.registry,
                                challenge.as_deref(),
                                &target.scopes,
                                auth.is_some(),
                            )
                            .await?;
                        self.auth_cache
                            .lock()
                            .map_err(|_| poisoned())?
                            .insert(cache_key.clone(), value.clone());
                        auth = Some(value);
                        auth_rounds += 1;
                        continue;
                    }
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED);
                    if retryable && attempt + 1 < RETRIES {
                        format!("HTTP {status}")
                    } else {
                        return Ok(resp);
                    }
                }
            };
            attempt += 1;
            let delay = Duration::from_millis(200 * (1 << attempt));
            tracing::info!("{what}: {transient}; retrying in {delay:?} ({attempt}/{RETRIES})");
            tokio::time::sleep(delay).await;
        }
    }

    /// Turns a non-success answer into an error.
    async fn check(
        &self,
        registry: &str,
        what: &str,
        resp: reqwest::Response,
    ) -> Result<reqwest::Response> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        // Only the start of an error page is read: it is for a message.
        let (body, _) = read_up_to(resp, MAX_ERROR_PAGE).await.unwrap_or_default();
        let detail = detail_of(&String::from_utf8_lossy(&body));
        Err(match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized {
                registry: registry.to_string(),
                detail: format!("{status} for {what}: {detail}"),
            },
            StatusCode::NOT_FOUND => Error::RegistryNotFound {
                registry: registry.to_string(),
                what: what.to_string(),
                detail,
            },
            s => Error::RegistryStatus {
                registry: registry.to_string(),
                status: s.as_u16(),
                what: what.to_string(),
                detail,
            },
        })
    }

    fn progress(&self) -> MultiProgress {
        let target = if self.opts.progress {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        MultiProgress::with_draw_target(target)
    }

    /// Fetches a manifest document; verifies it against a pinned digest and the registry's
    /// `Docker-Content-Digest`.
    async fn fetch_manifest(
        &self,
        target: &Target<'_>,
        repository: &str,
        reference: &str,
    ) -> Result<(Vec<u8>, String, Digest)> {
        let url = format!(
            "{}/v2/{repository}/manifests/{reference}",
            self.base_url(target.registry)
        );
        let what = format!("manifest {repository}:{reference}");
        let resp = self
            .send(target, &what, &|c, a| {
                with_auth(c.get(&url).header(ACCEPT, MANIFEST_ACCEPT), a)
            })
            .await?;
        let resp = self.check(target.registry, &what, resp).await?;
        let declared = header_str(resp.headers(), CONTENT_TYPE.as_str());
        let header_digest = header_str(resp.headers(), "docker-content-digest");
        // Checked as it arrives: a hostile registry's endless manifest is never held.
        let (body, whole) = read_up_to(resp, MAX_MANIFEST)
            .await
            .map_err(|e| Error::Transport {
                registry: target.registry.to_string(),
                what: what.clone(),
                detail: e.to_string(),
            })?;
        if !whole {
            return Err(Error::Malformed {
                what,
                reason: format!("manifest larger than {} MiB", MAX_MANIFEST >> 20),
            });
        }
        let digest = Digest::of(&body);
        let expected = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else if header_digest.starts_with("sha256:") {
            Some(header_digest)
        } else {
            None
        };
        if let Some(e) = expected {
            if e != digest.as_str() {
                return Err(Error::DigestMismatch {
                    what,
                    expected: e,
                    actual: digest.to_string(),
                });
            }
        }
        Ok((body.to_vec(), declared, digest))
    }

    /// Downloads a blob into `path`, verifying size and digest; retries from scratch on a
    /// broken transfer.
    async fn download_blob(
        &self,
        target: &Target<'_>,
        repository: &str,
        desc: &Blob,
        path: &std::path::Path,
        bar: &ProgressBar,
    ) -> Result<()> {
        let url = format!(
            "{}/v2/{repository}/blobs/{}",
            self.base_url(target.registry),
            desc.digest
        );
        let what = format!("blob {}", desc.digest);
        let mut attempt = 0;
        loop {
            attempt += 1;
            bar.set_position(0);
            let resp = self
                .send(target, &what, &|c, a| with_auth(c.get(&url), a))
                .await?;
            let resp = self.check(target.registry, &what, resp).await?;
            match self.stream_to_file(resp, path, desc, bar).await {
                Err(Error::Transport { detail, .. }) if attempt < RETRIES => {
                    tracing::info!("{what}: transfer broke ({detail}); retrying");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                Err(Error::Transport { detail, .. }) => {
                    return Err(Error::Transport {
                        registry: target.registry.to_string(),
                        what,
                        detail,
                    })
                }
                other => return other,
            }
        }
    }

    async fn stream_to_file(
        &self,
        resp: reqwest::Response,
        path: &std::path::Path,
        desc: &Blob,
        bar: &ProgressBar,
    ) -> Result<()> {
        let what = format!("blob {}", desc.digest);
        let mut file = File::create(path).at(path)?;
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Error::Transport {
                registry: String::new(),
                what: what.clone(),
                detail: error_chain(&e),
            })?;
            total += chunk.len() as u64;
            if total > desc.size {
                return Err(Error::SizeMismatch {
                    what,
                    expected: desc.size,
                    actual: total,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).at(path)?;
            bar.set_position(total);
        }
        if total != desc.size {
            return Err(Error::SizeMismatch {
                what,
                expected: desc.size,
                actual: total,
            });
        }
        let actual = Digest::from_hasher(hasher);
        if actual != desc.digest {
            return Err(Error::DigestMismatch {
                what,
                expected: desc.digest.to_string(),
                actual: actual.to_string(),
            });
        }
        file.sync_all().at(path)?;
        Ok(())
    }

    /// Pulls an image into the store. Everything is verified in a staging area and
    /// committed only when complete; on any error the store is unchanged.
    pub async fn pull(&self, store: &Store, reference: &Reference) -> Result<PullReport> {
        let _writer = store.writer_lock()?;
        let repo = reference.repository.as_str();
        let target = Target {
            registry: &reference.registry,
            scopes: vec![format!("repository:{repo}:pull")],
        };
        let display = reference.familiar();
        let (top_bytes, declared, top_digest) = self
            .fetch_manifest(&target, repo, &reference.manifest_ref())
            .await?;
        let (top_type, kind) = manifest::parse_manifest(&top_bytes, &declared, &display)?;
        let mut staging = store.staging()?;
        let (manifest_bytes, manifest_digest, manifest, index_digest) = match kind {
            ManifestKind::Image(m) => {
                let _ = top_type;
                (top_bytes, top_digest.clone(), m, None)
            }
            ManifestKind::Index(idx) => {
                let chosen = manifest::select_platform(&idx, &self.opts.platform, &display)?;
                let (bytes, declared, digest) = self
                    .fetch_manifest(&target, repo, chosen.digest().as_ref())
                    .await?;
                let what = format!("{display} ({})", self.opts.platform);
                match manifest::parse_manifest(&bytes, &declared, &what)? {
                    (_, ManifestKind::Image(m)) => {
                        staging.add_bytes_expect(&top_bytes, &top_digest, &display)?;
                        (bytes, digest, m, Some(top_digest.clone()))
                    }
                    (_, ManifestKind::Index(_)) => {
                        return Err(Error::Malformed {
                            what,
                            reason: "an index entry points to another index".into(),
                        })
                    }
                }
            }
        };
        staging.add_bytes_expect(&manifest_bytes, &manifest_digest, &display)?;

        let multi = self.progress();
        // The config first: it holds the diff IDs the layers are checked against.
        let config_blob = Blob::try_from(manifest.config())?;
        let layers = layer_blobs(&manifest)?;
        let config_path = staging.path_for(&format!("blob-{}", config_blob.digest.hex()));
        let config_bytes = if store.has_blob(&config_blob.digest) {
            store.read_blob(&config_blob.digest)?
        } else {
            let bar = ProgressBar::hidden();
            self.download_blob(&target, repo, &config_blob, &config_path, &bar)
                .await?;
            staging.add_verified_blob(config_blob.digest.clone(), config_path.clone());
            std::fs::read(&config_path).at(&config_path)?
        };
        let config = manifest::parse_config(&config_bytes, &manifest, &display)?;
        if !config.architecture.is_empty()
            && (config.architecture != self.opts.platform.architecture
                || (!config.os.is_empty() && config.os != self.opts.platform.os))
        {
            return Err(Error::NoMatchingPlatform {
                reference: display,
                wanted: self.opts.platform.to_string(),
                available: format!("{}/{}", config.os, config.architecture),
            });
        }

        let style = ProgressStyle::with_template(
            "{prefix:.bold} {msg:12} [{bar:30}] {bytes}/{total_bytes}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let mut seen = std::collections::BTreeSet::new();
        let jobs: Vec<(Blob, Digest)> = layers
            .iter()
            .zip(config.rootfs.diff_ids.iter())
            .filter(|(d, _)| seen.insert(d.digest.clone()))
            .map(|(d, diff)| (d.clone(), diff.clone()))
            .collect();
        let prepare = self.opts.prepare_layers;
        let staging_dir = staging.dir().to_path_buf();
        type Done = (Digest, Option<PathBuf>, Option<(Digest, PathBuf, u64)>);
        // Every job runs to its end, even after another failed: a layer preparation on a
        // blocking thread cannot be cancelled, and the staging area must outlive it, or
        // its file would land in a folder being removed. Jobs not yet begun are skipped.
        let failed = AtomicBool::new(false);
        let outcomes: Vec<Result<Option<Done>>> =
            stream::iter(jobs.into_iter().map(|(desc, diff_id)| {
                let multi = &multi;
                let style = style.clone();
                let target = &target;
                let staging_dir = staging_dir.clone();
                let failed = &failed;
                async move {
                    if failed.load(Ordering::SeqCst) {
                        return Ok(None);
                    }
                    let job = async {
                        let blob_path = staging_dir.join(format!("blob-{}", desc.digest.hex()));
                        let mut downloaded = None;
                        let source = if store.has_blob(&desc.digest) {
                            store.blob_path(&desc.digest)
                        } else {
                            let bar = multi.add(ProgressBar::new(desc.size));
                            bar.set_style(style);
                            bar.set_prefix(desc.digest.short().to_string());
                            bar.set_message("downloading");
                            self.download_blob(target, repo, &desc, &blob_path, &bar)
                                .await?;
                            bar.finish_with_message(if prepare { "unpacking" } else { "done" });
                            downloaded = Some(blob_path.clone());
                            blob_path
                        };
                        let mut built = None;
                        if prepare && !store.layer_image_path(&diff_id).is_file() {
                            let out = staging_dir.join(format!("layer-{}.erofs", diff_id.hex()));
                            let diff = diff_id.clone();
                            let o = out.clone();
                            let size = tokio::task::spawn_blocking(move || {
                                crate::layer::build_layer_image(&source, &diff, &o)
                            })
                            .await
                            .map_err(|e| Error::BadLayer {
                                layer: diff_id.to_string(),
                                reason: format!("layer preparation failed: {e}"),
                            })??;
                            built = Some((diff_id.clone(), out, size));
                        }
                        Ok::<Done, Error>((desc.digest.clone(), downloaded, built))
                    };
                    let outcome = job.await;
                    if outcome.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    outcome.map(Some)
                }
            }))
            .buffer_unordered(self.opts.parallel.max(1))
            .collect()
            .await;
        let _ = multi.clear();
        let mut results = Vec::new();
        for outcome in outcomes {
            results.extend(outcome?);
        }

        let mut downloaded = Vec::new();
        for (digest, blob, built) in results {
            if let Some(p) = blob {
                staging.add_verified_blob(digest.clone(), p);
                downloaded.push(digest);
            }
            if let Some((diff, p, size)) = built {
                staging.add_layer_image(diff, p, size);
            }
        }
        staging.commit(store)?;
        let key = reference.to_string();
        let name = reference.name();
        let mut sources: Vec<(Digest, String)> = layers
            .iter()
            .map(|l| (l.digest.clone(), name.clone()))
            .collect();
        sources.push((config_blob.digest.clone(), name.clone()));
        store.set_refs(
            &[(
                key.clone(),
                RefEntry {
                    manifest: manifest_digest.clone(),
                    index: index_digest,
                },
            )],
            &sources,
        )?;
        let image = store.image_by_manifest(&manifest_digest, vec![key])?;
        Ok(PullReport {
            image,
            reference: reference.clone(),
            downloaded,
            digest: top_digest,
        })
    }

    async fn blob_exists(
        &self,
        target: &Target<'_>,
        repository: &str,
        digest: &Digest,
    ) -> Result<bool> {
        let url = format!(
            "{}/v2/{repository}/blobs/{digest}",
            self.base_url(target.registry)
        );
        let what = format!("blob {digest}");
        let resp = self
            .send(target, &what, &|c, a| with_auth(c.head(&url), a))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => self
                .check(target.registry, &what, resp)
                .await
                .map(|_| false),
        }
    }

    fn resolve_location(
        &self,
        registry: &str,
        resp: &reqwest::Response,
        what: &str,
    ) -> Result<reqwest::Url> {
        let loc = header_str(resp.headers(), LOCATION.as_str());
        let base = reqwest::Url::parse(&format!("{}/", self.base_url(registry))).map_err(|e| {
            Error::Malformed {
                what: what.to_string(),
                reason: e.to_string(),
            }
        })?;
        if loc.is_empty() {
            return Err(Error::Malformed {
                what: what.to_string(),
                reason: "upload answer without Location".into(),
            });
        }
        base.join(&loc).map_err(|e| Error::Malformed {
            what: what.to_string(),
            reason: format!("bad upload Location {loc:?}: {e}"),
        })
    }

    async fn push_blob(
        &self,
        store: &Store,
        reference: &Reference,
        desc: &Blob,
        mount_from: Option<String>,
        bar: &ProgressBar,
    ) -> Result<BlobPush> {
        let repo = reference.repository.as_str();
        let registry = reference.registry.as_str();
        let mut scopes = vec![format!("repository:{repo}:pull,push")];
        if let Some(from) = &mount_from {
            scopes.push(format!("repository:{from}:pull"));
        }
        let target = Target { registry, scopes };
        if self.blob_exists(&target, repo, &desc.digest).await? {
            return Ok(BlobPush::Exists);
        }
        let base = self.base_url(registry);
        let what = format!("upload of blob {} to {repo}", desc.digest);
        let start = match &mount_from {
            Some(from) => {
                let url = format!(
                    "{base}/v2/{repo}/blobs/uploads/?mount={}&from={from}",
                    desc.digest
                );
                let resp = self
                    .send(&target, &what, &|c, a| with_auth(c.post(&url), a))
                    .await?;
                if resp.status() == StatusCode::CREATED {
                    return Ok(BlobPush::Mounted(from.clone()));
                }
                resp
            }
            None => {
                let url = format!("{base}/v2/{repo}/blobs/uploads/");
                self.send(&target, &what, &|c, a| with_auth(c.post(&url), a))
                    .await?
            }
        };
        let start = self.check(registry, &what, start).await?;
        let mut url = self.resolve_location(registry, &start, &what)?;
        url.query_pairs_mut()
            .append_pair("digest", desc.digest.as_str());
        let path = store.blob_path(&desc.digest);
        // Streamed from the file (opened afresh for each attempt), never held in memory.
        let size = std::fs::metadata(&path).at(&path)?.len();
        bar.set_length(size);
        let body = || -> reqwest::Body {
            bar.set_position(0);
            match std::fs::File::open(&path) {
                Ok(f) => {
                    let bar = bar.clone();
                    let chunks = tokio_util::io::ReaderStream::with_capacity(
                        tokio::fs::File::from_std(f),
                        256 * 1024,
                    )
                    .inspect(move |c| {
                        if let Ok(c) = c {
                            bar.inc(c.len() as u64)
                        }
                    });
                    reqwest::Body::wrap_stream(chunks)
                }
                Err(e) => reqwest::Body::wrap_stream(stream::once(async move {
                    Err::<bytes::Bytes, std::io::Error>(e)
                })),
            }
        };
        let resp = self
            .send(&target, &what, &|c, a| {
                with_auth(
                    c.request(Method::PUT, url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(reqwest::header::CONTENT_LENGTH, size)
                        .body(body()),
                    a,
                )
            })
            .await?;
        self.check(registry, &what, resp).await?;
        Ok(BlobPush::Pushed)
    }

    /// Pushes a local image to `target` (its own reference when `None`): blobs the registry
    /// has are skipped, blobs known in another repository of the same registry are mounted,
    /// the rest uploaded; the manifest goes last.
    pub async fn push(
        &self,
        store: &Store,
        local: &str,
        target: Option<&Reference>,
    ) -> Result<PushReport> {
        let _writer = store.writer_lock()?;
        let image = store.resolve(local)?;
        let reference = match target {
            Some(t) => t.clone(),
            None => Reference::parse(local)?,
        };
        let manifest_bytes = store.read_blob(&image.manifest_digest)?;
        let repos = store.repositories()?;
        let name = reference.name();
        let multi = self.progress();
        let style = ProgressStyle::with_template(
            "{prefix:.bold} {msg:10} [{bar:30}] {bytes}/{total_bytes}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        let mut descs = layer_blobs(&image.manifest)?;
        descs.push(Blob::try_from(image.manifest.config())?);
        let mut seen = std::collections::BTreeSet::new();
        descs.retain(|d| seen.insert(d.digest.clone()));
        let prefix = format!("{}/", reference.registry);
        let outcomes: Vec<(Digest, BlobPush)> = stream::iter(descs.into_iter().map(|desc| {
            let mount_from = repos.sources.get(&desc.digest).and_then(|names| {
                names
                    .iter()
                    .filter(|n| **n != name)
                    .find_map(|n| n.strip_prefix(&prefix).map(str::to_string))
            });
            let multi = &multi;
            let style = style.clone();
            let reference = &reference;
            async move {
                let bar = multi.add(ProgressBar::new(desc.size));
                bar.set_style(style);
                bar.set_prefix(desc.digest.short().to_string());
                bar.set_message("pushing");
                let outcome = self
                    .push_blob(store, reference, &desc, mount_from, &bar)
                    .await?;
                bar.finish_with_message(match &outcome {
                    BlobPush::Exists => "exists",
                    BlobPush::Mounted(_) => "mounted",
                    BlobPush::Pushed => "pushed",
                });
                Ok::<_, Error>((desc.digest.clone(), outcome))
            }
        }))
        .buffered(self.opts.parallel.max(1))
        .try_collect()
        .await?;
        let _ = multi.clear();

        let repo = reference.repository.as_str();
        let target = Target {
            registry: &reference.registry,
            scopes: vec![format!("repository:{repo}:pull,push")],
        };
        let tag = reference.manifest_ref();
        let url = format!(
            "{}/v2/{repo}/manifests/{tag}",
            self.base_url(&reference.registry)
        );
        let what = format!("manifest {repo}:{tag}");
        let media_type = image.manifest_media_type.clone();
        let body = bytes::Bytes::from(manifest_bytes);
        let resp = self
            .send(&target, &what, &|c, a| {
                with_auth(
                    c.put(&url)
                        .header(CONTENT_TYPE, media_type.as_str())
                        .body(body.clone()),
                    a,
                )
            })
            .await?;
        let resp = self.check(&reference.registry, &what, resp).await?;
        let answered = header_str(resp.headers(), "docker-content-digest");
        if !answered.is_empty() && answered != image.manifest_digest.as_str() {
            return Err(Error::DigestMismatch {
                what: format!("pushed {what}"),
                expected: image.manifest_digest.to_string(),
                actual: answered,
            });
        }
        let mut sources: Vec<(Digest, String)> = outcomes
            .iter()
            .map(|(d, _)| (d.clone(), name.clone()))
            .collect();
        sources.push((image.manifest_digest.clone(), name.clone()));
        store.set_refs(&[], &sources)?;
        Ok(PushReport {
            target: reference,
            blobs: outcomes,
            manifest_digest: image.manifest_digest.clone(),
            manifest_size: body.len() as u64,
        })
    }

    /// Checks credentials against a registry (`GET /v2/`), without storing them.
    pub async fn check_login(&self, registry: &str, creds: &Credentials) -> Result<()> {
        self.explicit
            .lock()
            .map_err(|_| poisoned())?
            .insert(registry.to_string(), creds.clone());
        let url = format!("{}/v2/", self.base_url(registry));
        let target = Target {
            registry,
            scopes: vec![],
        };
        // Send the credentials up front for Basic registries; Bearer ones answer 401 and
        // the token flow uses them.
        let what = "login".to_string();
        let resp = self
            .send(&target, &what, &|c, a| with_auth(c.get(&url), a))
            .await?;
        self.check(registry, &what, resp).await?;
        Ok(())
    }
}

fn with_auth(req: reqwest::RequestBuilder, auth: Option<&str>) -> reqwest::RequestBuilder {
    match auth {
        Some(a) => req.header(AUTHORIZATION, a),
        None => req,
    }
}

/// Largest manifest or index accepted from a registry (what containerd allows too).
const MAX_MANIFEST: usize = 4 * 1024 * 1024;
/// Largest token-server answer accepted.
const MAX_TOKEN_ANSWER: usize = 1024 * 1024;
/// How much of an error page is read for its message.
const MAX_ERROR_PAGE: usize = 64 * 1024;

/// Reads at most `cap` bytes of `resp`'s body, and whether that was all of it. A longer
/// body is cut off as soon as it is seen to be (by its length, or as it arrives): nothing
/// past `cap` is held.
async fn read_up_to(mut resp: reqwest::Response, cap: usize) -> reqwest::Result<(Vec<u8>, bool)> {
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Ok((Vec::new(), false));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

fn header_str(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn poisoned() -> Error {
    Error::Malformed {
        what: "client state".into(),
        reason: "a lock was poisoned by a panic".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/alpine:pull,push");
        let c = parse_challenge(r#"Basic realm="basic-realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "basic-realm");
    }

    #[test]
    fn plain_http_only_for_local_or_asked() {
        let mut opts = ClientOptions {
            insecure_registries: vec!["reg.internal:5000".into()],
            ..ClientOptions::default()
        };
        opts.insecure = false;
        let c = Client::new(opts).unwrap();
        assert_eq!(c.base_url("localhost:5000"), "http://localhost:5000");
        assert_eq!(c.base_url("127.0.0.1:5001"), "http://127.0.0.1:5001");
        assert_eq!(c.base_url("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(c.base_url("reg.internal:5000"), "http://reg.internal:5000");
        assert_eq!(c.base_url("ghcr.io"), "https://ghcr.io");
        assert_eq!(c.base_url("docker.io"), "https://registry-1.docker.io");
        assert_eq!(
            c.base_url("localhost.evil.com"),
            "https://localhost.evil.com"
        );
    }

    #[test]
    fn registry_errors_are_summarised() {
        let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(detail_of(body), "MANIFEST_UNKNOWN: manifest unknown");
        assert_eq!(detail_of(""), "no details");
    }
}

//! `berth build`: a Dockerfile's stages into images, one step at a time, with a layer
//! cache that lasts across builds.
//!
//! The plan ([`plan`]) splits the Dockerfile at `FROM`, resolves the `ARG`s before the
//! first `FROM`, and keeps only the stages the target needs. Each step derives a new
//! image from the one before it ([`berth_image::derive`]): metadata steps change only
//! the config, `COPY` and `ADD` make their layer on the host ([`copy`]), and `RUN`
//! runs in a micro-VM and commits its changes ([`run`]). Every step's image is kept by
//! a `build-cache:` pin named after its cache key (the parent's key, the instruction
//! with its arguments resolved, and what it copies), so a step whose key is pinned is
//! not done again; `image prune` and `builder prune` drop the pins.

mod copy;
mod plan;
mod run;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_dockerfile::{lex, Form, Instruction, Kind};
use berth_image::{
    derive, Base, DeriveOptions, Keep, LocalImage, Platform, Reference, RunConfig, BUILD_CACHE_PIN,
};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::{blocking, Engine};
use plan::{Plan, Source};

/// What `berth build` (or the Docker API's `/build`) asks for.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// The build context: the directory `COPY` and `ADD` read from.
    pub context: PathBuf,
    /// Tags for the result (`-t`).
    pub tags: Vec<String>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build (`--target`); the last when `None`.
    pub target: Option<String>,
    /// Do every step again (`--no-cache`); the results still fill the cache.
    pub no_cache: bool,
    /// `--platform`: only the host's guest platform can run `RUN` steps.
    pub platform: Option<String>,
    /// `--label` entries for the result.
    pub labels: BTreeMap<String, String>,
}

/// What a build reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A step begins: `[stage index/total] text`; `cached` when its result was kept.
    Step {
        /// The stage's name, or `stage-N`.
        stage: String,
        /// The step's 1-based number in its stage (`FROM` is 1).
        index: usize,
        /// The steps of the stage.
        total: usize,
        /// The instruction as written.
        text: String,
        /// Its result comes from the cache.
        cached: bool,
    },
    /// Output of a `RUN` step.
    Output(Vec<u8>),
    /// The step that began last is done.
    Done(Duration),
    /// Something the user should know (an ignored directive, for one).
    Warning(String),
}

/// What a finished build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildReport {
    /// The image ID (`sha256:...`).
    pub image: String,
    /// The steps done (not counting `FROM`).
    pub steps: usize,
    /// Those of them that came from the cache.
    pub cached: usize,
    /// The micro-VMs booted for `RUN` steps.
    pub vms_booted: usize,
}

/// Where a stage stands: its image so far, its cache key and its scope.
struct State {
    /// The image so far; `None` for `FROM scratch` before its first step.
    image: Option<LocalImage>,
    platform: Platform,
    key: String,
    config: RunConfig,
    /// The stage's `ARG`s with their values (`None`: declared, no value).
    args: BTreeMap<String, Option<String>>,
    /// `CMD` was set in this stage (so `ENTRYPOINT` keeps it).
    cmd_set: bool,
    author: Option<String>,
}

impl State {
    /// A variable as docker's lexer sees it in this stage: `ENV` over `ARG`.
    fn var(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        let env = self.config.env.as_deref().unwrap_or_default();
        env.iter()
            .rev()
            .find_map(|e| e.strip_prefix(&prefix).map(String::from))
            .or_else(|| self.args.get(name).cloned().flatten())
    }

    /// The environment of a `RUN`: the image's, and the build arguments it lacks.
    fn run_env(&self) -> Vec<String> {
        let mut env = self.config.env.clone().unwrap_or_default();
        for (k, v) in &self.args {
            let prefix = format!("{k}=");
            if let Some(v) = v {
                if !env.iter().any(|e| e.starts_with(&prefix)) {
                    env.push(format!("{k}={v}"));
                }
            }
        }
        env
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .extra
            .get("Shell")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }
}

/// The cache key after `parent`: a digest of it and `parts`.
fn next_key(parent: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A failure at `line` of the Dockerfile.
fn at(line: usize, message: impl std::fmt::Display) -> Error {
    Error::Build(format!("Dockerfile line {line}: {message}"))
}

impl Engine {
    /// Builds `opts`'s Dockerfile; pulls base images with `client`; reports steps to
    /// `progress`. Tags the result only when every step succeeded.
    ///
    /// ^C (or SIGTERM) stops the build; the VM of its `RUN` steps goes with it.
    pub async fn build(
        &self,
        opts: &BuildOptions,
        client: &berth_image::Client,
        progress: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<BuildReport> {
        let mut vm = None;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let (result, graceful) = {
            let build = self.build_in(opts, client, progress, &mut vm);
            tokio::select! {
                r = build => (r, true),
                _ = tokio::signal::ctrl_c() => (Err(Error::Build("interrupted".into())), false),
                _ = term.recv() => (Err(Error::Build("terminated".into())), false),
            }
        };
        self.close_stage_vm(&mut vm, graceful).await;
        result
    }

    async fn build_in(
        &self,
        opts: &BuildOptions,
        client: &berth_image::Client,
        progress: &mut (dyn FnMut(BuildEvent) + Send),
        vm: &mut Option<run::StageVm>,
    ) -> Result<BuildReport> {
        let tags = opts
            .tags
            .iter()
            .map(|t| {
                Reference::parse(t).map_err(|e| {
                    Error::InvalidArgument(format!("invalid tag {t}: {e}: use NAME[:TAG]"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let host = Platform::host();
        if let Some(p) = &opts.platform {
            let wanted: Platform = p
                .parse()
                .map_err(|e| Error::InvalidArgument(format!("invalid --platform {p}: {e}")))?;
            if wanted.os != host.os || wanted.architecture != host.architecture {
                return Err(Error::InvalidArgument(format!(
                    "--platform {p}: berth builds for its guests' platform, {}/{}, only \
                     (RUN steps run in a micro-VM of this machine)",
                    host.os, host.architecture
                )));
            }
        }
        let dockerfile =
            berth_dockerfile::parse(&opts.dockerfile).map_err(|e| Error::Build(e.to_string()))?;
        if let Some(syntax) = &dockerfile.syntax {
            progress(BuildEvent::Warning(format!(
                "the syntax directive ({syntax}) is ignored: berth builds with its own \
                 frontend"
            )));
        }
        let plan = Plan::new(&dockerfile, &opts.build_args, opts.target.as_deref())?;
        let context = copy::Context::open(&opts.context)?;
        let mut report = BuildReport {
            image: String::new(),
            steps: 0,
            cached: 0,
            vms_booted: 0,
        };
        let mut built: BTreeMap<usize, LocalImage> = BTreeMap::new();
        let mut last = None;
        for &index in &plan.needed {
            let stage = &plan.stages[index];
            let name = stage.display_name(index);
            let total = stage.steps.len() + 1;
            progress(BuildEvent::Step {
                stage: name.clone(),
                index: 1,
                total,
                text: stage.from.text.clone(),
                cached: false,
            });
            let started = Instant::now();
            let mut state = match &stage.source {
                Source::Scratch => State {
                    image: None,
                    platform: host.clone(),
                    key: next_key("FROM scratch", &[&host.os, &host.architecture]),
                    config: RunConfig::default(),
                    args: BTreeMap::new(),
                    cmd_set: false,
                    author: None,
                },
                Source::Stage(j) => {
                    let image = built[j].clone();
                    self.state_from(image)
                }
                Source::Image(reference) => {
                    let image = berth_image::ensure_pulled(&self.images, client, reference)
                        .await
                        .map_err(|e| at(stage.from.line, format!("FROM {reference}: {e}")))?;
                    self.state_from(image)
                }
            };
            progress(BuildEvent::Done(started.elapsed()));
            for (k, step) in stage.steps.iter().enumerate() {
                let started = Instant::now();
                let cached = self
                    .step(
                        &mut state,
                        step,
                        &plan,
                        &built,
                        &context,
                        opts,
                        client,
                        &name,
                        (k + 2, total),
                        progress,
                        &mut report,
                        vm,
                    )
                    .await?;
                if let Some(cached) = cached {
                    report.steps += 1;
                    report.cached += usize::from(cached);
                }
                progress(BuildEvent::Done(started.elapsed()));
            }
            let image = match state.image.take() {
                Some(img) => img,
                None => self.keep_step(&state, None, "FROM scratch", None).await?,
            };
            built.insert(index, image.clone());
            last = Some((image, state));
        }
        let (mut image, mut state) =
            last.ok_or_else(|| Error::Build("no stage to build".into()))?;
        if !opts.labels.is_empty() {
            let mut config = state.config.clone();
            let labels = config.labels.get_or_insert_with(Default::default);
            labels.extend(opts.labels.clone());
            state.image = Some(image);
            let text = format!(
                "LABEL {}",
                serde_json::to_string(&opts.labels).unwrap_or_default()
            );
            self.config_step(&mut state, &text, config, opts.no_cache, &mut |_| {})
                .await?;
            image = state.image.clone().expect("a labelled image");
        }
        for tag in &tags {
            let (images, id, tag) = (self.images.clone(), image.id.to_string(), tag.to_string());
            blocking(move || Ok(images.tag(&id, &tag)?)).await?;
        }
        report.image = image.id.to_string();
        Ok(report)
    }

    fn state_from(&self, image: LocalImage) -> State {
        let platform = Platform {
            os: image.config.os.clone(),
            architecture: image.config.architecture.clone(),
            variant: image.config.variant.clone(),
        };
        State {
            key: next_key("FROM", &[image.id.as_str()]),
            config: image.config.config.clone().unwrap_or_default(),
            author: image.config.author.clone(),
            image: Some(image),
            platform,
            args: BTreeMap::new(),
            cmd_set: false,
        }
    }

    /// Does one step of a stage; returns whether its result came from the cache, or
    /// `None` for a step that makes no image (`ARG`).
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        state: &mut State,
        step: &Instruction,
        plan: &Plan,
        built: &BTreeMap<usize, LocalImage>,
        context: &copy::Context,
        opts: &BuildOptions,
        client: &berth_image::Client,
        stage: &str,
        (index, total): (usize, usize),
        progress: &mut (dyn FnMut(BuildEvent) + Send),
        report: &mut BuildReport,
        vm: &mut Option<run::StageVm>,
    ) -> Result<Option<bool>> {
        let line = step.line;
        let escape = plan.escape;
        let expand = |state: &State, word: &str| {
            lex::expand(word, &|n| state.var(n), escape).map_err(|e| at(line, e))
        };
        let words = |state: &State, word: &str| {
            lex::expand_words(word, &|n| state.var(n), escape).map_err(|e| at(line, e))
        };
        let begin = |progress: &mut (dyn FnMut(BuildEvent) + Send), cached| {
            progress(BuildEvent::Step {
                stage: stage.to_string(),
                index,
                total,
                text: step.text.clone(),
                cached,
            })
        };
        let mut config = state.config.clone();
        match &step.kind {
            Kind::From { .. } => return Err(at(line, "FROM inside a stage")),
            Kind::Arg(list) => {
                for (name, default) in list {
                    let value = match opts.build_args.get(name) {
                        Some(v) => Some(v.clone()),
                        None => match default {
                            Some(d) => Some(expand(state, d)?),
                            None => plan.meta_args.get(name).cloned().flatten(),
                        },
                    };
                    state.args.insert(name.clone(), value);
                }
                begin(progress, false);
                return Ok(None);
            }
            Kind::Env(pairs) => {
                // Every pair expands with the environment from before the instruction.
                let mut env = config.env.take().unwrap_or_default();
                for (k, v) in pairs {
                    let (k, v) = (expand(state, k)?, expand(state, v)?);
                    let prefix = format!("{k}=");
                    env.retain(|e| !e.starts_with(&prefix) && e != &k);
                    env.push(format!("{k}={v}"));
                }
                config.env = Some(env);
            }
            Kind::Label(pairs) => {
                let labels = config.labels.get_or_insert_with(Default::default);
                for (k, v) in pairs {
                    labels.insert(expand(state, k)?, expand(state, v)?);
                }
            }
            Kind::Workdir(path) => {
                let path = expand(state, path)?;
                let dir = plan::join(config.working_dir.as_deref().unwrap_or("/"), &path);
                config.working_dir = Some(dir.clone());
                let mut announce = |cached| begin(progress, cached);
                return self
                    .workdir_step(
                        state,
                        &step.text,
                        config,
                        &dir,
                        opts.no_cache,
                        &mut announce,
                    )
                    .await
                    .map(Some);
            }
            Kind::User(user) => config.user = Some(expand(state, user)?),
            Kind::Shell(shell) => {
                config
                    .extra
                    .insert("Shell".into(), serde_json::json!(shell));
            }
            Kind::Expose(ports) => {
                let exposed = config.exposed_ports.get_or_insert_with(Default::default);
                for word in ports {
                    for port in words(state, word)? {
                        let port = if port.contains('/') {
                            port.to_lowercase()
                        } else {
                            format!("{port}/tcp")
                        };
                        let number = port.split('/').next().unwrap_or_default();
                        if !number
                            .split('-')
                            .all(|n| n.parse::<u16>().is_ok_and(|n| n > 0))
                        {
                            return Err(at(line, format!("invalid port {port} in EXPOSE")));
                        }
                        exposed.insert(port, serde_json::json!({}));
                    }
                }
            }
            Kind::Volume(paths) => {
                let volumes = config.volumes.get_or_insert_with(Default::default);
                for p in paths {
                    let p = expand(state, p)?;
                    if p.is_empty() {
                        return Err(at(line, "VOLUME specified can not be an empty string"));
                    }
                    volumes.insert(p, serde_json::json!({}));
                }
            }
            Kind::StopSignal(signal) => {
                let signal = expand(state, signal)?;
                crate::ops::parse_signal(&signal).map_err(|e| at(line, e))?;
                config.stop_signal = Some(signal);
            }
            Kind::Healthcheck(check) => {
                let value = match check {
                    None => serde_json::json!({ "Test": ["NONE"] }),
                    Some(h) => {
                        let ns = |d: Option<Duration>| d.map(|d| d.as_nanos() as u64);
                        let mut v = serde_json::json!({ "Test": h.test });
                        let o = v.as_object_mut().expect("an object");
                        for (k, d) in [
                            ("Interval", ns(h.interval)),
                            ("Timeout", ns(h.timeout)),
                            ("StartPeriod", ns(h.start_period)),
                            ("StartInterval", ns(h.start_interval)),
                        ] {
                            if let Some(d) = d {
                                o.insert(k.into(), d.into());
                            }
                        }
                        if let Some(r) = h.retries {
                            o.insert("Retries".into(), r.into());
                        }
                        v
                    }
                };
                config.extra.insert("Healthcheck".into(), value);
            }
            Kind::Onbuild(trigger) => {
                let list = config
                    .extra
                    .entry("OnBuild")
                    .or_insert_with(|| serde_json::json!([]));
                if let Some(a) = list.as_array_mut() {
                    a.push(trigger.clone().into());
                }
            }
            Kind::Maintainer(name) => state.author = Some(expand(state, name)?),
            Kind::Cmd(form) => {
                config.cmd = Some(self.argv(state, form));
                state.cmd_set = true;
            }
            Kind::Entrypoint(form) => {
                config.entrypoint = Some(self.argv(state, form));
                // docker: an ENTRYPOINT drops a CMD that came from the base image.
                if !state.cmd_set {
                    config.cmd = None;
                }
            }
            Kind::Copy(args) | Kind::Add(args) => {
                let add = matches!(step.kind, Kind::Add(_));
                let resolved = copy::Resolved::new(args, add, &|w| expand(state, w))?;
                let from = match &resolved.from {
                    None => None,
                    Some(from) => Some(match plan.stage_index(from, line)? {
                        Some(j) => built
                            .get(&j)
                            .cloned()
                            .ok_or_else(|| at(line, format!("stage {from} is not built")))?,
                        None => berth_image::ensure_pulled(&self.images, client, from)
                            .await
                            .map_err(|e| at(line, format!("COPY --from={from}: {e}")))?,
                    }),
                };
                let workdir = config.working_dir.clone().unwrap_or_else(|| "/".into());
                let (images, base, ctx) =
                    (self.images.clone(), state.image.clone(), context.clone());
                let layer = blocking(move || {
                    copy::make_layer(
                        &images,
                        base.as_ref(),
                        from.as_ref(),
                        &ctx,
                        &resolved,
                        &workdir,
                    )
                    .map_err(|e| at(line, e))
                })
                .await?;
                let key = next_key(&state.key, &[&step.text, &layer.digest]);
                let cached = self.cached(state, &key, opts.no_cache).await?;
                begin(progress, cached);
                if !cached {
                    self.keep_layer(state, key, &step.text, layer.file).await?;
                }
                return Ok(Some(cached));
            }
            Kind::Run(form) => {
                let argv = self.argv(state, form);
                let env = state.run_env();
                let described =
                    serde_json::to_string(&(&argv, &env, &config.working_dir, &config.user))
                        .unwrap_or_default();
                let key = next_key(&state.key, &[&step.text, &described]);
                let cached = self.cached(state, &key, opts.no_cache).await?;
                begin(progress, cached);
                if cached {
                    return Ok(Some(true));
                }
                let base = state
                    .image
                    .clone()
                    .ok_or_else(|| at(line, "RUN needs a base image: FROM scratch has no shell"))?;
                let (layer, booted) = self
                    .run_step(vm, &base, argv, env, &config, progress)
                    .await
                    .map_err(|e| at(line, format!("{}: {}", step.text, e.message())))?;
                report.vms_booted += usize::from(booted);
                self.keep_layer(state, key, &step.text, layer).await?;
                if let (Some(v), Some(img)) = (vm.as_mut(), &state.image) {
                    v.stepped(img);
                }
                return Ok(Some(false));
            }
        }
        let mut announce = |cached| begin(progress, cached);
        self.config_step(state, &step.text, config, opts.no_cache, &mut announce)
            .await
            .map(Some)
    }

    /// `argv` of a `RUN`, `CMD` or `ENTRYPOINT`: the shell form through the stage's shell.
    fn argv(&self, state: &State, form: &Form) -> Vec<String> {
        match form {
            Form::Exec(v) => v.clone(),
            Form::Shell(line) => {
                let mut v = state.shell();
                v.push(line.clone());
                v
            }
        }
    }

    /// Takes the step under `key` from the cache, unless `--no-cache`.
    async fn cached(&self, state: &mut State, key: &str, no_cache: bool) -> Result<bool> {
        state.key = key.to_string();
        if no_cache {
            return Ok(false);
        }
        let (images, pin) = (self.images.clone(), format!("{BUILD_CACHE_PIN}{key}"));
        match blocking(move || Ok(images.pinned(&pin)?)).await? {
            Some(img) => {
                state.config = img.config.config.clone().unwrap_or_default();
                state.image = Some(img);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// A step that changes only the config; `announce` hears whether it is cached
    /// before the work.
    async fn config_step(
        &self,
        state: &mut State,
        text: &str,
        config: RunConfig,
        no_cache: bool,
        announce: &mut (dyn FnMut(bool) + Send),
    ) -> Result<bool> {
        let described = serde_json::to_string(&config).unwrap_or_default();
        let author = state.author.clone().unwrap_or_default();
        let key = next_key(&state.key, &[text, &described, &author]);
        let cached = self.cached(state, &key, no_cache).await?;
        announce(cached);
        if !cached {
            state.config = config.clone();
            let img = self.keep_step(state, None, text, Some(config)).await?;
            state.image = Some(img);
        }
        Ok(cached)
    }

    /// `WORKDIR`: the config, and a layer with the directory when the image lacks it.
    async fn workdir_step(
        &self,
        state: &mut State,
        text: &str,
        config: RunConfig,
        dir: &str,
        no_cache: bool,
        announce: &mut (dyn FnMut(bool) + Send),
    ) -> Result<bool> {
        let (images, base, d) = (self.images.clone(), state.image.clone(), dir.to_string());
        let layer = blocking(move || copy::dir_layer(&images, base.as_ref(), &d)).await?;
        match layer {
            None => {
                self.config_step(state, text, config, no_cache, announce)
                    .await
            }
            Some(layer) => {
                let key = next_key(&state.key, &[text, &layer.digest]);
                let cached = self.cached(state, &key, no_cache).await?;
                announce(cached);
                if !cached {
                    state.config = config;
                    self.keep_layer(state, key, text, layer.file).await?;
                }
                Ok(cached)
            }
        }
    }

    /// Derives the step's image with `layer` and the stage's config, pinned as `key`.
    async fn keep_layer(
        &self,
        state: &mut State,
        key: String,
        text: &str,
        layer: copy::LayerFile,
    ) -> Result<()> {
        state.key = key;
        let config = state.config.clone();
        let img = self
            .keep_step(state, Some(layer), text, Some(config))
            .await?;
        state.image = Some(img);
        Ok(())
    }

    async fn keep_step(
        &self,
        state: &State,
        layer: Option<copy::LayerFile>,
        text: &str,
        config: Option<RunConfig>,
    ) -> Result<LocalImage> {
        let images = self.images.clone();
        let base = state.image.clone();
        let platform = state.platform.clone();
        let opts = DeriveOptions {
            created_by: text.to_string(),
            author: state.author.clone(),
            comment: None,
            config,
            keep: Keep::Pin(format!("{BUILD_CACHE_PIN}{}", state.key)),
            prepare: false,
        };
        blocking(move || {
            let base = match &base {
                Some(img) => Base::Image(img),
                None => Base::Scratch(&platform),
            };
            let mut file = layer.map(|l| l.into_reader()).transpose()?;
            let reader = file.as_mut().map(|f| f as &mut dyn std::io::Read);
            Ok(derive(&images, base, reader, &opts)?)
        })
        .await
    }

    /// Drops the build cache (`builder prune`): returns the steps dropped and the bytes
    /// freed.
    pub async fn prune_build_cache(&self) -> Result<(usize, u64)> {
        let images = self.images.clone();
        blocking(move || {
            let (n, report) = images.unpin_prefix(BUILD_CACHE_PIN)?;
            Ok((n, report.bytes_freed))
        })
        .await
    }
}

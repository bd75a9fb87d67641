//! The Docker API's [`Backend`] over berth's engine, so that `docker`, docker-compose
//! and the Docker SDKs drive the very containers the `berth` CLI drives: both front
//! doors call [`berth_engine::Engine`], and `berth ps` lists what `docker run` started.
//!
//! This crate only translates: docker's plain request data into engine options (its
//! binds, mounts and tmpfs into berth's mounts with berth's own parsers), engine
//! records and volumes into docker's plain response data, engine errors into
//! [`BackendError`] kinds. What docker keeps in the daemon's memory (attachments waiting for a start,
//! exec instances, the event feed) lives in [`BerthBackend`].
//!
//! Unix hosts only: every call drives the engine's container runtime, which is Unix-only
//! (see `berth_engine`), and the API is served on a Unix socket.

#![cfg(unix)]

mod containers;
mod events;
mod execs;
mod images;
mod mounts;
pub mod networks;
mod streams;
mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use berth_docker_api::{
    AttachOptions, Backend, BackendError, ByteStream, ContainerDetails, ContainerSummary,
    CreateConfig, Created, Event, ExecConfig, ExecDetails, HistoryEntry, ImageDetails,
    ImageSummary, LogOptions, LogRecord, NetworkInfo, PathStat, ProgressSink, RegistryAuth,
    RemovedImage, StatsSample, Streams, StreamsFuture, SystemInfo, TopResult, VersionInfo,
    VolumeInfo, VolumePrune, WaitCondition, WaitFuture,
};
use berth_engine::{Engine, ErrorKind};
use bytes::Bytes;
use futures_util::stream::BoxStream;

/// The Docker API's backend: the engine, plus what docker keeps in daemon memory.
#[derive(Debug)]
pub struct BerthBackend {
    engine: Arc<Engine>,
    attaches: streams::Attachments,
    execs: execs::Execs,
    events: events::Feed,
}

impl BerthBackend {
    /// A backend over `engine`; starts the event feed (it watches the container store,
    /// so containers the CLI starts show up too).
    pub fn new(engine: Engine) -> Arc<Self> {
        let engine = Arc::new(engine);
        Arc::new(Self {
            events: events::Feed::start(engine.clone()),
            engine,
            attaches: Default::default(),
            execs: Default::default(),
        })
    }
}

/// An engine error as the API reports it; the message is the whole chain.
pub(crate) fn api_error(e: berth_engine::Error) -> BackendError {
    let message = e.message();
    match e.kind() {
        ErrorKind::NotFound => BackendError::NotFound(message),
        ErrorKind::Conflict => BackendError::Conflict(message),
        ErrorKind::InvalidArgument => BackendError::InvalidArgument(message),
        ErrorKind::Internal => BackendError::Other(message),
    }
}

/// An image-store error as the API reports it.
pub(crate) fn image_error(e: berth_image::Error) -> BackendError {
    api_error(e.into())
}

/// Runs blocking work (images, volumes) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::Other(format!("a background task failed: {e}")))?
}

#[async_trait]
impl Backend for BerthBackend {
    fn version(&self) -> VersionInfo {
        containers::version()
    }

    async fn info(&self) -> Result<SystemInfo, BackendError> {
        containers::info(&self.engine).await
    }

    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>, BackendError> {
        containers::list(&self.engine, all)
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerDetails, BackendError> {
        containers::inspect(&self.engine, id, self.execs.ids_of(&self.engine, id))
    }

    async fn create_container(
        &self,
        name: Option<String>,
        cfg: CreateConfig,
    ) -> Result<Created, BackendError> {
        containers::create(&self.engine, name, cfg).await
    }

    async fn start_container(&self, id: &str) -> Result<(), BackendError> {
        streams::start(&self.engine, &self.attaches, id).await
    }

    async fn attach_container(
        &self,
        id: &str,
        opts: AttachOptions,
    ) -> Result<StreamsFuture, BackendError> {
        streams::attach(&self.engine, &self.attaches, id, opts).await
    }

    async fn wait_container(
        &self,
        id: &str,
        condition: WaitCondition,
    ) -> Result<WaitFuture, BackendError> {
        containers::wait(&self.engine, id, condition)
    }

    async fn stop_container(
        &self,
        id: &str,
        timeout_secs: Option<i64>,
        signal: Option<String>,
    ) -> Result<(), BackendError> {
        containers::stop(&self.engine, id, timeout_secs, signal).await
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<(), BackendError> {
        let sig = berth_engine::parse_signal(signal).map_err(api_error)?;
        self.engine.kill(id, sig).await.map_err(api_error)
    }

    async fn restart_container(
        &self,
        id: &str,
        timeout_secs: Option<i64>,
    ) -> Result<(), BackendError> {
        match containers::stop(&self.engine, id, timeout_secs, None).await {
            Ok(()) | Err(BackendError::NotModified) => {}
            Err(e) => return Err(e),
        }
        streams::start(&self.engine, &self.attaches, id).await
    }

    async fn remove_container(
        &self,
        id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<(), BackendError> {
        self.engine
            .remove(id, force, volumes)
            .await
            .map_err(api_error)
    }

    async fn resize_container_tty(
        &self,
        id: &str,
        rows: u16,
        cols: u16,
    ) -> Result<(), BackendError> {
        self.engine
            .resize(id, None, rows, cols)
            .await
            .map_err(api_error)
    }

    async fn logs(
        &self,
        id: &str,
        opts: LogOptions,
    ) -> Result<BoxStream<'static, Result<LogRecord, BackendError>>, BackendError> {
        containers::logs(&self.engine, id, opts)
    }

    async fn top(&self, id: &str, _ps_args: Option<String>) -> Result<TopResult, BackendError> {
        containers::top(&self.engine, id).await
    }

    async fn stats(&self, id: &str) -> Result<StatsSample, BackendError> {
        containers::stats(&self.engine, id).await
    }

    async fn exec_create(&self, id: &str, cfg: ExecConfig) -> Result<String, BackendError> {
        self.execs.create(&self.engine, id, cfg).await
    }

    async fn exec_start(
        &self,
        exec_id: &str,
        detach: bool,
        tty: bool,
    ) -> Result<Option<Streams>, BackendError> {
        self.execs.start(exec_id, detach, tty).await
    }

    async fn exec_inspect(&self, exec_id: &str) -> Result<ExecDetails, BackendError> {
        self.execs.inspect(exec_id).await
    }

    async fn exec_resize(&self, exec_id: &str, rows: u16, cols: u16) -> Result<(), BackendError> {
        self.execs.resize(&self.engine, exec_id, rows, cols).await
    }

    async fn archive_stat(&self, id: &str, path: &str) -> Result<PathStat, BackendError> {
        containers::archive_get(&self.engine, id, path)
            .await
            .map(|(stat, _)| stat)
    }

    async fn archive_get(
        &self,
        id: &str,
        path: &str,
    ) -> Result<(PathStat, BoxStream<'static, Result<Bytes, BackendError>>), BackendError> {
        let (stat, tar) = containers::archive_get(&self.engine, id, path).await?;
        let stream = futures_util::stream::once(async move { Ok(Bytes::from(tar)) });
        Ok((stat, Box::pin(stream)))
    }

    async fn archive_put(&self, id: &str, path: &str, tar: ByteStream) -> Result<(), BackendError> {
        containers::archive_put(&self.engine, id, path, tar).await
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>, BackendError> {
        images::list(&self.engine).await
    }

    async fn inspect_image(&self, name: &str) -> Result<ImageDetails, BackendError> {
        images::inspect(&self.engine, name).await
    }

    async fn pull_image(
        &self,
        reference: &str,
        _auth: Option<RegistryAuth>,
        progress: ProgressSink,
    ) -> Result<(), BackendError> {
        images::pull(&self.engine, reference, &progress).await
    }

    async fn push_image(
        &self,
        reference: &str,
        _auth: Option<RegistryAuth>,
        progress: ProgressSink,
    ) -> Result<(), BackendError> {
        images::push(&self.engine, reference, &progress).await
    }

    async fn tag_image(&self, source: &str, repo: &str, tag: &str) -> Result<(), BackendError> {
        images::tag(&self.engine, source, repo, tag).await
    }

    async fn remove_image(
        &self,
        name: &str,
        force: bool,
    ) -> Result<Vec<RemovedImage>, BackendError> {
        images::remove(&self.engine, name, force).await
    }

    async fn image_history(&self, name: &str) -> Result<Vec<HistoryEntry>, BackendError> {
        images::history(&self.engine, name).await
    }

    async fn save_images(
        &self,
        names: Vec<String>,
    ) -> Result<BoxStream<'static, Result<Bytes, BackendError>>, BackendError> {
        images::save(&self.engine, names).await
    }

    async fn load_images(&self, tar: ByteStream) -> Result<Vec<String>, BackendError> {
        images::load(&self.engine, tar).await
    }

    async fn events(&self) -> Result<BoxStream<'static, Event>, BackendError> {
        Ok(self.events.subscribe())
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>, BackendError> {
        volumes::list(&self.engine).await
    }

    async fn create_volume(
        &self,
        name: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeInfo, BackendError> {
        volumes::create(&self.engine, name, labels).await
    }

    async fn inspect_volume(&self, name: &str) -> Result<VolumeInfo, BackendError> {
        volumes::inspect(&self.engine, name).await
    }

    async fn remove_volume(&self, name: &str, force: bool) -> Result<(), BackendError> {
        volumes::remove(&self.engine, name, force).await
    }

    async fn prune_volumes(&self, all: bool) -> Result<VolumePrune, BackendError> {
        volumes::prune(&self.engine, all).await
    }

    async fn list_networks(&self) -> Result<Vec<NetworkInfo>, BackendError> {
        networks::list(&self.engine).await
    }

    async fn create_network(
        &self,
        name: String,
        subnet: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<NetworkInfo, BackendError> {
        networks::create(&self.engine, name, subnet, labels).await
    }

    async fn inspect_network(&self, key: &str) -> Result<NetworkInfo, BackendError> {
        networks::inspect(&self.engine, key).await
    }

    async fn remove_network(&self, key: &str) -> Result<(), BackendError> {
        networks::remove(&self.engine, key).await
    }

    async fn prune_networks(&self) -> Result<Vec<String>, BackendError> {
        networks::prune(&self.engine).await
    }

    async fn connect_network(
        &self,
        key: &str,
        container: &str,
        aliases: Vec<String>,
    ) -> Result<(), BackendError> {
        networks::connect(&self.engine, key, container, Some(aliases)).await
    }

    async fn disconnect_network(&self, key: &str, container: &str) -> Result<(), BackendError> {
        networks::connect(&self.engine, key, container, None).await
    }
}

//! `RUN`: the command in a micro-VM, its output reported as it comes, and its changes
//! read back as the step's layer. One VM serves a stage's consecutive `RUN` steps: booted
//! from the image before the first, it keeps each finished step's upper directory on its
//! scratch disk and stacks those as the next step's layers (a container per step, each
//! on [`Source::DiskDir`] folders), so only the first step of a run of them boots. A step
//! whose layers the VM does not hold (a `COPY` came between, or another stage) boots a
//! new one. The VM and its container record go when the build ends, fails or is
//! interrupted ([`Engine::close_stage_vm`]).

use std::collections::BTreeMap;

use berth_containers::ContainerRecord;
use berth_image::{LocalImage, RunConfig};
use berth_protocol::{ProcessRef, Source, StreamTarget, FEATURE_DISK_DIRS};
use tokio::io::AsyncReadExt;

use super::copy::LayerFile;
use super::BuildEvent;
use crate::error::{Context, Error, Result};
use crate::lifecycle::{Booted, Purpose};
use crate::ops::ProcessStreams;
use crate::spec::{CreateOptions, SCRATCH_SERIAL};
use crate::{vm, Engine};

/// The label on a build's step VM container.
pub const BUILD_LABEL: &str = "berth.build";

/// How much of a failed command's output its error repeats.
const ERROR_OUTPUT_BYTES: usize = 4096;

/// Where step `n`'s scratch space (its upper and work directories) is on the VM's
/// scratch disk.
fn step_dir(n: usize) -> String {
    format!("build-steps/{n}")
}

/// The micro-VM of a run of `RUN` steps.
pub(super) struct StageVm {
    /// The container record that owns the VM (its label is [`BUILD_LABEL`]).
    record: ContainerRecord,
    /// The VM once it is up.
    booted: Option<Booted>,
    /// Steps finished in the VM: their upper directories are its top layers.
    steps: usize,
    /// The layers that the VM's image and finished steps make up, by digest. Config
    /// steps (`ENV`, `USER`...) leave them as they are, so the next `RUN` stays here.
    layers: Vec<String>,
}

impl StageVm {
    /// Records that the last step made `image`, the base of the next.
    pub(super) fn stepped(&mut self, image: &LocalImage) {
        self.layers = layer_digests(image);
    }
}

/// An image's layers, by digest, lowest first.
fn layer_digests(image: &LocalImage) -> Vec<String> {
    image
        .manifest
        .layers()
        .iter()
        .map(|l| l.digest().to_string())
        .collect()
}

impl Engine {
    /// Runs `argv` on `base` with `env` and the config's user and working directory, in
    /// `vm` when it holds `base`, else in a VM booted for it (kept in `vm`); returns its
    /// changes as a layer tar, and whether it booted a VM.
    pub(super) async fn run_step(
        &self,
        vm: &mut Option<StageVm>,
        base: &LocalImage,
        argv: Vec<String>,
        env: Vec<String>,
        config: &RunConfig,
        progress: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<(LayerFile, bool)> {
        if vm.as_ref().is_some_and(|v| v.layers != layer_digests(base)) {
            self.close_stage_vm(vm, true).await;
        }
        let booted_now = vm.is_none();
        if booted_now {
            self.open_stage_vm(vm, base).await?;
        }
        let v = vm
            .as_mut()
            .ok_or_else(|| Error::Vm("the step VM is gone".into()))?;
        match self.step_in_vm(v, argv, env, config, progress).await {
            Ok(layer) => Ok((layer, booted_now)),
            Err(e) => {
                self.close_stage_vm(vm, true).await;
                Err(e)
            }
        }
    }

    /// Boots a VM from `base` with no container yet. `vm` holds its record from the
    /// start, so that an interrupted boot is cleaned up as well.
    async fn open_stage_vm(&self, vm: &mut Option<StageVm>, base: &LocalImage) -> Result<()> {
        let record = self
            .create(CreateOptions {
                image: base.id.to_string(),
                entrypoint: Some(Vec::new()),
                command: vec!["true".into()],
                cpus: 1.0,
                labels: BTreeMap::from([(BUILD_LABEL.to_string(), "step".to_string())]),
                ..CreateOptions::default()
            })
            .await?;
        let v = vm.insert(StageVm {
            record: record.clone(),
            booted: None,
            steps: 0,
            layers: layer_digests(base),
        });
        let booted = self.boot_for(&record, None, Purpose::Build).await?;
        let features = booted.client.ping().await?.features;
        v.booted = Some(booted);
        if !features.iter().any(|f| f == FEATURE_DISK_DIRS) {
            return Err(Error::Vm(
                "the agent in the initramfs cannot keep build steps on its scratch disk: \
                 rebuild it with scripts/build-initramfs.sh"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Shuts the VM of `vm` down (kills it unless `graceful`) and removes its record.
    pub(super) async fn close_stage_vm(&self, vm: &mut Option<StageVm>, graceful: bool) {
        let Some(v) = vm.take() else { return };
        if let (Some(b), true) = (&v.booted, graceful) {
            vm::shutdown(Some(&b.client), Some(b.vmm)).await;
        }
        // Off by now unless the shutdown failed or was skipped: see to it.
        if let Ok(current) = self.store.resolve(&v.record.id) {
            if let Some(vmm) = current.state.vmm {
                vm::kill_vmm(vmm).await;
            }
        }
        let _ = self.finish(&v.record, Some(0), None);
        if let Err(e) = self.remove(&v.record.id, true, true).await {
            tracing::warn!("cannot remove the build container {}: {e}", v.record.name);
        }
    }

    /// One step as a container of `v`'s VM on the VM's layers and finished steps.
    async fn step_in_vm(
        &self,
        v: &mut StageVm,
        argv: Vec<String>,
        env: Vec<String>,
        config: &RunConfig,
        progress: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<LayerFile> {
        let booted = v
            .booted
            .as_ref()
            .ok_or_else(|| Error::Vm("the step VM did not boot".into()))?;
        let mut step = v.record.clone();
        step.id = format!("{}-step{}", v.record.id, v.steps);
        step.spec.args = argv;
        step.spec.env = env;
        step.spec.workdir = config.working_dir.clone().unwrap_or_default();
        step.spec.user = config.user.clone().unwrap_or_default();
        let networked = crate::net::networked(&step);
        let mut req = crate::spec::create_request(&step, &booted.layers, networked)?;
        let disk_dir = |dir: String| Source::DiskDir {
            serial: SCRATCH_SERIAL.into(),
            fstype: Some("ext4".into()),
            dir,
        };
        req.layers
            .extend((0..v.steps).map(|n| disk_dir(format!("{}/upper", step_dir(n)))));
        req.scratch = Some(disk_dir(step_dir(v.steps)));
        booted
            .client
            .create(req)
            .await
            .context("create the step's container")?;
        let outcome = run_and_commit(booted, &step.id, progress).await;
        // The step's upper directory stays on the scratch disk; only the container goes.
        let deleted = booted.client.delete(&step.id, true).await;
        let layer = outcome?;
        deleted.context("remove the step's container")?;
        v.steps += 1;
        Ok(layer)
    }
}

/// Starts container `id`'s command, reports its output, and reads its changes back once
/// it exits 0.
async fn run_and_commit(
    booted: &Booted,
    id: &str,
    progress: &mut (dyn FnMut(BuildEvent) + Send),
) -> Result<LayerFile> {
    let init = ProcessRef::init(id.to_string());
    let streams = ProcessStreams::open(&booted.files, &init, false, false).await?;
    booted.client.start(init.clone()).await?;
    let tail = forward_output(streams, progress).await;
    let code = booted.client.wait(init).await?;
    if code != 0 {
        let output = String::from_utf8_lossy(&tail);
        let output = output.trim_end();
        return Err(Error::Build(if output.is_empty() {
            format!("the command exited with code {code}")
        } else {
            format!("the command exited with code {code}; its last output:\n{output}")
        }));
    }
    let target = StreamTarget::Commit {
        container: id.to_string(),
    };
    let mut stream = vm::open_stream(&booted.files, target).await?;
    let (file, std_file) = LayerFile::create()?;
    let mut out = tokio::fs::File::from_std(std_file);
    // The agent's commit stream: chunk frames of tar data, then the end.
    berth_protocol::chunk::receive_all(&mut stream, &mut out)
        .await
        .map_err(|e| match e {
            Ok(wire) => Error::Wire(wire).context("read the changes of the step"),
            Err(frame) => Error::Vm(format!("read the changes of the step: {frame}")),
        })?;
    tokio::io::AsyncWriteExt::flush(&mut out).await?;
    Ok(file)
}

/// Reports stdout and stderr until both end; returns the last of the output.
async fn forward_output(
    streams: ProcessStreams,
    progress: &mut (dyn FnMut(BuildEvent) + Send),
) -> Vec<u8> {
    let mut out = streams.stdout;
    let mut err = streams.stderr;
    let (mut out_open, mut err_open) = (true, err.is_some());
    let mut tail = Vec::new();
    let (mut a, mut b) = (vec![0u8; 16 << 10], vec![0u8; 16 << 10]);
    while out_open || err_open {
        let got = tokio::select! {
            r = out.read(&mut a), if out_open => match r {
                Ok(0) | Err(_) => { out_open = false; None }
                Ok(n) => Some(a[..n].to_vec()),
            },
            r = async { err.as_mut().expect("open").read(&mut b).await }, if err_open => match r {
                Ok(0) | Err(_) => { err_open = false; None }
                Ok(n) => Some(b[..n].to_vec()),
            },
        };
        if let Some(data) = got {
            tail.extend_from_slice(&data);
            if tail.len() > ERROR_OUTPUT_BYTES {
                tail.drain(..tail.len() - ERROR_OUTPUT_BYTES);
            }
            progress(BuildEvent::Output(data));
        }
    }
    tail
}

//! `RUN`: the command in a micro-VM booted from the step's image, its output reported
//! as it comes, and its changes read back as the step's layer. The VM and its
//! container are gone afterwards, also when the command fails or berth is interrupted.

use std::collections::BTreeMap;

use berth_image::{LocalImage, RunConfig};
use berth_protocol::{ProcessRef, StreamTarget};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

use super::copy::LayerFile;
use super::BuildEvent;
use crate::error::{Error, Result};
use crate::ops::ProcessStreams;
use crate::spec::CreateOptions;
use crate::{vm, Engine};

/// The label on a build step's container.
pub const BUILD_LABEL: &str = "berth.build";

/// How much of a failed command's output its error repeats.
const ERROR_OUTPUT_BYTES: usize = 4096;

impl Engine {
    /// Runs `argv` on `base` with `env` and the config's user and working directory;
    /// returns its changes as a layer tar.
    pub(super) async fn run_step(
        &self,
        base: &LocalImage,
        argv: Vec<String>,
        env: Vec<String>,
        config: &RunConfig,
        progress: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<LayerFile> {
        let record = self
            .create(CreateOptions {
                image: base.id.to_string(),
                entrypoint: Some(Vec::new()),
                command: argv,
                env,
                workdir: config.working_dir.clone(),
                user: config.user.clone(),
                cpus: 1.0,
                labels: BTreeMap::from([(BUILD_LABEL.to_string(), "step".to_string())]),
                ..CreateOptions::default()
            })
            .await?;
        let mut term = signal(SignalKind::terminate())?;
        let result = tokio::select! {
            r = self.run_in_vm(&record, progress) => r,
            _ = tokio::signal::ctrl_c() => Err(Error::Build("interrupted".into())),
            _ = term.recv() => Err(Error::Build("terminated".into())),
        };
        // The VM is off (or killed) by now unless the select dropped the run: see to it.
        if let Ok(current) = self.store.resolve(&record.id) {
            if let Some(vmm) = current.state.vmm {
                vm::kill_vmm(vmm).await;
            }
        }
        if let Err(e) = self.remove(&record.id, true, true).await {
            tracing::warn!(
                "cannot remove the build step container {}: {e}",
                record.name
            );
        }
        result
    }

    async fn run_in_vm(
        &self,
        record: &berth_containers::ContainerRecord,
        progress: &mut (dyn FnMut(BuildEvent) + Send),
    ) -> Result<LayerFile> {
        let booted = self.boot(record, None).await?;
        let init = ProcessRef::init(record.id.clone());
        let outcome = async {
            let streams = ProcessStreams::open(&booted.files, &init, false, false).await?;
            booted.client.start(init.clone()).await?;
            let tail = forward_output(streams, progress).await;
            let code = booted.client.wait(init.clone()).await?;
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
                container: record.id.clone(),
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
            Ok((file, code))
        }
        .await;
        vm::shutdown(Some(&booted.client), Some(booted.vmm)).await;
        match outcome {
            Ok((file, code)) => {
                self.finish(record, Some(code), None)?;
                Ok(file)
            }
            Err(e) => {
                let _ = self.finish(record, None, Some(e.message()));
                Err(e)
            }
        }
    }
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

//! `run`, `create`, `start` and the hidden monitor: flags become engine calls; a
//! foreground container's stdio is attached to this terminal.

use anyhow::{bail, Result};
use berth_engine::logfile::LogWriter;
use berth_engine::vm;
use berth_engine::{Booted, ContainerRecord, Engine, ProcessStreams, Status, Timings};
use berth_image::ClientOptions;
use berth_protocol::{ClientError, ProcessRef};

use super::stdio;
use super::{create_options, CreateArgs, RunArgs};

/// Makes sure `image` is in the local store, pulling it (with a note, as docker does)
/// when it is missing.
pub async fn ensure_image(engine: &Engine, image: &str) -> Result<()> {
    let store = engine.images();
    match store.resolve(image) {
        Ok(_) => Ok(()),
        Err(berth_image::Error::ImageNotFound { .. }) => {
            eprintln!("Unable to find image '{image}' locally");
            let client = berth_image::Client::new(ClientOptions::default())?;
            berth_image::ensure_pulled(store, &client, image).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates the container `args` describe, pulling its image when needed.
async fn create_record(engine: &Engine, args: &CreateArgs) -> Result<ContainerRecord> {
    let opts = create_options(args)?;
    ensure_image(engine, &opts.image).await?;
    Ok(engine.create(opts).await?)
}

/// `berth create`.
pub async fn create(args: CreateArgs) -> Result<i32> {
    let engine = Engine::open()?;
    let record = create_record(&engine, &args).await?;
    println!("{}", record.id);
    Ok(0)
}

/// `berth run`.
pub async fn run(args: RunArgs) -> Result<i32> {
    let engine = Engine::open()?;
    let mut timings = Timings::default();
    let record = create_record(&engine, &args.create).await?;
    if args.detach {
        engine.start(&record.id, None).await?;
        println!("{}", record.id);
        return Ok(0);
    }
    let booted = engine.boot(&record, Some(&mut timings)).await?;
    let code = foreground(
        &engine,
        &record,
        booted,
        record.spec.interactive,
        &mut timings,
    )
    .await;
    if args.timings {
        let (phases, total) = timings.phases();
        for (phase, d) in phases {
            eprintln!("timing: {phase:<18} {:>8.1} ms", d.as_secs_f64() * 1e3);
        }
        eprintln!(
            "timing: {:<18} {:>8.1} ms",
            "total",
            total.as_secs_f64() * 1e3
        );
    }
    code
}

/// Runs a booted container's process attached to this terminal, powers its VM off and
/// records the end: `run` without `-d`, and `start -a`.
async fn foreground(
    engine: &Engine,
    record: &ContainerRecord,
    booted: Booted,
    interactive: bool,
    timings: &mut Timings,
) -> Result<i32> {
    // Should this process die, the container still ends as it would have: logged,
    // recorded, its VM powered off and, with --rm, removed.
    if let Err(e) = engine.spawn_standby_monitor(record, std::process::id()) {
        tracing::warn!("no standby monitor for {}: {}", record.name, e.message());
    }
    let log = LogWriter::open(&booted.files.logs())
        .map_err(|e| berth_engine::Error::io("open", booted.files.logs(), e))?;
    let init = ProcessRef::init(record.id.clone());
    let mode = stdio::Mode {
        tty: record.spec.tty,
        interactive: interactive && record.spec.interactive,
    };
    let outcome = async {
        let streams =
            ProcessStreams::open(&booted.files, &init, mode.tty, mode.interactive).await?;
        stdio::attach(streams, &booted.client, init.clone(), mode, true, Some(log)).await
    }
    .await;
    timings.mark("container ran");
    vm::shutdown(Some(&booted.client), Some(booted.vmm)).await;
    timings.mark("VM powered off");
    match outcome {
        Ok(code) => {
            engine.finish(record, Some(code), None)?;
            Ok(code)
        }
        Err(e) => {
            let crashed = !booted.vmm.is_alive();
            let closed = e.chain().any(|c| {
                matches!(c.downcast_ref::<ClientError>(), Some(ClientError::Closed))
                    || matches!(
                        c.downcast_ref::<berth_engine::Error>(),
                        Some(berth_engine::Error::Agent(ClientError::Closed))
                    )
            });
            let e = if crashed || closed {
                e.context(format!(
                    "the micro-VM of container {} stopped unexpectedly{}",
                    record.name,
                    booted.files.last_words()
                ))
            } else {
                e
            };
            engine.finish(record, None, Some(berth_engine::chain_message(e.as_ref())))?;
            Err(e)
        }
    }
}

/// `berth start -a [-i]`: starts one container attached to this terminal; its exit code
/// is berth's.
pub async fn start_attached(name: &str, interactive: bool) -> Result<i32> {
    let engine = Engine::open()?;
    let record = engine.container(name)?;
    if record.status() == Status::Running {
        bail!(
            "container {} is already running: use `berth logs -f {}` to follow it",
            record.name,
            record.name
        );
    }
    let mut timings = Timings::default();
    let booted = engine.boot(&record, None).await?;
    foreground(&engine, &record, booted, interactive, &mut timings).await
}

/// `berth start`: boots each stopped container's VM and starts it in the background.
pub async fn start_all(names: &[String]) -> Result<i32> {
    let engine = Engine::open()?;
    let mut failed = false;
    for name in names {
        let result = match engine.container(name) {
            Ok(r) if r.status() == Status::Running => Ok(()),
            Ok(r) => engine.start(&r.id, None).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("berth: cannot start {name}: {}", e.message());
                failed = true;
            }
        }
    }
    Ok(i32::from(failed))
}

/// The hidden `container-monitor` of a detached container, or with `standby`, of one
/// that process runs in the foreground, or with `adopt`, of one whose monitor died.
pub async fn monitor(id: &str, standby: Option<u32>, adopt: bool) -> Result<i32> {
    let engine = Engine::open()?;
    match standby {
        Some(pid) => engine.monitor_standby(id, pid).await?,
        None if adopt => engine.adopt(id).await?,
        None => engine.monitor(id).await?,
    }
    Ok(0)
}

//! `berth build` and `berth builder prune`: the engine's Dockerfile builder from the
//! command line, with docker's flags and a line per step on stderr.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use berth_engine::build::{BuildEvent, BuildOptions};
use berth_engine::Engine;
use berth_units::human_size;
use clap::{Args, Subcommand};

use crate::format::parse_labels;

/// `build` arguments.
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Name and optionally a tag (NAME[:TAG]) for the image; may be repeated
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads it from stdin
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// A build-time variable, KEY=VALUE (or KEY to take this environment's value)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Do every step again instead of taking it from the cache
    #[arg(long)]
    pub no_cache: bool,
    /// The platform to build for (only the guests' own, linux/<host arch>)
    #[arg(long)]
    pub platform: Option<String>,
    /// A label for the image, KEY=VALUE; may be repeated
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Print only the image ID
    #[arg(short, long)]
    pub quiet: bool,
    /// Use plain HTTP to pull base images from this registry
    #[arg(long)]
    pub insecure: bool,
    /// The build context: a directory
    pub context: PathBuf,
}

/// `builder` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum BuilderCommand {
    /// Remove the build cache
    Prune {
        /// Do not ask for confirmation (berth never asks; kept for docker's scripts)
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs `build` on its own runtime; docker's exit codes.
pub fn main(args: BuildArgs) -> ExitCode {
    finish(runtime().and_then(|rt| rt.block_on(build(args))))
}

/// Runs a `builder` subcommand.
pub fn builder_main(cmd: BuilderCommand) -> ExitCode {
    finish(runtime().and_then(|rt| {
        rt.block_on(async {
            match cmd {
                BuilderCommand::Prune { force: _ } => {
                    let (steps, freed) = Engine::open()?.prune_build_cache().await?;
                    println!("Deleted build cache objects: {steps}");
                    println!("Total reclaimed space: {}", human_size(freed));
                    Ok(())
                }
            }
        })
    }))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")
}

fn finish(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {}", berth_engine::chain_message(e.as_ref()));
            ExitCode::from(crate::containers::exit_code(&e))
        }
    }
}

/// `--build-arg` values: `KEY=VALUE`, or `KEY` for this environment's value (skipped
/// when unset), as docker.
fn build_args(raw: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for a in raw {
        match a.split_once('=') {
            Some(("", _)) => bail!("invalid --build-arg {a}: the name is empty"),
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

async fn build(args: BuildArgs) -> Result<()> {
    if args.context.as_os_str() == "-" {
        bail!("a build context from stdin is not supported: give a directory");
    }
    let dockerfile = match &args.file {
        Some(f) if f.as_os_str() == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("read the Dockerfile from stdin")?;
            text
        }
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("read the Dockerfile {}", f.display()))?,
        None => {
            let f = args.context.join("Dockerfile");
            std::fs::read_to_string(&f).with_context(|| {
                format!(
                    "read the Dockerfile {}: put one there or name it with -f",
                    f.display()
                )
            })?
        }
    };
    let opts = BuildOptions {
        dockerfile,
        context: args.context.clone(),
        tags: args.tags.clone(),
        build_args: build_args(&args.build_args)?,
        target: args.target.clone(),
        no_cache: args.no_cache,
        platform: args.platform.clone(),
        labels: parse_labels(&args.labels),
    };
    let client = crate::images::client(args.platform.as_deref(), args.insecure, args.quiet)?;
    let engine = Engine::open()?;
    let quiet = args.quiet;
    let mut number = 0usize;
    let mut cached = false;
    let mut progress = |event: BuildEvent| {
        if quiet {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = match event {
            BuildEvent::Step {
                stage,
                index,
                total,
                text,
                cached: c,
            } => {
                number += 1;
                cached = c;
                let mark = if c { " CACHED" } else { "" };
                writeln!(err, "#{number} [{stage} {index}/{total}] {text}{mark}")
            }
            BuildEvent::Output(data) => err.write_all(&data),
            BuildEvent::Done(took) if !cached => {
                writeln!(err, "#{number} DONE {:.1}s", took.as_secs_f64())
            }
            BuildEvent::Done(_) => Ok(()),
            BuildEvent::Warning(w) => writeln!(err, "WARNING: {w}"),
        };
    };
    let report = engine.build(&opts, &client, &mut progress).await?;
    if !quiet {
        eprintln!(
            "built {} in {} steps ({} cached, {} micro-VMs booted)",
            report.image, report.steps, report.cached, report.vms_booted
        );
        for t in &args.tags {
            eprintln!("naming to {t}");
        }
    }
    println!("{}", report.image);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_args_take_values_or_the_environment() {
        std::env::set_var("BERTH_TEST_BUILD_ARG", "from-env");
        let got = build_args(&[
            "A=1".into(),
            "B=".into(),
            "BERTH_TEST_BUILD_ARG".into(),
            "BERTH_TEST_UNSET_ARG".into(),
        ])
        .unwrap();
        assert_eq!(got["A"], "1");
        assert_eq!(got["B"], "");
        assert_eq!(got["BERTH_TEST_BUILD_ARG"], "from-env");
        assert!(!got.contains_key("BERTH_TEST_UNSET_ARG"));
        assert!(build_args(&["=x".into()]).is_err());
    }
}

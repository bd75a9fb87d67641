//! A Dockerfile as stages: where each begins, what it needs, and which a target needs.

use std::collections::{BTreeMap, BTreeSet};

use berth_dockerfile::{lex, Dockerfile, Instruction, Kind};

use super::at;
use crate::error::{Error, Result};

/// Where a stage starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// `FROM scratch`.
    Scratch,
    /// `FROM` an earlier stage, by index.
    Stage(usize),
    /// `FROM` an image, by reference with the `ARG`s before `FROM` expanded.
    Image(String),
}

/// One stage: its `FROM` and its steps.
#[derive(Debug, Clone)]
pub(super) struct Stage {
    pub name: Option<String>,
    pub source: Source,
    pub from: Instruction,
    pub steps: Vec<Instruction>,
}

impl Stage {
    /// The name progress shows: the `AS` name, else `stage-N`.
    pub fn display_name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"))
    }
}

/// The stages of a Dockerfile and the order to build those the target needs.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub escape: char,
    /// The `ARG`s before the first `FROM`, with their values.
    pub meta_args: BTreeMap<String, Option<String>>,
    pub stages: Vec<Stage>,
    /// The stages to build, in order; the target is last.
    pub needed: Vec<usize>,
}

impl Plan {
    pub fn new(
        dockerfile: &Dockerfile,
        build_args: &BTreeMap<String, String>,
        target: Option<&str>,
    ) -> Result<Plan> {
        let escape = dockerfile.escape;
        let mut meta_args: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut stages: Vec<Stage> = Vec::new();
        for ins in &dockerfile.instructions {
            match (&ins.kind, stages.last_mut()) {
                (
                    Kind::From {
                        image,
                        name,
                        platform,
                    },
                    _,
                ) => {
                    let lookup = |n: &str| meta_args.get(n).cloned().flatten();
                    let image = lex::expand(image, &lookup, escape).map_err(|e| at(ins.line, e))?;
                    if let Some(p) = platform {
                        let p = lex::expand(p, &lookup, escape).map_err(|e| at(ins.line, e))?;
                        check_platform(&p).map_err(|e| at(ins.line, e))?;
                    }
                    if image.is_empty() {
                        return Err(at(ins.line, "FROM needs an image: the name is empty"));
                    }
                    let lower = image.to_lowercase();
                    let source = if lower == "scratch" {
                        Source::Scratch
                    } else if let Some(j) = stages
                        .iter()
                        .position(|s| s.name.as_deref() == Some(&lower))
                    {
                        Source::Stage(j)
                    } else {
                        Source::Image(image)
                    };
                    if let Some(n) = name {
                        if stages.iter().any(|s| s.name.as_ref() == Some(n)) {
                            return Err(at(ins.line, format!("duplicate stage name {n}")));
                        }
                    }
                    stages.push(Stage {
                        name: name.clone(),
                        source,
                        from: ins.clone(),
                        steps: Vec::new(),
                    });
                }
                (Kind::Arg(list), None) => {
                    for (name, default) in list {
                        let value = match build_args.get(name) {
                            Some(v) => Some(v.clone()),
                            None => match default {
                                Some(d) => Some(
                                    lex::expand(
                                        d,
                                        &|n| meta_args.get(n).cloned().flatten(),
                                        escape,
                                    )
                                    .map_err(|e| at(ins.line, e))?,
                                ),
                                None => None,
                            },
                        };
                        meta_args.insert(name.clone(), value);
                    }
                }
                (_, None) => return Err(at(
                    ins.line,
                    "no build stage in current context: only ARG may come before the first FROM",
                )),
                (_, Some(stage)) => stage.steps.push(ins.clone()),
            }
        }
        if stages.is_empty() {
            return Err(Error::Build(
                "the Dockerfile has no FROM: there is nothing to build".into(),
            ));
        }
        let target = match target {
            None => stages.len() - 1,
            Some(t) => {
                let t = t.to_lowercase();
                stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(&t))
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "target stage {t} could not be found: name it with FROM ... AS {t}"
                        ))
                    })?
            }
        };
        let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); stages.len()];
        for (i, stage) in stages.iter().enumerate() {
            if let Source::Stage(j) = stage.source {
                deps[i].insert(j);
            }
            for step in &stage.steps {
                if let Kind::Copy(args) = &step.kind {
                    if let Some(from) = &args.from {
                        if let Some(j) = find_stage(&stages, from, i, step.line)? {
                            deps[i].insert(j);
                        }
                    }
                }
            }
        }
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if needed.insert(i) {
                todo.extend(deps[i].iter().copied());
            }
        }
        Ok(Plan {
            escape,
            meta_args,
            stages,
            needed: needed.into_iter().collect(),
        })
    }

    /// The stage `from` (a name or an index) names, or `None` for an image.
    pub fn stage_index(&self, from: &str, line: usize) -> Result<Option<usize>> {
        find_stage(&self.stages, from, self.stages.len(), line)
    }
}

/// The stage `from` names for stage `current`: an earlier one, or `None` for an image.
/// A name or index of `current` or a later stage is a cycle.
fn find_stage(stages: &[Stage], from: &str, current: usize, line: usize) -> Result<Option<usize>> {
    let lower = from.to_lowercase();
    if let Some(j) = stages
        .iter()
        .position(|s| s.name.as_deref() == Some(&lower))
    {
        if j >= current {
            return Err(at(
                line,
                format!("--from={from} refers to this stage or a later one: a circular dependency"),
            ));
        }
        return Ok(Some(j));
    }
    if let Ok(n) = from.parse::<usize>() {
        if n >= current {
            return Err(at(
                line,
                format!(
                    "--from={from}: no such stage before this one (stages count from 0, and only \
                     earlier ones can be copied from)"
                ),
            ));
        }
        return Ok(Some(n));
    }
    Ok(None)
}

fn check_platform(p: &str) -> std::result::Result<(), String> {
    let host = berth_image::Platform::host();
    let wanted: berth_image::Platform = p.parse().map_err(|e| format!("--platform={p}: {e}"))?;
    if wanted.os != host.os || wanted.architecture != host.architecture {
        return Err(format!(
            "--platform={p}: berth builds for {}/{} only (RUN steps run in a micro-VM of this \
             machine)",
            host.os, host.architecture
        ));
    }
    Ok(())
}

/// `path` relative to the directory `base` (absolute), as `WORKDIR` and `COPY` take
/// it: an absolute `path` stands alone. `.` and `..` are resolved, never above `/`.
pub(super) fn join(base: &str, path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{base}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str, target: Option<&str>) -> Result<Plan> {
        Plan::new(
            &berth_dockerfile::parse(text).unwrap(),
            &BTreeMap::new(),
            target,
        )
    }

    #[test]
    fn the_target_needs_only_its_stages() {
        let text = "ARG BASE=busybox\nFROM $BASE AS a\nRUN x\nFROM scratch AS unused\n\
                    FROM a AS b\nCOPY --from=0 /x /x\nFROM busybox\nCOPY --from=b /y /y\n";
        let p = plan(text, None).unwrap();
        assert_eq!(p.needed, [0, 2, 3]);
        assert_eq!(p.stages[0].source, Source::Image("busybox".into()));
        assert_eq!(p.stages[2].source, Source::Stage(0));
        assert_eq!(p.stages[1].source, Source::Scratch);
        assert_eq!(plan(text, Some("A")).unwrap().needed, [0]);
        let err = plan(text, Some("nope")).unwrap_err();
        assert!(err.to_string().contains("target stage nope"), "{err}");
    }

    #[test]
    fn a_copy_from_itself_or_later_is_a_cycle() {
        let err = plan("FROM busybox AS a\nCOPY --from=a /x /x\n", None).unwrap_err();
        assert!(err.to_string().contains("line 2") && err.to_string().contains("circular"));
        let err = plan("FROM busybox\nCOPY --from=3 /x /x\n", None).unwrap_err();
        assert!(err.to_string().contains("no such stage"), "{err}");
        // An instruction before any FROM never reaches the plan: the parser names its line.
        let err = berth_dockerfile::parse("RUN x\nFROM busybox\n").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn paths_join_like_workdir() {
        assert_eq!(join("/", "app"), "/app");
        assert_eq!(join("/app", "../srv/./x/"), "/srv/x");
        assert_eq!(join("/app", "/abs"), "/abs");
        assert_eq!(join("/", "../.."), "/");
    }
}

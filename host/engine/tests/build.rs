//! Dockerfile builds without a VM: every step here is one the host does (metadata,
//! `COPY`, `ADD`), so the stages, scoping, cache and errors are checked offline, with no
//! root. `RUN` steps are checked through the VM harness (`tests/tests/vm_build.rs`).
#![cfg(unix)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use berth_engine::build::{BuildEvent, BuildOptions, BuildReport};
use berth_engine::{Engine, Error};
use berth_image::{ops, tree, Client, ClientOptions};

struct Bench {
    _dir: tempfile::TempDir,
    engine: Engine,
    context: std::path::PathBuf,
    client: Client,
}

fn bench() -> Bench {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open_at(&dir.path().join("root")).unwrap();
    let context = dir.path().join("ctx");
    fs::create_dir_all(&context).unwrap();
    let client = Client::new(ClientOptions {
        progress: false,
        ..ClientOptions::default()
    })
    .unwrap();
    Bench {
        _dir: dir,
        engine,
        context,
        client,
    }
}

impl Bench {
    fn write(&self, rel: &str, text: &str) {
        let p = self.context.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    async fn build(
        &self,
        dockerfile: &str,
        f: impl FnOnce(&mut BuildOptions),
    ) -> Result<(BuildReport, Vec<BuildEvent>), Error> {
        let mut opts = BuildOptions {
            dockerfile: dockerfile.into(),
            context: self.context.clone(),
            ..BuildOptions::default()
        };
        f(&mut opts);
        let mut events = Vec::new();
        let report = self
            .engine
            .build(&opts, &self.client, &mut |e| events.push(e))
            .await?;
        Ok((report, events))
    }

    fn file(&self, image: &str, path: &str) -> Option<(Vec<u8>, u32, u64)> {
        let img = self.engine.images().resolve(image).unwrap();
        let files = tree::files_under(self.engine.images(), &img, path).unwrap();
        files.get(Path::new(path.trim_start_matches('/'))).map(|e| {
            (
                e.data.clone(),
                e.header.mode().unwrap() & 0o7777,
                e.header.uid().unwrap(),
            )
        })
    }
}

fn steps(events: &[BuildEvent]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Step { text, cached, .. } => Some((text.clone(), *cached)),
            _ => None,
        })
        .collect()
}

const TWO_STAGES: &str = r#"ARG VERSION=1.0
FROM scratch AS files
ARG VERSION
ENV APP=/opt/app-${VERSION} EMPTY=${UNSET:-fallback}
COPY --chmod=750 hello.sh ${APP}/bin/
COPY conf/ /etc/app/
FROM scratch
COPY --from=files /opt /opt
COPY --from=files /etc/app/a.conf /etc/a.conf
WORKDIR /srv
WORKDIR data
USER 1000:1000
ENTRYPOINT ["/opt/app-1.0/bin/hello.sh"]
CMD ["--greet"]
LABEL org.test.version=$VERSION
EXPOSE 8080 53/udp
"#;

#[tokio::test]
async fn two_stages_with_args_env_workdir_user_and_entrypoint() {
    let b = bench();
    b.write("hello.sh", "#!/bin/sh\necho hi\n");
    b.write("conf/a.conf", "a=1\n");
    b.write("conf/b.conf", "b=2\n");
    let (report, events) = b
        .build(TWO_STAGES, |o| o.tags = vec!["berth.local/built:v1".into()])
        .await
        .unwrap();
    assert_eq!(report.vms_booted, 0);
    let img = b.engine.images().resolve("berth.local/built:v1").unwrap();
    assert_eq!(img.id.to_string(), report.image);
    let config = img.config.config.clone().unwrap();
    assert_eq!(config.working_dir.as_deref(), Some("/srv/data"));
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        config.entrypoint.as_deref(),
        Some(&["/opt/app-1.0/bin/hello.sh".to_string()][..])
    );
    assert_eq!(config.cmd.as_deref(), Some(&["--greet".to_string()][..]));
    // The meta ARG is not in the second stage's scope: it was not declared there.
    assert_eq!(config.labels.unwrap()["org.test.version"], "");
    let ports: Vec<&String> = config.exposed_ports.as_ref().unwrap().keys().collect();
    assert_eq!(ports, ["53/udp", "8080/tcp"]);
    let (data, mode, uid) = b
        .file("berth.local/built:v1", "/opt/app-1.0/bin/hello.sh")
        .unwrap();
    assert_eq!(
        (data.as_slice(), mode, uid),
        (&b"#!/bin/sh\necho hi\n"[..], 0o750, 0)
    );
    assert!(b.file("berth.local/built:v1", "/etc/a.conf").is_some());
    assert!(b.file("berth.local/built:v1", "/etc/b.conf").is_none());
    assert!(
        b.file("berth.local/built:v1", "/srv/data").is_some(),
        "WORKDIR makes its directory"
    );
    // Only the final stage's steps are its history, one row per instruction.
    let rows = ops::history(b.engine.images(), &img);
    let made: Vec<&str> = rows.iter().rev().map(|r| r.created_by.as_str()).collect();
    assert_eq!(
        made,
        [
            "COPY --from=files /opt /opt",
            "COPY --from=files /etc/app/a.conf /etc/a.conf",
            "WORKDIR /srv",
            "WORKDIR data",
            "USER 1000:1000",
            "ENTRYPOINT [\"/opt/app-1.0/bin/hello.sh\"]",
            "CMD [\"--greet\"]",
            "LABEL org.test.version=$VERSION",
            "EXPOSE 8080 53/udp",
        ]
    );
    assert_eq!(rows[0].size, 0, "EXPOSE has no layer");
    assert!(rows.last().unwrap().size > 0);
    assert_eq!(steps(&events)[0].0, "FROM scratch AS files");

    // Nothing changed: every step from the cache, and the same image.
    let (again, events) = b.build(TWO_STAGES, |_| {}).await.unwrap();
    assert_eq!(again.image, report.image);
    assert_eq!(again.cached, again.steps, "{:?}", steps(&events));
    // One copied file changed: the steps from that COPY on run again.
    b.write("conf/a.conf", "a=2\n");
    let (changed, events) = b.build(TWO_STAGES, |_| {}).await.unwrap();
    assert_ne!(changed.image, report.image);
    let redone: Vec<String> = steps(&events)
        .into_iter()
        .filter(|(t, cached)| !cached && !t.starts_with("FROM") && !t.starts_with("ARG"))
        .map(|(t, _)| t)
        .collect();
    assert_eq!(redone[0], "COPY conf/ /etc/app/");
    assert!(
        !redone.iter().any(|t| t.starts_with("COPY --chmod")),
        "{redone:?}"
    );
    // A build arg changes what ENV says, so the stage is built from there on.
    let (arg, _) = b
        .build(TWO_STAGES, |o| {
            o.build_args = BTreeMap::from([("VERSION".into(), "2.0".into())]);
            o.tags = vec!["berth.local/built:v2".into()];
        })
        .await
        .unwrap();
    assert_ne!(arg.image, changed.image);
    assert!(b
        .file("berth.local/built:v2", "/opt/app-2.0/bin/hello.sh")
        .is_some());
    // --no-cache does every step again.
    let (fresh, _) = b.build(TWO_STAGES, |o| o.no_cache = true).await.unwrap();
    assert_eq!(fresh.cached, 0);
    // builder prune drops the cache: a step after it is not cached.
    let (dropped, _) = b.engine.prune_build_cache().await.unwrap();
    assert!(dropped > 0);
    let (after, _) = b.build(TWO_STAGES, |_| {}).await.unwrap();
    assert_eq!(after.cached, 0);
}

#[tokio::test]
async fn dockerignore_with_an_exception_and_copy_rules() {
    let b = bench();
    b.write(".dockerignore", "*.log\n!keep.log\nsecret/\n");
    b.write("app.txt", "app");
    b.write("noise.log", "noise");
    b.write("keep.log", "keep");
    b.write("secret/key", "key");
    b.write("lib/a.txt", "a");
    b.write("lib/b.txt", "b");
    let df = "FROM scratch\nCOPY . /ctx/\nCOPY lib/*.txt /globbed/\nCOPY app.txt /renamed\n\
              COPY --chown=7:8 app.txt /owned/\n";
    b.build(df, |o| o.tags = vec!["berth.local/ctx".into()])
        .await
        .unwrap();
    let has = |p: &str| b.file("berth.local/ctx", p).is_some();
    assert!(has("/ctx/app.txt") && has("/ctx/keep.log") && has("/ctx/lib/a.txt"));
    assert!(!has("/ctx/noise.log") && !has("/ctx/secret/key") && !has("/ctx/secret"));
    assert!(has("/globbed/a.txt") && has("/globbed/b.txt"));
    assert_eq!(b.file("berth.local/ctx", "/renamed").unwrap().0, b"app");
    let img = b.engine.images().resolve("berth.local/ctx").unwrap();
    let owned = tree::files_under(b.engine.images(), &img, "/owned/app.txt").unwrap();
    let h = &owned[Path::new("owned/app.txt")].header;
    assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (7, 8));
}

#[tokio::test]
async fn add_extracts_a_local_tar_and_refuses_a_url() {
    let b = bench();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    tar.append_data(&mut h, "inner/file", &b"abc"[..]).unwrap();
    fs::write(b.context.join("bundle.tar"), tar.into_inner().unwrap()).unwrap();
    b.build("FROM scratch\nADD bundle.tar /x/\n", |o| {
        o.tags = vec!["berth.local/add".into()]
    })
    .await
    .unwrap();
    assert_eq!(
        b.file("berth.local/add", "/x/inner/file").unwrap().0,
        b"abc"
    );
    let err = b
        .build("FROM scratch\nADD https://example.com/f /f\n", |_| {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("line 2") && err.to_string().contains("offline"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_dockerfiles_fail_with_their_line_and_tag_nothing() {
    let b = bench();
    b.write("a", "a");
    b.write("b", "b");
    for (df, line, says) in [
        ("FROM scratch\nFROBNICATE x\n", 2, "unknown instruction"),
        ("FROM scratch\nCOPY --nope a /a\n", 2, "nope"),
        (
            "FROM scratch\nCOPY a /a\nCOPY missing.txt /m\n",
            3,
            "missing.txt",
        ),
        ("FROM scratch AS a\nCOPY --from=a /x /x\n", 2, "circular"),
        ("FROM scratch\nCOPY a b /dir\n", 2, "end with a /"),
        (
            "FROM scratch\nCOPY ../a /a\n",
            2,
            "outside the build context",
        ),
    ] {
        let err = b
            .build(df, |o| o.tags = vec!["berth.local/bad".into()])
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("line {line}")), "{df:?}: {text}");
        assert!(text.to_lowercase().contains(says), "{df:?}: {text}");
        assert_eq!(err.exit_code(), 1);
        assert!(b.engine.images().resolve("berth.local/bad").is_err());
    }
}

#[tokio::test]
async fn an_entrypoint_drops_the_base_cmd_but_keeps_its_own_stage_cmd() {
    let b = bench();
    let df = "FROM scratch AS base\nCMD [\"base\"]\nFROM base AS later\nENTRYPOINT [\"ep\"]\n\
              FROM base\nCMD [\"mine\"]\nENTRYPOINT /bin/ep -x\n";
    b.build(df, |o| {
        o.target = Some("later".into());
        o.tags = vec!["berth.local/ep:later".into()];
    })
    .await
    .unwrap();
    b.build(df, |o| o.tags = vec!["berth.local/ep:last".into()])
        .await
        .unwrap();
    let config = |t: &str| b.engine.images().resolve(t).unwrap().config.config.unwrap();
    let later = config("berth.local/ep:later");
    assert_eq!(
        (later.entrypoint.unwrap(), later.cmd),
        (vec!["ep".to_string()], None)
    );
    let last = config("berth.local/ep:last");
    assert_eq!(last.entrypoint.unwrap(), ["/bin/sh", "-c", "/bin/ep -x"]);
    assert_eq!(last.cmd.unwrap(), ["mine"]);
}

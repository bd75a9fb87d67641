//! Host folders, volumes and tmpfs in containers, end to end: the real `berth` CLI, the
//! VMM's virtio-fs device and FUSE server, the guest kernel and agent. Run through
//! scripts/with-kvm.sh with BERTH_KERNEL, BERTH_INITRAMFS, BERTH_DEFAULT_IMAGE and
//! BERTH_BIN set (see scripts/test.sh). Few boots: one container runs many checks.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use berth_tests::{text, Berth};

const IMAGE: &str = "berth.local/busybox:latest";
/// No single berth command of these tests takes this long, even nested under emulation.
const COMMAND_LIMIT: Duration = Duration::from_secs(600);

fn berth() -> &'static Berth {
    static BERTH: OnceLock<Berth> = OnceLock::new();
    BERTH.get_or_init(|| Berth::new("volumes-e2e", COMMAND_LIMIT))
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    berth().ok(args)
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `len` bytes that do not compress: a xorshift stream.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn a_host_folder_round_trips_files_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("src");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("from-host"), "hello from the host\n").unwrap();
    // Big enough for many FUSE requests of the largest size, small enough for nested
    // emulation; bench-fs.sh measures the large transfers.
    std::fs::write(share.join("big"), noise(8 << 20)).unwrap();
    let big_sum = sha256(&share.join("big"));
    let script = "set -e
        cat /data/from-host
        echo from-ctr > /data/from-ctr
        cp /data/big /data/big2
        mkdir /data/many
        cd /data/many && seq 1 400 | xargs touch && ls | wc -l && cd /
        mkdir /data/few && touch /data/few/1 /data/few/2 /data/few/3 && rm -r /data/few
        echo abcdef > /data/a && mv /data/a /data/b
        ln /data/b /data/hard && ln -s b /data/sym && cat /data/sym
        chmod 640 /data/b && stat -c %a /data/hard
        truncate -s 3 /data/hard && stat -c %s /data/b
        touch /data/owned && chown 1234:5678 /data/owned
        echo done";
    let v = format!("{}:/data", share.display());
    let out = ok(&["run", "--rm", "-v", &v, IMAGE, "sh", "-c", script]);
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["hello from the host", "400", "abcdef", "640", "3", "done"],
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(share.join("from-ctr")).unwrap(),
        "from-ctr\n"
    );
    assert_eq!(
        sha256(&share.join("big2")),
        big_sum,
        "8 MiB came back whole"
    );
    assert_eq!(names(&share.join("many")).len(), 400);
    assert_eq!(std::fs::read(share.join("b")).unwrap(), b"abc");
    let (b, hard) = (
        std::fs::metadata(share.join("b")).unwrap(),
        std::fs::metadata(share.join("hard")).unwrap(),
    );
    assert_eq!((b.ino(), b.nlink()), (hard.ino(), 2), "a hard link");
    assert_eq!(b.permissions().mode() & 0o777, 0o640);
    assert_eq!(
        std::fs::read_link(share.join("sym")).unwrap(),
        Path::new("b")
    );
    // berth runs as root here: numeric ids pass through, as docker's on Linux.
    let owned = std::fs::metadata(share.join("owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1234, 5678));
    assert!(!share.join("a").exists());
    assert!(
        !share.join("few").exists(),
        "rm -r lists and unlinks all of a folder"
    );
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn read_only_shares_refuse_writes_and_nothing_escapes() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    std::fs::write(share.join("inside.txt"), "inside\n").unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret\n").unwrap();
    let script = "
        echo x > /ro/new 2>/dev/null && echo WROTE
        rm /ro/inside.txt 2>/dev/null && echo REMOVED
        mkdir /ro/d 2>/dev/null && echo MADE
        cat /ro/inside.txt
        ln -s / /rw/root-link && ls /rw/root-link/ | grep -q proc && echo guest-root
        ln -s ../secret.txt /rw/up-link
        cat /rw/up-link 2>/dev/null && echo ESCAPED-UP
        cat /rw/../secret.txt 2>/dev/null && echo ESCAPED-DOTDOT
        cat /rw/root-link/../secret.txt 2>/dev/null && echo ESCAPED-LINK
        mkdir /rw/sub && mv /rw/sub /rw/../sub-moved 2>/dev/null
        echo checked";
    let ro = format!("{}:/ro:ro", share.display());
    let rw = format!("{}:/rw", share.display());
    let out = ok(&[
        "run", "--rm", "-v", &ro, "-v", &rw, IMAGE, "sh", "-c", script,
    ]);
    assert_eq!(out, "inside\nguest-root\nchecked\n", "{out}");
    assert_eq!(
        names(dir.path()),
        ["secret.txt", "share"],
        "nothing outside changed"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("secret.txt")).unwrap(),
        "secret\n"
    );
    assert_eq!(
        std::fs::read_to_string(share.join("inside.txt")).unwrap(),
        "inside\n"
    );
    assert!(!share.join("new").exists() && !share.join("d").exists());
    // The guest's links stay links on the host; berth never follows them.
    assert_eq!(
        std::fs::read_link(share.join("root-link")).unwrap(),
        Path::new("/")
    );
}

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn volumes_outlive_containers_and_are_shared_while_they_run() {
    ok(&["volume", "create", "data"]);
    ok(&[
        "run",
        "-d",
        "--name",
        "keeper",
        "-v",
        "data:/v",
        IMAGE,
        "sh",
        "-c",
        "echo one > /v/f; while true; do sleep 1; done",
    ]);
    let mut tries = 0;
    while ok(&["exec", "keeper", "cat", "/v/f"]).trim() != "one" {
        tries += 1;
        assert!(tries < 60, "keeper wrote its file");
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = ok(&[
        "run",
        "--rm",
        "-v",
        "data:/v",
        IMAGE,
        "sh",
        "-c",
        "cat /v/f; echo two > /v/g",
    ]);
    assert_eq!(
        out, "one\n",
        "a second container sees the running one's file"
    );
    assert_eq!(ok(&["exec", "keeper", "cat", "/v/g"]), "two\n", "and back");
    let busy = berth().output(&["volume", "rm", "data"]);
    assert!(!busy.status.success(), "a volume in use stays");
    assert!(
        text(&busy.stderr).contains("in use"),
        "{}",
        text(&busy.stderr)
    );
    ok(&["rm", "-f", "keeper"]);
    assert_eq!(
        ok(&[
            "run",
            "--rm",
            "-v",
            "data:/v:ro",
            IMAGE,
            "cat",
            "/v/f",
            "/v/g"
        ]),
        "one\ntwo\n",
        "the volume outlived both containers"
    );
    ok(&["volume", "rm", "data"]);
    assert!(!ok(&["volume", "ls", "-q"]).lines().any(|l| l == "data"));

    // An anonymous volume goes with `rm -v`; `volume prune` takes unused anonymous ones.
    ok(&[
        "run",
        "--name",
        "anon",
        "-v",
        "/scratch",
        IMAGE,
        "sh",
        "-c",
        "echo x > /scratch/y",
    ]);
    let inspect: serde_json::Value = serde_json::from_str(&ok(&["inspect", "anon"])).unwrap();
    let mount = &inspect[0]["Mounts"][0];
    assert_eq!(mount["Type"], "volume");
    assert_eq!(mount["Destination"], "/scratch");
    let anon = mount["Name"].as_str().unwrap().to_string();
    assert_eq!(anon.len(), 64, "{mount}");
    let data = Path::new(mount["Source"].as_str().unwrap()).join("y");
    assert_eq!(std::fs::read_to_string(&data).unwrap(), "x\n");
    ok(&["rm", "-v", "anon"]);
    assert!(
        !ok(&["volume", "ls", "-q"]).contains(&anon),
        "rm -v took it"
    );
    ok(&["volume", "create", "named"]);
    // This container also has a tmpfs, with its size limit.
    let out = ok(&[
        "run", "--name", "anon2", "-v", "/scratch", "--tmpfs", "/t:size=1m", IMAGE, "sh", "-c",
        "grep ' /t ' /proc/mounts | cut -d' ' -f3; dd if=/dev/zero of=/t/f bs=1k count=2048 2>/dev/null; echo rc=$?",
    ]);
    assert_eq!(out, "tmpfs\nrc=1\n", "{out}");
    ok(&["rm", "anon2"]);
    assert_eq!(ok(&["volume", "ls", "-q"]).lines().count(), 2);
    ok(&["volume", "prune", "-f"]);
    assert_eq!(
        ok(&["volume", "ls", "-q"]),
        "named\n",
        "prune keeps named volumes"
    );
    ok(&["volume", "prune", "-a", "-f"]);
    assert_eq!(ok(&["volume", "ls", "-q"]), "");
}

#[test]
#[ignore = "needs the built image: run by scripts/test.sh"]
fn bad_mounts_are_refused_with_125_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let host = dir.path().display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-v".into(), "./rel:/x".into()], "absolute"),
        (vec!["-v".into(), format!("{host}:rel")], "not absolute"),
        (
            vec!["-v".into(), format!("{host}:/x:bogus")],
            "unknown option",
        ),
        (
            vec![
                "--mount".into(),
                format!("type=bind,source={},target=/x", missing.display()),
            ],
            "does not exist",
        ),
        (
            vec![
                "-v".into(),
                format!("{host}:/x"),
                "--tmpfs".into(),
                "/x".into(),
            ],
            "duplicate mount point",
        ),
        (
            vec!["--mount".into(), "type=nfs,target=/x".into()],
            "unknown type",
        ),
    ];
    for (flags, why) in cases {
        let mut args = vec!["run", "--rm"];
        args.extend(flags.iter().map(String::as_str));
        args.extend([IMAGE, "true"]);
        let out = berth().output(&args);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(why),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert!(
        !missing.exists(),
        "--mount does not make a missing host folder"
    );
    assert_eq!(names(dir.path()), Vec::<String>::new());
    assert_eq!(ok(&["ps", "-aq"]), "");
    assert_eq!(ok(&["volume", "ls", "-q"]), "");
}

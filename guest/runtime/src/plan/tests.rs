use std::ffi::CString;
use std::path::Path;

use oci_spec::runtime::{Capability, LinuxBuilder, Mount, ProcessBuilder, Spec};

use super::*;
use crate::child::{self, ChildFds, Message};
use crate::sys::{Call, RecordingSyscalls};

fn docker_like_spec() -> Spec {
    // The same shape berth-protocol's docker_spec builds (kept local: the runtime does not
    // depend on the protocol crate).
    let mut spec = Spec::default();
    let caps: oci_spec::runtime::Capabilities = [
        Capability::Chown,
        Capability::Kill,
        Capability::NetBindService,
    ]
    .into_iter()
    .collect();
    let mut c = oci_spec::runtime::LinuxCapabilities::default();
    c.set_bounding(Some(caps.clone()));
    c.set_effective(Some(caps.clone()));
    c.set_permitted(Some(caps));
    c.set_inheritable(None);
    c.set_ambient(None);
    let process = ProcessBuilder::default()
        .args(vec!["echo".to_string(), "hi".to_string()])
        .env(vec!["PATH=/usr/bin:/bin".to_string()])
        .cwd("/work")
        .capabilities(c)
        .no_new_privileges(true)
        .build()
        .unwrap();
    spec.set_process(Some(process));
    spec.set_hostname(Some("box".into()));
    let linux = LinuxBuilder::default()
        .namespaces(crate::default_namespaces())
        .masked_paths(vec!["/proc/kcore".to_string(), "/sys/firmware".to_string()])
        .readonly_paths(vec!["/proc/sys".to_string()])
        .build()
        .unwrap();
    spec.set_linux(Some(linux));
    spec
}

fn ctx(root: &Path) -> Context<'_> {
    Context {
        rootfs: root,
        user: None,
        cgroup2: false,
        last_cap: 40,
        console: None,
    }
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

#[test]
fn docker_mounts_become_ordered_steps() {
    let root = Path::new("/run/berth/c1/rootfs");
    let plan = init_plan(&docker_like_spec(), &ctx(root)).unwrap();
    assert_eq!(
        plan.clone_flags,
        libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
    );
    assert!(plan.new_cgroup_ns);
    let steps = &plan.steps;
    // Private propagation first, then the root bind.
    assert_eq!(
        steps[0],
        Step::Mount {
            source: None,
            target: c("/"),
            fstype: None,
            flags: libc::MS_REC | libc::MS_PRIVATE,
            data: None
        }
    );
    let pos = |want: &Step| steps.iter().position(|s| s == want).unwrap();
    let proc_mount = steps
        .iter()
        .position(|s| matches!(s, Step::Mount { fstype: Some(t), .. } if t.as_c_str() == c"proc"))
        .unwrap();
    let null = pos(&Step::Mknod {
        path: c("/run/berth/c1/rootfs/dev/null"),
        mode: libc::S_IFCHR | 0o666,
        dev: libc::makedev(1, 3),
    });
    let pivot = pos(&Step::PivotRoot(c("/run/berth/c1/rootfs")));
    let mask = pos(&Step::Mask(c("/proc/kcore")));
    let ro = pos(&Step::ReadOnly(c("/proc/sys")));
    let host = pos(&Step::Hostname(c("box")));
    assert!(proc_mount < null && null < pivot && pivot < ro && ro < mask && mask < host);
    // devpts options go to the filesystem, flags to the kernel.
    assert!(steps.iter().any(|s| matches!(s,
        Step::Mount { fstype: Some(t), data: Some(d), flags, .. }
            if t.as_c_str() == c"devpts"
                && d.to_str().unwrap() == "newinstance,ptmxmode=0666,mode=0620,gid=5"
                && *flags == libc::MS_NOSUID | libc::MS_NOEXEC)));
    // The default spec's cgroup mount is skipped without cgroup v2 ...
    assert!(!steps
        .iter()
        .any(|s| matches!(s, Step::Mount { fstype: Some(t), .. } if t.as_c_str() == c"cgroup2")));
    // ... and becomes cgroup2 with it.
    let root2 = Path::new("/r");
    let mut cx = ctx(root2);
    cx.cgroup2 = true;
    let plan2 = init_plan(&docker_like_spec(), &cx).unwrap();
    assert!(plan2.steps.iter().any(|s| matches!(s,
        Step::Mount { fstype: Some(t), target, .. }
            if t.as_c_str() == c"cgroup2" && target.as_c_str() == c"/r/sys/fs/cgroup")));
    assert!(plan2.steps.contains(&Step::Symlink {
        target: c("pts/ptmx"),
        link: c("/r/dev/ptmx")
    }));
}

#[test]
fn process_plan_searches_path_and_adds_home() {
    let root = tempfile::tempdir().unwrap();
    let plan = init_plan(&docker_like_spec(), &ctx(root.path())).unwrap();
    let p = &plan.process;
    assert!(p.search_path);
    assert_eq!(p.candidates, vec![c("/usr/bin/echo"), c("/bin/echo")]);
    assert!(p.env.contains(&c("HOME=/")));
    assert!(p.no_new_privs);
    let caps = p.caps.unwrap();
    assert_eq!(caps.bounding, (1 << 0) | (1 << 5) | (1 << 10));
    assert_eq!(caps.ambient, 0);
}

#[test]
fn broken_configs_name_the_field() {
    let root = Path::new("/r");
    let mut s = docker_like_spec();
    s.process_mut().as_mut().unwrap().set_args(Some(vec![]));
    let e = init_plan(&s, &ctx(root)).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::InvalidConfig { field, .. } if field == "process.args"),
        "{e}"
    );

    let mut s = docker_like_spec();
    s.process_mut().as_mut().unwrap().set_cwd("rel".into());
    let e = init_plan(&s, &ctx(root)).unwrap_err();
    assert!(matches!(&e, RuntimeError::InvalidConfig { field, .. } if field == "process.cwd"));

    let mut s = docker_like_spec();
    let mut m = Mount::default();
    m.set_destination("/../../etc".into());
    m.set_typ(Some("tmpfs".into()));
    s.set_mounts(Some(vec![m]));
    let e = init_plan(&s, &ctx(root)).unwrap_err();
    assert!(
        matches!(&e, RuntimeError::InvalidConfig { field, .. } if field == "mounts[0].destination"),
        "{e}"
    );

    let mut s = docker_like_spec();
    s.set_process(None);
    assert!(matches!(
        init_plan(&s, &ctx(root)).unwrap_err(),
        RuntimeError::InvalidConfig { field, .. } if field == "process"
    ));

    let mut s = docker_like_spec();
    s.process_mut()
        .as_mut()
        .unwrap()
        .set_env(Some(vec!["NOEQUALS".into()]));
    assert!(matches!(
        init_plan(&s, &ctx(root)).unwrap_err(),
        RuntimeError::InvalidConfig { field, .. } if field == "process.env[0]"
    ));
}

fn fds() -> ChildFds {
    ChildFds {
        stdin: 10,
        stdout: 11,
        stderr: 12,
        report: 13,
        sync: 14,
        start: 15,
    }
}

#[test]
fn init_sequence_runs_steps_then_identity_then_exec() {
    let root = Path::new("/r");
    let mut s = docker_like_spec();
    s.process_mut()
        .as_mut()
        .unwrap()
        .set_args(Some(vec!["/bin/sh".into()]));
    let mut plan = init_plan(&s, &ctx(root)).unwrap();
    plan.process.user.uid = 1000;
    plan.process.user.gid = 1000;
    plan.process.user.groups = vec![10];
    let sys = RecordingSyscalls {
        files: vec![("/bin/sh".into(), libc::S_IFREG | 0o755)],
        reads: std::cell::RefCell::new(vec![vec![1], vec![1]]),
        ..Default::default()
    };
    let argv = [std::ptr::null()];
    let m = child::init_sequence(&sys, &plan, &fds(), &argv, &argv);
    // The double's execve "fails" with ENOEXEC: everything before it ran.
    assert_eq!(m.kind, child::MSG_EXEC_FAILED);
    let calls = sys.take();
    let at = |want: &Call| {
        calls
            .iter()
            .position(|c| c == want)
            .unwrap_or_else(|| panic!("{want:?} not in {calls:#?}"))
    };
    let sync = at(&Call::Read(14));
    let oom = at(&Call::OpenWrite("/proc/self/oom_score_adj".into()));
    assert!(calls.contains(&Call::Write(100, b"0".to_vec())));
    let unshare = at(&Call::Unshare(libc::CLONE_NEWCGROUP));
    let dup = at(&Call::Dup2(10, 0));
    let close = at(&Call::CloseRange(3, 12));
    let setsid = at(&Call::Setsid);
    let pivot = at(&Call::PivotRoot(".".into(), ".".into()));
    let hostname = at(&Call::Sethostname("box".into()));
    let bounding = at(&Call::DropBounding(1));
    let groups = at(&Call::Setgroups(vec![10]));
    let setuid = at(&Call::Setuid(1000));
    let capset = at(&Call::Capset(
        (1 << 0) | (1 << 5) | (1 << 10),
        (1 << 0) | (1 << 5) | (1 << 10),
        0,
    ));
    let nnp = at(&Call::NoNewPrivs);
    let cwd = at(&Call::Chdir("/work".into()));
    let ready = at(&Call::Write(
        13,
        Message {
            kind: child::MSG_READY,
            step: 0,
            errno: 0,
        }
        .encode()
        .to_vec(),
    ));
    let start = at(&Call::Read(15));
    let exec = at(&Call::Execve("/bin/sh".into()));
    let order = [
        sync, unshare, dup, close, setsid, pivot, hostname, oom, bounding, groups, setuid, capset,
        nnp, cwd, ready, start, exec,
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    // Kept capabilities are not dropped from the bounding set.
    assert!(!calls.contains(&Call::DropBounding(0)));
    assert!(!calls.contains(&Call::DropBounding(5)));
    // The fds kept open around report/start: [3,12], [14,14] closed, 13 and 15 kept.
    assert!(calls.contains(&Call::CloseRange(14, 14)));
    assert!(calls.contains(&Call::CloseRange(16, u32::MAX)));
}

#[test]
fn a_failing_step_is_reported_with_its_index() {
    let root = Path::new("/r");
    let plan = init_plan(&docker_like_spec(), &ctx(root)).unwrap();
    let sys = RecordingSyscalls {
        fail: Some(("PivotRoot".into(), crate::error::Errno::EINVAL)),
        reads: std::cell::RefCell::new(vec![vec![1]]),
        ..Default::default()
    };
    let argv = [std::ptr::null()];
    let m = child::init_sequence(&sys, &plan, &fds(), &argv, &argv);
    assert_eq!(m.kind, child::MSG_FAILED);
    assert_eq!(m.errno, libc::EINVAL);
    assert!(matches!(plan.steps[m.step as usize], Step::PivotRoot(_)));
    assert_eq!(child::failure_exit_code(&m), 1);
}

#[test]
fn lookup_gives_docker_exit_codes() {
    let root = tempfile::tempdir().unwrap();
    let mut s = docker_like_spec();
    let proc_ = s.process_mut().as_mut().unwrap();
    proc_.set_args(Some(vec!["nope".into()]));
    let plan = init_plan(&s, &ctx(root.path())).unwrap();
    let sys = RecordingSyscalls {
        files: vec![("/bin/nope".into(), libc::S_IFREG | 0o644)],
        not_executable: vec!["/bin/nope".into()],
        ..Default::default()
    };
    // Not executable in PATH counts as not found (Go's LookPath), 127.
    let m = child::lookup(&sys, &plan.process).unwrap_err();
    assert_eq!(child::failure_exit_code(&m), 127);

    let mut s = docker_like_spec();
    s.process_mut()
        .as_mut()
        .unwrap()
        .set_args(Some(vec!["/etc/passwd".into()]));
    let plan = init_plan(&s, &ctx(root.path())).unwrap();
    let sys = RecordingSyscalls {
        files: vec![("/etc/passwd".into(), libc::S_IFREG | 0o644)],
        not_executable: vec!["/etc/passwd".into()],
        ..Default::default()
    };
    let m = child::lookup(&sys, &plan.process).unwrap_err();
    assert_eq!(child::failure_exit_code(&m), 126);
    let sys = RecordingSyscalls {
        files: vec![("/etc/passwd".into(), libc::S_IFDIR | 0o755)],
        ..Default::default()
    };
    let m = child::lookup(&sys, &plan.process).unwrap_err();
    assert_eq!((m.kind, m.errno), (child::MSG_NOT_EXECUTABLE, libc::EISDIR));
}

#[test]
fn exec_helper_joins_cgroup_and_namespaces_then_forks_a_sibling() {
    let root = tempfile::tempdir().unwrap();
    let plan = init_plan(&docker_like_spec(), &ctx(root.path())).unwrap();
    let procs = c("/sys/fs/cgroup/berth/c1/cgroup.procs");
    let ns = [(20, libc::CLONE_NEWPID), (21, libc::CLONE_NEWNS)];
    let join = child::ExecJoin {
        cgroup_procs: Some(&procs),
        namespaces: &ns,
    };
    let sys = RecordingSyscalls {
        clone_result: 777,
        ..Default::default()
    };
    let argv = [std::ptr::null()];
    let mut f = fds();
    f.sync = -1;
    f.start = -1;
    let end = child::exec_sequence(&sys, &plan.process, &join, &f, &argv, &argv);
    assert_eq!(end, child::ExecEnd::HelperDone);
    let calls = sys.take();
    let expect_tail = [
        Call::OpenWrite("/sys/fs/cgroup/berth/c1/cgroup.procs".into()),
        Call::Write(100, b"0".to_vec()),
        Call::Setns(20, libc::CLONE_NEWPID),
        Call::Setns(21, libc::CLONE_NEWNS),
        Call::Clone(libc::CLONE_PARENT),
        Call::Write(
            13,
            Message {
                kind: child::MSG_PID,
                step: 777,
                errno: 0,
            }
            .encode()
            .to_vec(),
        ),
    ];
    assert_eq!(calls[calls.len() - expect_tail.len()..], expect_tail[..]);
}

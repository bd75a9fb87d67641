//! The VMM's orchestration against a scripted fake hypervisor (no `/dev/kvm`): vCPU threads,
//! exit dispatch to the buses, how each way of ending maps to an outcome, stopping vCPUs
//! that sit in the guest.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use berth_hypervisor::{
    CpuidEntry, Hypervisor, Irq, IrqTrigger, Registers, Result as HvResult, SpecialRegisters, Vcpu,
    VcpuExit, VcpuKicker, Vm,
};

use super::*;

#[derive(Clone, Debug)]
enum Step {
    Out(u16, Vec<u8>),
    In(u16, usize),
    MmioRead(u64, usize),
    MmioWrite(u64, Vec<u8>),
    Shutdown,
}

type Script = Vec<Step>;

struct FakeHv {
    scripts: Vec<Script>,
    reads: Arc<Mutex<Vec<Vec<u8>>>>,
}

struct FakeVm {
    scripts: Mutex<Vec<Script>>,
    reads: Arc<Mutex<Vec<Vec<u8>>>>,
    irqs: Arc<AtomicUsize>,
}

struct NoopIrq(Arc<AtomicUsize>);
impl IrqTrigger for NoopIrq {
    fn trigger(&self) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[derive(Default)]
struct Kick {
    kicked: Mutex<bool>,
    cv: Condvar,
}
impl VcpuKicker for Kick {
    fn kick(&self) {
        *self.kicked.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

struct FakeVcpu {
    steps: VecDeque<Step>,
    buf: Vec<u8>,
    pending_read: bool,
    reads: Arc<Mutex<Vec<Vec<u8>>>>,
    kick: Arc<Kick>,
    configured: bool,
}

impl Hypervisor for FakeHv {
    type Vm = FakeVm;
    fn create_vm(&self) -> HvResult<FakeVm> {
        Ok(FakeVm {
            scripts: Mutex::new(self.scripts.clone()),
            reads: self.reads.clone(),
            irqs: Arc::default(),
        })
    }
    fn supported_cpuid(&self) -> HvResult<Vec<CpuidEntry>> {
        Ok(vec![CpuidEntry {
            function: 1,
            ..Default::default()
        }])
    }
    fn max_vcpus(&self) -> usize {
        8
    }
}

impl Vm for FakeVm {
    type Vcpu = FakeVcpu;
    unsafe fn map_memory(&self, _: u32, _: u64, _: u64, _: *mut u8) -> HvResult<()> {
        Ok(())
    }
    fn irq_line(&self, _gsi: u32) -> HvResult<Irq> {
        Ok(Arc::new(NoopIrq(self.irqs.clone())))
    }
    fn create_vcpu(&self, id: u32) -> HvResult<FakeVcpu> {
        let steps = self
            .scripts
            .lock()
            .unwrap()
            .get(id as usize)
            .cloned()
            .unwrap_or_default();
        Ok(FakeVcpu {
            steps: steps.into(),
            buf: Vec::new(),
            pending_read: false,
            reads: self.reads.clone(),
            kick: Arc::default(),
            configured: false,
        })
    }
}

impl Vcpu for FakeVcpu {
    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> HvResult<()> {
        assert!(entries
            .iter()
            .any(|e| e.function == 1 && e.ecx & (1 << 31) != 0));
        Ok(())
    }
    fn set_msrs(&mut self, _: &[(u32, u64)]) -> HvResult<()> {
        Ok(())
    }
    fn set_registers(&mut self, r: &Registers) -> HvResult<()> {
        assert_eq!(r.rip, 0x100_0000, "boot vCPU starts at the PVH entry");
        self.configured = true;
        Ok(())
    }
    fn set_special_registers(&mut self, _: &SpecialRegisters) -> HvResult<()> {
        Ok(())
    }
    fn init_fpu(&mut self) -> HvResult<()> {
        Ok(())
    }
    fn init_local_apic(&mut self) -> HvResult<()> {
        Ok(())
    }
    fn kicker(&self) -> Arc<dyn VcpuKicker> {
        self.kick.clone()
    }
    fn registers(&self) -> HvResult<(Registers, SpecialRegisters)> {
        // The reset state, as a real vCPU that just faulted three times would show it.
        let mut s = SpecialRegisters {
            cr0: 0x6000_0010,
            ..Default::default()
        };
        s.cs.selector = 0xf000;
        Ok((
            Registers {
                rip: 0xfff0,
                rflags: 0x2,
                ..Default::default()
            },
            s,
        ))
    }
    fn run(&mut self) -> HvResult<VcpuExit<'_>> {
        if std::mem::take(&mut self.pending_read) {
            self.reads.lock().unwrap().push(self.buf.clone());
        }
        match self.steps.pop_front() {
            Some(Step::Out(port, data)) => {
                self.buf = data;
                Ok(VcpuExit::IoOut {
                    port,
                    data: &self.buf,
                })
            }
            Some(Step::In(port, len)) => {
                self.buf = vec![0xaa; len];
                self.pending_read = true;
                Ok(VcpuExit::IoIn {
                    port,
                    data: &mut self.buf,
                })
            }
            Some(Step::MmioRead(addr, len)) => {
                self.buf = vec![0xaa; len];
                self.pending_read = true;
                Ok(VcpuExit::MmioRead {
                    addr,
                    data: &mut self.buf,
                })
            }
            Some(Step::MmioWrite(addr, data)) => {
                self.buf = data;
                Ok(VcpuExit::MmioWrite {
                    addr,
                    data: &self.buf,
                })
            }
            Some(Step::Shutdown) => Ok(VcpuExit::Shutdown),
            None => {
                // "In the guest", or halted in it: a halted vCPU waits inside `run` (the
                // contract of `Vcpu::run`), until kicked.
                let mut k = self.kick.kicked.lock().unwrap();
                while !*k {
                    let (g, t) = self
                        .kick
                        .cv
                        .wait_timeout(k, Duration::from_secs(20))
                        .unwrap();
                    k = g;
                    if t.timed_out() {
                        panic!("vCPU was never kicked");
                    }
                }
                *k = false;
                Ok(VcpuExit::Interrupted)
            }
        }
    }
}

fn serial_text(text: &str) -> Vec<Step> {
    text.bytes().map(|b| Step::Out(0x3f8, vec![b])).collect()
}

fn run_script(
    scripts: Vec<Script>,
    configure: impl FnOnce(&mut VmConfig),
) -> (VmOutcome, Vec<Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, crate::x86_64::test_kernel::pvh_elf(0x100_0000)).unwrap();
    let mut config = VmConfig::new(&kernel);
    config.memory_mib = 32;
    config.cpus = scripts.len() as u8;
    config.console = ConsoleConfig::Null;
    configure(&mut config);
    let reads = Arc::new(Mutex::new(Vec::new()));
    let hv = FakeHv {
        scripts,
        reads: reads.clone(),
    };
    let outcome = run_on(&hv, &config).unwrap();
    let r = reads.lock().unwrap().clone();
    (outcome, r)
}

#[test]
fn reboot_ends_the_vm_and_stops_the_other_vcpus() {
    let mut boot = serial_text("Linux version 6.1\r\nberth-test: hello\n");
    boot.push(Step::In(0x3f8 + 5, 1)); // line status register
    boot.push(Step::In(0x80, 2)); // nothing there
    boot.push(Step::MmioRead(0xd000_0000, 4)); // first virtio device: magic
    boot.push(Step::MmioRead(0xd000_0008, 4)); // its device id
    boot.push(Step::MmioRead(0xc000_0000, 4)); // nothing there
    boot.push(Step::Out(0x64, vec![0xfe]));
    let (outcome, reads) = run_script(vec![boot, vec![], vec![]], |_| {});
    assert_eq!(outcome.reason, ExitReason::Reboot);
    assert!(outcome.success());
    assert_eq!(
        outcome.console_tail,
        vec![
            "Linux version 6.1".to_string(),
            "berth-test: hello".to_string()
        ]
    );
    assert_eq!(reads.len(), 5);
    assert_eq!(reads[0][0] & 0x60, 0x60, "transmitter empty");
    assert_eq!(reads[1], vec![0xff, 0xff]);
    assert_eq!(reads[2], 0x7472_6976u32.to_le_bytes());
    assert_eq!(reads[3], 4u32.to_le_bytes(), "virtio-rng is device type 4");
    assert_eq!(reads[4], vec![0, 0, 0, 0]);
}

#[test]
fn kernel_panic_then_reset_is_a_failure_with_the_panic_shown() {
    let mut boot = serial_text("Kernel panic - not syncing: Attempted to kill init!\n");
    boot.push(Step::Out(0x64, vec![0xfe]));
    let (outcome, _) = run_script(vec![boot], |c| c.rng = false);
    assert_eq!(outcome.reason, ExitReason::KernelPanic);
    assert_eq!(outcome.exit_code(), 1);
    assert!(outcome.console_tail[0].contains("Kernel panic - not syncing"));
}

#[test]
fn triple_fault_is_a_failure() {
    let (outcome, _) = run_script(vec![vec![], vec![Step::Shutdown]], |_| {});
    assert!(
        matches!(&outcome.reason, ExitReason::TripleFault { vcpu: 1, state }
            if state.contains("the hypervisor reset the vCPU")),
        "{:?}",
        outcome.reason
    );
    assert!(outcome
        .reason
        .to_string()
        .contains("triple-faulted (the guest crashed) at RIP=0xfff0"));
    assert!(!outcome.success());
}

#[test]
fn disks_and_vsock_appear_on_the_command_line_and_bus() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("d.img");
    std::fs::write(&disk, vec![0u8; 4096]).unwrap();
    let sock = dir.path().join("v.sock");
    let boot = vec![
        Step::MmioRead(0xd000_0008, 4),
        Step::MmioRead(0xd000_1008, 4),
        Step::MmioRead(0xd000_2008, 4),
        Step::Out(0x64, vec![0xfe]),
    ];
    let (outcome, reads) = run_script(vec![boot], |c| {
        c.disks = vec![DiskConfig {
            path: disk.clone(),
            read_only: true,
            ..Default::default()
        }];
        c.vsock = Some(VsockConfig {
            socket: sock.clone(),
            guest_cid: 3,
        });
    });
    assert_eq!(outcome.reason, ExitReason::Reboot);
    let ids: Vec<u32> = reads
        .iter()
        .map(|r| u32::from_le_bytes([r[0], r[1], r[2], r[3]]))
        .collect();
    assert_eq!(ids, vec![2, 19, 4], "block, vsock, rng in that order");
    assert!(
        !sock.exists(),
        "the vsock socket is removed when the VM ends"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn shares_come_after_the_other_devices_with_their_tag_in_config_space() {
    let dir = tempfile::tempdir().unwrap();
    let boot = vec![
        Step::MmioRead(0xd000_0008, 4),
        Step::MmioRead(0xd000_1008, 4),
        Step::MmioRead(0xd000_2008, 4),
        Step::MmioRead(0xd000_1100, 4),
        Step::MmioRead(0xd000_1124, 4),
        Step::MmioRead(0xd000_2100, 4),
        Step::MmioRead(0xd000_3008, 4),
        Step::Out(0x64, vec![0xfe]),
    ];
    let (outcome, reads) = run_script(vec![boot], |c| {
        c.shares = vec![
            ShareConfig {
                tag: "code".into(),
                path: dir.path().to_path_buf(),
                read_only: true,
            },
            ShareConfig {
                tag: "data".into(),
                path: dir.path().to_path_buf(),
                read_only: false,
            },
        ];
    });
    assert_eq!(outcome.reason, ExitReason::Reboot);
    let words: Vec<u32> = reads
        .iter()
        .map(|r| u32::from_le_bytes([r[0], r[1], r[2], r[3]]))
        .collect();
    assert_eq!(words[..3], [4, 26, 26], "rng, then the two shares");
    assert_eq!(&reads[3], b"code", "the first share's tag");
    assert_eq!(words[4], 1, "one request queue");
    assert_eq!(&reads[5], b"data", "the second share's tag");
    assert_eq!(words[6], 0, "no fourth device");
}

#[test]
fn random_mmio_traffic_against_real_devices_does_not_stop_the_vmm() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("d.img");
    std::fs::write(&disk, vec![0u8; 64 * 1024]).unwrap();
    let sock = dir.path().join("v.sock");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut steps = Vec::new();
    for i in 0..30_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let device = (x >> 40) % 3;
        // Mostly registers (where the state machine lives), some config space.
        let offset = if x & 0x100 == 0 {
            ((x >> 16) % 0x100) & !3
        } else {
            0x100 + (x >> 16) % 0x40
        };
        let addr = 0xd000_0000 + device * 0x1000 + offset;
        // Walk the status register through its stages now and then, so queues get set
        // up (with garbage addresses) and devices activated and notified.
        let value = match i % 7 {
            0 => [0u32, 1, 3, 11, 15][((x >> 8) % 5) as usize],
            _ => (x >> 32) as u32,
        };
        if i % 7 == 0 {
            steps.push(Step::MmioWrite(
                0xd000_0000 + device * 0x1000 + 0x70,
                value.to_le_bytes().to_vec(),
            ));
        } else if x & 1 == 0 {
            steps.push(Step::MmioWrite(addr, value.to_le_bytes().to_vec()));
        } else {
            steps.push(Step::MmioRead(addr, [1, 2, 4, 8][((x >> 4) & 3) as usize]));
        }
    }
    steps.push(Step::Out(0x64, vec![0xfe]));
    let (outcome, reads) = run_script(vec![steps], |c| {
        c.disks = vec![DiskConfig {
            path: disk.clone(),
            read_only: false,
            ..Default::default()
        }];
        c.vsock = Some(VsockConfig {
            socket: sock.clone(),
            guest_cid: 3,
        });
    });
    assert_eq!(
        outcome.reason,
        ExitReason::Reboot,
        "the VM ran to the guest's reboot"
    );
    assert!(!reads.is_empty());
    assert!(!sock.exists());
}

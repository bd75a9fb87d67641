//! The harness gives a working `/dev/kvm`: a VM made with kvm-ioctls runs a few
//! real-mode instructions that write to an I/O port and halt.

use kvm_ioctls::{Kvm, VcpuExit};

#[test]
#[ignore = "needs KVM: run by scripts/test.sh through scripts/with-kvm.sh"]
fn guest_code_writes_a_port_and_halts() {
    let kvm = Kvm::new().expect("open /dev/kvm");
    let vm = kvm.create_vm().expect("create a VM");

    // mov dx, 0x3f8; mov al, 'B'; add al, bl; out dx, al; mov al, 0x0a; out dx, al; hlt
    let code: [u8; 13] = [
        0xba, 0xf8, 0x03, 0xb0, b'B', 0x00, 0xd8, 0xee, 0xb0, 0x0a, 0xee, 0xf4, 0x00,
    ];
    let mem_size = 0x4000usize;
    let guest_addr = 0x1000u64;
    // SAFETY: an anonymous private mapping with no address hint; the result is checked.
    let load_addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            mem_size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(load_addr, libc::MAP_FAILED, "mmap guest memory");
    let region = kvm_bindings::kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: guest_addr,
        memory_size: mem_size as u64,
        userspace_addr: load_addr as u64,
        flags: 0,
    };
    // SAFETY: the region is a live mapping of mem_size bytes that outlives the VM.
    unsafe { vm.set_user_memory_region(region) }.expect("register guest memory");
    // SAFETY: the mapping is mem_size bytes long and the code is shorter.
    unsafe {
        std::ptr::copy_nonoverlapping(code.as_ptr(), load_addr as *mut u8, code.len());
    }

    let mut vcpu = vm.create_vcpu(0).expect("create a vCPU");
    let mut sregs = vcpu.get_sregs().expect("get sregs");
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).expect("set sregs");
    let mut regs = vcpu.get_regs().expect("get regs");
    regs.rip = guest_addr;
    regs.rbx = 1; // 'B' + 1 = 'C': the guest computes, not only copies
    regs.rflags = 2;
    vcpu.set_regs(&regs).expect("set regs");

    let mut written = Vec::new();
    let mut halted = false;
    for _ in 0..16 {
        match vcpu.run().expect("KVM_RUN") {
            VcpuExit::IoOut(port, data) => {
                assert_eq!(port, 0x3f8, "the guest wrote the port it was told to");
                written.extend_from_slice(data);
            }
            VcpuExit::Hlt => {
                halted = true;
                break;
            }
            other => panic!("unexpected exit {other:?}"),
        }
    }
    assert_eq!(written, b"C\n", "the guest's port writes");
    assert!(halted, "the guest halted");
    let regs = vcpu.get_regs().expect("get regs");
    assert_eq!(regs.rip, guest_addr + 12, "rip is just past the hlt");

    // SAFETY: unmapping the region mapped above; the VM no longer runs.
    unsafe { libc::munmap(load_addr, mem_size) };
}

//! Hypervisor boundary: Hypervisor, Vm and Vcpu traits with a KVM backend

//! Filters the hypervisor's supported CPUID into what one vCPU of a berth VM sees.
//!
//! Each vCPU is one core of a single socket (one thread per core): its APIC id is its
//! index. The hypervisor bit is set so the guest finds the paravirtual leaves
//! (0x4000_0000: KVM signature, 0x4000_0001: kvmclock and friends), which are passed
//! through. The PMU is hidden. x2apic can be hidden (nested setups where it hangs SMP).

use berth_hypervisor::CpuidEntry;

/// CPUID.1:ECX bit 21.
const ECX_X2APIC: u32 = 1 << 21;
/// CPUID.1:ECX bit 31: running on a hypervisor.
const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX bit 28: more than one logical processor per package.
const EDX_HTT: u32 = 1 << 28;
/// CPUID.0x8000_0001:ECX bit 22: AMD topology extensions (leaf 0x8000_001e).
const ECX_TOPOEXT: u32 = 1 << 22;
/// CPUID.0x8000_0001:ECX bit 1: AMD "core multi-processing legacy mode".
const ECX_CMP_LEGACY: u32 = 1 << 1;

/// Options of the filter.
#[derive(Clone, Copy, Debug)]
pub struct CpuidOptions {
    /// This vCPU's index (and APIC id).
    pub cpu: u8,
    /// vCPUs in the VM.
    pub cpu_count: u8,
    /// Clear the x2apic feature bit.
    pub hide_x2apic: bool,
}

fn is_amd(entries: &[CpuidEntry]) -> bool {
    entries.iter().any(|e| {
        e.function == 0
            && (e.ebx, e.edx, e.ecx)
                == (
                    u32::from_le_bytes(*b"Auth"),
                    u32::from_le_bytes(*b"enti"),
                    u32::from_le_bytes(*b"cAMD"),
                )
    })
}

/// Bits needed to number `n` things (0 for one).
fn bits_for(n: u8) -> u32 {
    if n <= 1 {
        0
    } else {
        u32::BITS - u32::from(n - 1).leading_zeros()
    }
}

/// The CPUID of vCPU `opts.cpu`, from the hypervisor's supported leaves.
pub fn filter(supported: &[CpuidEntry], opts: CpuidOptions) -> Vec<CpuidEntry> {
    let amd = is_amd(supported);
    let count = u32::from(opts.cpu_count.max(1));
    let apic_id = u32::from(opts.cpu);
    let mut out = Vec::with_capacity(supported.len());
    for e in supported {
        let mut e = *e;
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | (count << 16);
                e.ecx |= ECX_HYPERVISOR;
                if opts.hide_x2apic {
                    e.ecx &= !ECX_X2APIC;
                }
                if count > 1 {
                    e.edx |= EDX_HTT;
                } else {
                    e.edx &= !EDX_HTT;
                }
            }
            0x4 => {
                // Deterministic cache parameters: cores per package and sharing.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((count - 1) << 26) | (sharing << 14);
            }
            0xa => {
                // No PMU.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => {
                e.significant_index = true;
                e.edx = apic_id;
                match e.index {
                    0 => {
                        // SMT level: one thread per core.
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = 1 << 8;
                    }
                    1 => {
                        // Core level: all vCPUs in one package.
                        e.eax = bits_for(opts.cpu_count);
                        e.ebx = count;
                        e.ecx = (2 << 8) | 1;
                    }
                    i => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = i;
                    }
                }
            }
            0x8000_0001 if amd => {
                e.ecx &= !ECX_TOPOEXT;
                if count > 1 {
                    e.ecx |= ECX_CMP_LEGACY;
                } else {
                    e.ecx &= !ECX_CMP_LEGACY;
                }
            }
            0x8000_0008 if amd => {
                // NC: cores per package minus one; let the guest size the APIC id field.
                e.ecx = (e.ecx & !0xf0ff) | (count - 1);
            }
            0x8000_001e if amd => continue,
            _ => {}
        }
        out.push(e);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            significant_index: false,
            eax: 0xffff_ffff,
            ebx: 0xffff_ffff,
            ecx: 0xffff_ffff,
            edx: 0xffff_ffff,
        }
    }

    fn find(v: &[CpuidEntry], function: u32, index: u32) -> CpuidEntry {
        *v.iter()
            .find(|e| e.function == function && e.index == index)
            .expect("leaf present")
    }

    #[test]
    fn per_vcpu_topology_and_flags() {
        let supported = vec![
            leaf(0x1, 0),
            leaf(0x4, 0),
            leaf(0xa, 0),
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(0x4000_0001, 0),
        ];
        let v = filter(
            &supported,
            CpuidOptions {
                cpu: 1,
                cpu_count: 2,
                hide_x2apic: true,
            },
        );
        let l1 = find(&v, 1, 0);
        assert_eq!(l1.ebx >> 24, 1);
        assert_eq!((l1.ebx >> 16) & 0xff, 2);
        assert_eq!(l1.ecx & ECX_X2APIC, 0);
        assert_ne!(l1.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & EDX_HTT, 0);
        assert_eq!(find(&v, 0xa, 0).eax, 0);
        let smt = find(&v, 0xb, 0);
        assert_eq!((smt.ebx, smt.ecx, smt.edx), (1, 1 << 8, 1));
        assert!(smt.significant_index, "leaf 0xb depends on its subleaf");
        assert!(!l1.significant_index);
        let core = find(&v, 0xb, 1);
        assert_eq!((core.eax, core.ebx, core.ecx), (1, 2, (2 << 8) | 1));
        assert_eq!(find(&v, 0xb, 2).ebx, 0);
        assert_eq!(find(&v, 4, 0).eax >> 26, 1);
        // Paravirtual leaves pass through untouched.
        assert_eq!(find(&v, 0x4000_0001, 0), leaf(0x4000_0001, 0));

        let single = filter(
            &supported,
            CpuidOptions {
                cpu: 0,
                cpu_count: 1,
                hide_x2apic: false,
            },
        );
        let l1 = find(&single, 1, 0);
        assert_ne!(l1.ecx & ECX_X2APIC, 0);
        assert_eq!(l1.edx & EDX_HTT, 0);
        assert_eq!(l1.ebx >> 24, 0);
    }

    #[test]
    fn amd_topology() {
        let mut vendor = leaf(0, 0);
        vendor.ebx = u32::from_le_bytes(*b"Auth");
        vendor.edx = u32::from_le_bytes(*b"enti");
        vendor.ecx = u32::from_le_bytes(*b"cAMD");
        let supported = vec![
            vendor,
            leaf(0x8000_0001, 0),
            leaf(0x8000_0008, 0),
            leaf(0x8000_001e, 0),
        ];
        let v = filter(
            &supported,
            CpuidOptions {
                cpu: 0,
                cpu_count: 4,
                hide_x2apic: false,
            },
        );
        assert_eq!(find(&v, 0x8000_0001, 0).ecx & ECX_TOPOEXT, 0);
        assert_eq!(find(&v, 0x8000_0008, 0).ecx & 0xf0ff, 3);
        assert!(!v.iter().any(|e| e.function == 0x8000_001e));
    }

    #[test]
    fn bit_widths() {
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(32), 5);
    }
}

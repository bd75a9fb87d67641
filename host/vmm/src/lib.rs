//! The berth micro-VM monitor: boot, memory, vCPUs and the device bus

//! berth guest agent: PID 1 of the micro-VM, serving the host over vsock

fn main() {}

//! `mkscratch PATH BYTES`: formats a new sparse file PATH of BYTES bytes as an empty ext4,
//! as berth makes each container's scratch disk (scripts/bench-scratch.sh times it).

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(Ok(bytes))) = (args.get(1), args.get(2).map(|b| b.parse::<u64>())) else {
        eprintln!("usage: mkscratch PATH BYTES");
        return std::process::ExitCode::from(2);
    };
    match berth_ext4::format_new(std::path::Path::new(path), bytes) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkscratch: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

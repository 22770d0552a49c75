//! `rollcall-normalizer`: the normalizer as its own small binary (for container images).
//! Same code as `rollcall normalizer`.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "rollcall-normalizer",
    version,
    about = "Raw SIS records in, canonical events out, exactly once."
)]
struct Args {
    /// The TOML configuration file.
    #[arg(long, short, env = "ROLLCALL_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = Args::parse();
    if let Err(e) = rollcall_normalizer::main_with(args.config.as_deref(), args.json_logs) {
        eprintln!("rollcall-normalizer: error: {e:#}");
        std::process::exit(1);
    }
}

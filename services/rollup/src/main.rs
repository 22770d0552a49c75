//! `rollcall-rollup`: the rollup as its own small binary (for container images).
//! Same code as `rollcall rollup`.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "rollcall-rollup",
    version,
    about = "Exact per-student chronic-absence state, written to ClickHouse."
)]
struct Args {
    /// The TOML configuration file.
    #[arg(long, short, env = "ROLLCALL_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines.
    #[arg(long)]
    json_logs: bool,
    /// Compute metrics as of this date (YYYY-MM-DD) instead of today.
    #[arg(long)]
    as_of: Option<String>,
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = Args::parse();
    if let Err(e) = rollcall_rollup::main_with(args.config.as_deref(), args.json_logs, args.as_of) {
        eprintln!("rollcall-rollup: error: {e:#}");
        std::process::exit(1);
    }
}

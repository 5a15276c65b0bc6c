//! The `fixpoint` command line. Only `bench scan` is wired here so far.

use clap::{Parser, Subcommand};
use fixpoint::bench::cli::{BenchScanArgs, bench_scan_cli};

#[derive(Parser)]
#[command(name = "fixpoint", about = "A from-scratch CPU tensor engine for Fixed-Point RNNs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: BenchCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Scan kernels against a STREAM triad.
    Scan(BenchScanArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { which: BenchCommand::Scan(args) } => bench_scan_cli(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

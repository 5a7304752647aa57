//! The `sluice` command line. Thin: every command lives in the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use sluice::demo::{self, DemoConfig};

#[derive(Parser, Debug)]
#[command(
    name = "sluice",
    version,
    about = "Drain queues through I/O-heavy jobs, many in flight"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the worker pool at work on simulated deliveries (no server needed).
    Demo {
        /// Jobs to run.
        #[arg(long, default_value_t = 20_000)]
        jobs: u64,
        /// Jobs in flight at once.
        #[arg(long, default_value_t = 1_000)]
        concurrency: usize,
        /// Jobs in flight at once per destination.
        #[arg(long, default_value_t = 300)]
        per_destination: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match cli.command {
        Command::Demo {
            jobs,
            concurrency,
            per_destination,
        } => {
            anyhow::ensure!(
                concurrency > 0 && per_destination > 0,
                "--concurrency and --per-destination must be at least 1"
            );
            let cfg = DemoConfig {
                jobs,
                concurrency,
                per_destination,
            };
            eprintln!(
                "sluice demo: {jobs} jobs to 5 destinations (20-50 ms each, 0.5 % fail), \
                 {concurrency} in flight, at most {per_destination} per destination"
            );
            let summary = runtime.block_on(async move { demo::run(&cfg).await });
            println!("{}", summary.render());
        }
    }
    Ok(())
}

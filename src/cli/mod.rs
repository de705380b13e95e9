//! The `swimd` command line: parse, call the library, print.

mod simulate;

use clap::{Parser, Subcommand};

/// swimd: membership and failure detection (SWIM + Lifeguard over QUIC).
#[derive(Debug, Parser)]
#[command(name = "swimd", version = crate::VERSION, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a deterministic whole-cluster simulation and print its figures as JSON.
    Simulate(simulate::Args),
}

/// Runs the command line; the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => simulate::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("swimd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

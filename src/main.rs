//! The `swimd` binary: every subcommand lives in `swimd::cli`.

mod math;

fn main() -> std::process::ExitCode {
    swimd::cli::main()
}

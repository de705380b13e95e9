//! The `swimd` binary: every subcommand lives in `swimd::cli`.

fn main() -> std::process::ExitCode {
    swimd::cli::main()
}

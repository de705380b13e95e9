//! The `swimd` command line: parse, call the library, print.

mod agent;
mod client;
mod demo;
mod hooks;
mod http;
mod render;
mod simulate;
pub mod sse;
mod tls;

use std::process::ExitCode;

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
    /// Run the agent (the daemon).
    Agent(agent::AgentArgs),
    /// List members as the agent sees them.
    Members(client::MembersArgs),
    /// Ask the agent to join a cluster through these addresses.
    Join(client::JoinArgs),
    /// Make the agent leave the cluster gracefully and exit.
    Leave(client::LeaveArgs),
    /// Mark a failed member as left everywhere.
    ForceLeave(client::ForceLeaveArgs),
    /// Put this member in planned maintenance, or take it out.
    #[command(subcommand)]
    Maint(client::MaintCommand),
    /// Follow membership events.
    Watch(client::WatchArgs),
    /// Is the agent joined and healthy? (exit 0 if so)
    Health(client::HealthArgs),
    /// List, test or replay the agent's hooks.
    #[command(subcommand)]
    Hooks(hooks::HooksCommand),
    /// Check a configuration file (exit 78 if invalid).
    Validate(agent::ValidateArgs),
    /// Create the cluster CA and node certificates.
    #[command(subcommand)]
    Tls(tls::TlsCommand),
    /// Run a deterministic whole-cluster simulation and print its figures as JSON.
    Simulate(simulate::Args),
    /// Start five agents on loopback, crash one, restart it, and clean up.
    Demo(demo::DemoArgs),
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    abort_on_panic();
    crate::net::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent(args) => Ok(agent::agent(args)),
        Command::Validate(args) => Ok(agent::validate(args)),
        Command::Simulate(args) => simulate::run(args),
        Command::Tls(cmd) => tls::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Members(args) => client_runtime(client::members(args)),
        Command::Join(args) => client_runtime(client::join(args)),
        Command::Leave(args) => client_runtime(client::leave(args)),
        Command::ForceLeave(args) => client_runtime(client::force_leave(args)),
        Command::Maint(cmd) => client_runtime(client::maint(cmd)),
        Command::Watch(args) => client_runtime(client::watch(args)),
        Command::Health(args) => client_runtime(client::health(args)),
        Command::Hooks(cmd) => client_runtime(hooks::run(cmd)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("swimd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A panic is a bug, and the agent must not run on without the task that panicked (it
/// would still feed the systemd watchdog): log it and exit at once, so systemd restarts
/// the agent. The `dist` build (`panic = "abort"`) does the same without unwinding code.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("panic: {info}");
        report(info);
        std::process::abort();
    }));
}

fn client_runtime(
    future: impl std::future::Future<Output = anyhow::Result<ExitCode>>,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future)
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    /// Runs itself in a child process: a panic must take the whole process down.
    #[test]
    fn a_panic_in_any_task_aborts_the_process() {
        if std::env::var_os("SWIMD_TEST_PANIC").is_some() {
            abort_on_panic();
            // As in a spawned tokio task: not the main thread.
            let _ = std::thread::spawn(|| panic!("on purpose")).join();
            std::process::exit(0);
        }
        let exe = std::env::current_exe().expect("test binary");
        let status = std::process::Command::new(exe)
            .args([
                "--exact",
                "cli::tests::a_panic_in_any_task_aborts_the_process",
            ])
            .env("SWIMD_TEST_PANIC", "1")
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run the test binary");
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    }
}

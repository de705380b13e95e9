//! `swimd agent` and `swimd validate`: one validation path for both.

use std::path::PathBuf;
use std::process::ExitCode;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt, reload};

use crate::config::{self, LogFormat};

#[derive(Debug, clap::Args)]
pub(super) struct AgentArgs {
    /// The configuration file (see conf/swimd.toml).
    #[arg(
        long,
        short,
        env = "SWIMD_CONFIG",
        default_value = "/etc/swimd/swimd.toml"
    )]
    config: PathBuf,
    /// Log format, overriding `[log] format`.
    #[arg(long, value_parser = ["text", "json"])]
    log_format: Option<String>,
}

#[derive(Debug, clap::Args)]
pub(super) struct ValidateArgs {
    /// The configuration file to check.
    file: PathBuf,
}

pub(super) fn validate(args: ValidateArgs) -> ExitCode {
    match config::load(&args.file) {
        Ok(_) => {
            println!("{}: ok", args.file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("swimd: {e}");
            ExitCode::from(config::EXIT_CONFIG)
        }
    }
}

pub(super) fn agent(args: AgentArgs) -> ExitCode {
    let config = match config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("swimd: {e}");
            return ExitCode::from(config::EXIT_CONFIG);
        }
    };
    let json = match args.log_format.as_deref() {
        Some(format) => format == "json",
        None => config.log.format == LogFormat::Json,
    };
    let reload_log = init_logging(&config.log.level, json);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("swimd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Bound before the agent starts: a port in use is the first thing reported.
    let listeners = match crate::serve::Listeners::bind(&config) {
        Ok(listeners) => Box::new(listeners),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("swimd: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::agent::run(config, reload_log, listeners)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(crate::agent::AgentError::Interrupted) => ExitCode::from(130),
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("swimd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, human-readable or JSON; `RUST_LOG` wins over the configured level.
/// Returns how to change the level later (SIGHUP).
fn init_logging(level: &str, json: bool) -> crate::agent::LogReloader {
    let from_env = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::try_new(from_env.as_deref().unwrap_or(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let text = (!json).then(|| fmt::layer().with_writer(std::io::stderr));
    let json = json.then(|| {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init();
    Box::new(move |level: &str| match EnvFilter::try_new(level) {
        Ok(filter) => handle.reload(filter).is_ok(),
        Err(_) => false,
    })
}

//! `swimd tls`: make the cluster CA and the node certificates for mutual TLS.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::net::tls;

#[derive(Debug, clap::Subcommand)]
pub(super) enum TlsCommand {
    /// Create a cluster CA: DIR/ca.pem and DIR/ca-key.pem (keep the key off the nodes).
    Init {
        /// Directory for the CA files; created (mode 0700) if missing.
        #[arg(long)]
        dir: PathBuf,
        /// Cluster name, recorded in the CA's common name.
        #[arg(long, default_value = "swimd")]
        cluster: String,
    },
    /// Issue a node certificate from the CA in DIR: DIR/NAME.pem and DIR/NAME-key.pem.
    Issue {
        /// The node's name, as in its configuration: 1 to 64 of [A-Za-z0-9._-].
        name: String,
        /// Directory holding the CA (from `swimd tls init`); the new files go there too.
        #[arg(long)]
        dir: PathBuf,
        /// An address the node is reached at, added to the certificate; repeatable.
        #[arg(long = "ip", value_name = "IP")]
        ips: Vec<IpAddr>,
        /// Validity in days, from now (an hour earlier, for clock skew). Default: 1826.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_525))]
        days: Option<u32>,
    },
    /// Revoke node NAME's certificate (DIR/NAME.pem): writes DIR/crl.pem, signed by the CA in
    /// DIR and keeping earlier revocations; copy it to every node's `tls.crl`, then SIGHUP.
    Revoke {
        /// The node whose certificate to revoke.
        name: String,
        /// Directory holding the CA and the node's certificate.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Runs one `swimd tls` subcommand, printing a line per file written.
pub(super) fn run(cmd: TlsCommand) -> anyhow::Result<ExitCode> {
    let written = match cmd {
        TlsCommand::Init { dir, cluster } => tls::init_ca(&dir, &cluster)?,
        TlsCommand::Issue {
            name,
            dir,
            ips,
            days,
        } => tls::issue_days(&dir, &name, &ips, days)?,
        TlsCommand::Revoke { name, dir } => vec![tls::revoke(&dir, &name)?],
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

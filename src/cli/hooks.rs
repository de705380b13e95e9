//! `swimd hooks list|test|replay`: the agent's hooks, through its API.

use std::io::Write;
use std::process::ExitCode;

use reqwest::Method;

use super::client::ApiArgs;
use super::http::{ApiClient, REQUEST_TIMEOUT};
use super::render::{print, printable, utc_time};
use crate::api::json::{HookTestRequest, HooksJson, ReplayJson, ReplayRequest};

/// `swimd hooks`.
#[derive(Debug, clap::Subcommand)]
pub(super) enum HooksCommand {
    /// List hooks with their outbox depth, dead letters and last success.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Make one delivery now with a sample event (not through the outbox). Careful: a
    /// failover hook really acts on the member named.
    Test {
        #[command(flatten)]
        api: ApiArgs,
        /// The hook
        name: String,
        /// Event type to send (default: the hook's first event)
        #[arg(long)]
        event: Option<String>,
        /// Member the sample event is about (default: the agent itself)
        #[arg(long)]
        member: Option<String>,
    },
    /// Move dead letters back to the outbox to be delivered again.
    Replay {
        #[command(flatten)]
        api: ApiArgs,
        /// Only this hook's dead letters
        name: Option<String>,
    },
}

/// Runs a `hooks` subcommand.
pub(super) async fn run(command: HooksCommand) -> anyhow::Result<ExitCode> {
    run_to(command, &mut std::io::stdout()).await
}

async fn run_to(command: HooksCommand, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    match command {
        HooksCommand::List { api } => {
            let client = ApiClient::new(&api, Some(REQUEST_TIMEOUT))?;
            let list: HooksJson = client
                .call(Method::GET, &["v1", "hooks"], None::<&()>)
                .await?;
            print(out, &render(&list))?;
        }
        HooksCommand::Test {
            api,
            name,
            event,
            member,
        } => {
            let client = ApiClient::new(&api, Some(REQUEST_TIMEOUT))?;
            let body = HookTestRequest { event, member };
            let status: crate::api::json::StatusJson = client
                .call(
                    Method::POST,
                    &["v1", "hooks", name.as_str(), "test"],
                    Some(&body),
                )
                .await?;
            print(out, &format!("{}\n", printable(&status.status)))?;
        }
        HooksCommand::Replay { api, name } => {
            let client = ApiClient::new(&api, Some(REQUEST_TIMEOUT))?;
            let body = ReplayRequest { hook: name };
            let replayed: ReplayJson = client
                .call(Method::POST, &["v1", "hooks", "replay"], Some(&body))
                .await?;
            print(out, &format!("replayed {}\n", replayed.replayed))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn render(list: &HooksJson) -> String {
    let mut rows = vec![[
        "NAME".to_string(),
        "KIND".into(),
        "SCOPE".into(),
        "ENABLED".into(),
        "PENDING".into(),
        "DEAD".into(),
        "LAST SUCCESS".into(),
        "LAST ERROR".into(),
    ]];
    for h in &list.hooks {
        rows.push([
            printable(&h.name),
            h.kind.clone(),
            h.scope.clone(),
            if h.enabled { "yes" } else { "no (410)" }.into(),
            h.pending.to_string(),
            h.dead.to_string(),
            h.last_success.map_or("-".into(), utc_time),
            h.last_error.as_deref().map_or("-".into(), printable),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::HookStatus;

    #[test]
    fn list_is_a_table_with_a_header() {
        let text = render(&HooksJson {
            hooks: vec![HookStatus {
                name: "lb".into(),
                kind: "webhook".into(),
                scope: "cluster".into(),
                events: vec!["member.failed".into()],
                enabled: true,
                pending: 2,
                dead: 1,
                last_success: None,
                last_error: Some("HTTP 503".into()),
            }],
        });
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME  KIND"));
        assert!(lines[1].starts_with("lb    webhook  cluster  yes"));
        assert!(lines[1].ends_with("HTTP 503"));
    }
}

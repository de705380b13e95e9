//! The subcommands that talk to a running agent over its HTTP API: `members`, `join`,
//! `leave`, `force-leave`, `watch` and `health`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use futures_util::StreamExt;
use regex::Regex;
use reqwest::{Method, StatusCode};

use super::http::REQUEST_TIMEOUT;
use super::http::{ApiClient, describe};
use super::render::{event_line, print, printable, render_table};
use super::sse::{SseDecoder, SseEvent};
use crate::api::json::{
    ErrorJson, EventJson, HealthJson, JoinJson, JoinRequest, MemberJson, MembersJson,
};
use crate::api::{has_tags, parse_tag_filter};

/// Exit status of `members` when nothing matches (as grep does).
const NOTHING_MATCHED: u8 = 2;

/// Where the agent's API is and how to authenticate to it.
#[derive(Debug, clap::Args)]
pub(super) struct ApiArgs {
    /// API address
    #[arg(long, env = "SWIMD_API", default_value = "127.0.0.1:7947")]
    pub api: String,
    /// Bearer token
    #[arg(long, env = "SWIMD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `swimd members`.
#[derive(Debug, clap::Args)]
pub(super) struct MembersArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Only members whose state matches this regex (whole word), e.g. `alive|suspect`
    #[arg(long)]
    state: Option<String>,
    /// Only members with this tag, as k=v; repeatable (all must match)
    #[arg(long, value_name = "K=V")]
    tag: Vec<String>,
    /// Output: an aligned table, or `{"members":[...]}`
    #[arg(long, value_enum, default_value = "table")]
    format: MembersFormat,
    /// Table: also each member's release and packet format versions (`w1 r1-1`: writes
    /// version 1, reads 1 to 1; `-` for v0.1.0 agents)
    #[arg(long)]
    detailed: bool,
}

/// How `members` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MembersFormat {
    /// Aligned columns for people.
    Table,
    /// `{"members":[...]}` for programs.
    Json,
}

/// `swimd join`.
#[derive(Debug, clap::Args)]
pub(super) struct JoinArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Members to contact, as host:port
    #[arg(required = true, num_args = 1.., value_name = "HOST:PORT")]
    addrs: Vec<String>,
}

/// `swimd leave`.
#[derive(Debug, clap::Args)]
pub(super) struct LeaveArgs {
    #[command(flatten)]
    api: ApiArgs,
}

/// `swimd maint on|off`.
#[derive(Debug, clap::Subcommand)]
pub(super) enum MaintCommand {
    /// Drain this member for planned work: it stays a member, but load balancers stop
    /// sending it new work, and its failure fires no failover hook (kept across restarts)
    On {
        #[command(flatten)]
        api: ApiArgs,
        /// Why (shown by `swimd members` and in hook payloads); at most 256 bytes
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// End maintenance: the member is back in rotation once its checks pass
    Off {
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `swimd force-leave`.
#[derive(Debug, clap::Args)]
pub(super) struct ForceLeaveArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The failed member to mark as left
    name: String,
}

/// `swimd watch`.
#[derive(Debug, clap::Args)]
pub(super) struct WatchArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// Output: a readable line per event, or its JSON
    #[arg(long, value_enum, default_value = "text")]
    format: WatchFormat,
}

/// How `watch` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WatchFormat {
    /// One readable line per event.
    Text,
    /// The event's JSON, one per line.
    Json,
}

/// `swimd health`.
#[derive(Debug, clap::Args)]
pub(super) struct HealthArgs {
    #[command(flatten)]
    api: ApiArgs,
}

/// Lists members, filtered; exit status 2 when none match.
pub(super) async fn members(args: MembersArgs) -> anyhow::Result<ExitCode> {
    members_to(args, &mut std::io::stdout()).await
}

/// Asks the agent to join through the given members.
pub(super) async fn join(args: JoinArgs) -> anyhow::Result<ExitCode> {
    join_to(args, &mut std::io::stdout()).await
}

/// Asks the agent to leave the cluster gracefully (it then exits).
pub(super) async fn leave(args: LeaveArgs) -> anyhow::Result<ExitCode> {
    leave_to(args, &mut std::io::stdout()).await
}

/// Asks the agent to mark a failed member as left everywhere.
pub(super) async fn force_leave(args: ForceLeaveArgs) -> anyhow::Result<ExitCode> {
    force_leave_to(args, &mut std::io::stdout()).await
}

/// Turns maintenance on or off.
pub(super) async fn maint(command: MaintCommand) -> anyhow::Result<ExitCode> {
    maint_to(command, &mut std::io::stdout()).await
}

async fn maint_to(command: MaintCommand, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let path = ["v1", "self", "maintenance"];
    match command {
        MaintCommand::On { api, reason } => {
            // Said here, before the network, as the agent would say it.
            crate::agent::handle::validate_maintenance_reason(&reason)
                .map_err(anyhow::Error::msg)?;
            let client = ApiClient::new(&api, Some(REQUEST_TIMEOUT))?;
            let body = crate::api::json::MaintenanceRequest { reason };
            let _: serde_json::Value = client.call(Method::PUT, &path, Some(&body)).await?;
            print(out, "maintenance on\n")?;
        }
        MaintCommand::Off { api } => {
            let client = ApiClient::new(&api, Some(REQUEST_TIMEOUT))?;
            let _: serde_json::Value = client.call(Method::DELETE, &path, None::<&()>).await?;
            print(out, "maintenance off\n")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints membership events as they happen, until interrupted or the agent is gone.
pub(super) async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    watch_to(
        args,
        &mut std::io::stdout(),
        Reconnect::default(),
        interrupted(),
    )
    .await
}

/// Prints `ok` (exit 0) or `unhealthy: <reason>` (exit 1).
pub(super) async fn health(args: HealthArgs) -> anyhow::Result<ExitCode> {
    health_to(args, &mut std::io::stdout()).await
}

async fn members_to(args: MembersArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    // Bad filters are the user's mistake: say so before touching the network.
    let filter = MemberFilter::new(args.state.as_deref(), &args.tag)?;
    let client = ApiClient::new(&args.api, Some(REQUEST_TIMEOUT))?;
    let listed: MembersJson = client
        .call(Method::GET, &["v1", "members"], None::<&()>)
        .await?;
    let members = filter.select(listed.members);
    if members.is_empty() {
        eprintln!("swimd: no members match");
        return Ok(ExitCode::from(NOTHING_MATCHED));
    }
    let text = match args.format {
        MembersFormat::Table => render_table(&members, args.detailed),
        MembersFormat::Json => format!("{}\n", serde_json::to_string(&MembersJson { members })?),
    };
    print(out, &text)?;
    Ok(ExitCode::SUCCESS)
}

async fn join_to(args: JoinArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.api, Some(REQUEST_TIMEOUT))?;
    let body = JoinRequest { addrs: args.addrs };
    let joined: JoinJson = client
        .call(Method::POST, &["v1", "join"], Some(&body))
        .await?;
    print(out, &format!("contacted {}\n", joined.contacted))?;
    Ok(ExitCode::SUCCESS)
}

async fn leave_to(args: LeaveArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.api, Some(REQUEST_TIMEOUT))?;
    let _: serde_json::Value = client
        .call(Method::POST, &["v1", "leave"], None::<&()>)
        .await?;
    print(out, "leaving\n")?;
    Ok(ExitCode::SUCCESS)
}

async fn force_leave_to(args: ForceLeaveArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.api, Some(REQUEST_TIMEOUT))?;
    let path = ["v1", "members", args.name.as_str(), "force-leave"];
    let _: serde_json::Value = client.call(Method::POST, &path, None::<&()>).await?;
    print(out, &format!("{} marked left\n", printable(&args.name)))?;
    Ok(ExitCode::SUCCESS)
}

async fn health_to(args: HealthArgs, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.api, Some(REQUEST_TIMEOUT))?;
    let response = client
        .send(client.request(Method::GET, &["v1", "health"])?)
        .await?;
    let status = response.status();
    if status != StatusCode::OK && status != StatusCode::SERVICE_UNAVAILABLE {
        return Err(client.error_from(response).await);
    }
    let body = response
        .bytes()
        .await
        .map_err(|e| client.broken_answer(&e))?;
    // A 503 carries the agent's health, or (agent stopping) an error: both are unhealthy.
    let (healthy, reason) = match serde_json::from_slice::<HealthJson>(&body) {
        Ok(health) => (
            health.status == "ok" && status == StatusCode::OK,
            health.reason,
        ),
        Err(_) => match serde_json::from_slice::<ErrorJson>(&body) {
            Ok(error) if status == StatusCode::SERVICE_UNAVAILABLE => (false, error.error),
            _ => bail!(
                "the agent API at {} answered {status} with an unexpected body",
                client.api
            ),
        },
    };
    if healthy {
        print(out, "ok\n")?;
        Ok(ExitCode::SUCCESS)
    } else {
        let reason = if reason.is_empty() {
            "no reason given".to_string()
        } else {
            printable(&reason)
        };
        print(out, &format!("unhealthy: {reason}\n"))?;
        Ok(ExitCode::FAILURE)
    }
}

/// Completes on Ctrl-C (never, if the handler cannot be installed).
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// How `watch` retries when the stream drops.
#[derive(Debug, Clone, Copy)]
struct Reconnect {
    /// Wait before the first retry; doubles after each failure.
    first_delay: Duration,
    /// The longest wait between retries.
    max_delay: Duration,
    /// Give up after failing for this long.
    give_up_after: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            give_up_after: Duration::from_secs(10),
        }
    }
}

/// How one connection to the event stream ended.
enum Attempt {
    /// Our stdout is gone (`swimd watch | head`): stop quietly.
    OutputClosed,
    /// The connection failed or the stream ended; `served` if it got as far as a 200.
    Dropped { served: bool, cause: String },
}

async fn watch_to(
    args: WatchArgs,
    out: &mut impl Write,
    reconnect: Reconnect,
    interrupted: impl Future<Output = ()>,
) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(&args.api, None)?;
    let mut printer = EventPrinter {
        format: args.format,
        last_id: None,
    };
    let mut served_once = false;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut delay = reconnect.first_delay;
    tokio::pin!(interrupted);
    loop {
        let attempt = tokio::select! {
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
            attempt = follow_events(&client, &mut printer, out, served_once) => attempt?,
        };
        let cause = match attempt {
            Attempt::OutputClosed => return Ok(ExitCode::SUCCESS),
            Attempt::Dropped { served, cause } => {
                if served {
                    served_once = true;
                    failing_since = None;
                    delay = reconnect.first_delay;
                }
                cause
            }
        };
        let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= reconnect.give_up_after {
            bail!(
                "lost the agent API at {}: {cause} (gave up reconnecting after {}s)",
                client.api,
                reconnect.give_up_after.as_secs_f64()
            );
        }
        tokio::select! {
            _ = &mut interrupted => return Ok(ExitCode::SUCCESS),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(reconnect.max_delay);
    }
}

/// Follows `/v1/events` once, resuming after the last event printed. Errors only on what
/// retrying cannot fix: an unreachable agent on the very first try, or an HTTP error.
async fn follow_events(
    client: &ApiClient,
    printer: &mut EventPrinter,
    out: &mut impl Write,
    served_before: bool,
) -> anyhow::Result<Attempt> {
    let mut request = client
        .request(Method::GET, &["v1", "events"])?
        .header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some(id) = printer.last_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) if !served_before => return Err(client.unreachable(&e)),
        Err(e) => {
            return Ok(Attempt::Dropped {
                served: false,
                cause: describe(&e),
            });
        }
    };
    if !response.status().is_success() {
        return Err(client.error_from(response).await);
    }
    let mut decoder = SseDecoder::default();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                return Ok(Attempt::Dropped {
                    served: true,
                    cause: describe(&e),
                });
            }
        };
        let events = match decoder.feed(&chunk) {
            Ok(events) => events,
            Err(e) => {
                return Ok(Attempt::Dropped {
                    served: true,
                    cause: e,
                });
            }
        };
        for event in events {
            if !printer.show(&event, out)? {
                return Ok(Attempt::OutputClosed);
            }
        }
    }
    Ok(Attempt::Dropped {
        served: true,
        cause: "the event stream ended".to_string(),
    })
}

/// Prints events in the chosen format and remembers where to resume.
struct EventPrinter {
    format: WatchFormat,
    last_id: Option<u64>,
}

impl EventPrinter {
    /// Prints one event; false once stdout is closed.
    fn show(&mut self, event: &SseEvent, out: &mut impl Write) -> anyhow::Result<bool> {
        if event.event == "lagged" {
            eprintln!(
                "swimd: missed {} events (this watcher fell behind the agent)",
                printable(&event.data)
            );
            return Ok(true);
        }
        if let Some(id) = event.id.as_deref().and_then(|id| id.parse().ok()) {
            self.last_id = Some(id);
        }
        let line = match self.format {
            WatchFormat::Text => {
                serde_json::from_str::<EventJson>(&event.data).map(|e| event_line(&e))
            }
            // Printed as the agent sent it, so field order and fields newer than this CLI
            // survive; line breaks in valid JSON can only be whitespace.
            WatchFormat::Json => serde_json::from_str::<serde::de::IgnoredAny>(&event.data)
                .map(|_| event.data.replace(['\n', '\r'], " ")),
        };
        match line {
            Ok(line) => print(out, &format!("{line}\n")),
            Err(e) => {
                eprintln!(
                    "swimd: skipped an event the agent sent that this swimd cannot read: {e}"
                );
                Ok(true)
            }
        }
    }
}

/// `members`' filters: a regex on the whole state word, and tags that must all match.
#[derive(Debug)]
struct MemberFilter {
    state: Option<Regex>,
    tags: Vec<(String, String)>,
}

impl MemberFilter {
    fn new(state: Option<&str>, tags: &[String]) -> anyhow::Result<Self> {
        let state = state
            .map(|pattern| {
                // Checked alone first, so the error points into what the user typed.
                if let Err(e) = Regex::new(pattern) {
                    let text = e.to_string();
                    // The last line of a syntax error says what is wrong; the others draw it.
                    let what = text
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim_start_matches("error: ");
                    bail!("--state '{pattern}' is not a valid regex: {what}");
                }
                // Anchored so `fail` does not match `failed`, while `alive|suspect` works.
                Regex::new(&format!("^(?:{pattern})$"))
                    .map_err(|e| anyhow!("--state '{pattern}' is not a valid regex: {e}"))
            })
            .transpose()?;
        let tags = tags
            .iter()
            .map(|tag| parse_tag_filter(tag).map_err(|e| anyhow!("--tag: {e}")))
            .collect::<anyhow::Result<_>>()?;
        Ok(MemberFilter { state, tags })
    }

    fn matches(&self, member: &MemberJson) -> bool {
        self.state
            .as_ref()
            .is_none_or(|state| state.is_match(member.state.as_str()))
            && has_tags(member, &self.tags)
    }

    /// The matching members, sorted by name.
    fn select(&self, members: Vec<MemberJson>) -> Vec<MemberJson> {
        let mut selected: Vec<MemberJson> =
            members.into_iter().filter(|m| self.matches(m)).collect();
        selected.sort_by(|a, b| a.name.cmp(&b.name));
        selected
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::agent::handle::EventBus;
    use crate::api::testing::{FakeApi, cluster, event, event_json, member};
    use crate::cli::http::api_base_url;
    use crate::cli::render::{tags_text, utc_time};
    use crate::model::Fitness;

    /// Guards every wait: a hung test fails instead of blocking CI.
    const GUARD: Duration = Duration::from_secs(10);

    fn api(fake: &FakeApi, token: Option<&str>) -> ApiArgs {
        ApiArgs {
            api: fake.addr.to_string(),
            token: token.map(str::to_string),
        }
    }

    fn members_args(
        fake: &FakeApi,
        state: Option<&str>,
        tags: &[&str],
        format: MembersFormat,
    ) -> MembersArgs {
        MembersArgs {
            api: api(fake, None),
            state: state.map(str::to_string),
            tag: tags.iter().map(|t| t.to_string()).collect(),
            format,
            detailed: false,
        }
    }

    /// Awaits a command under the guard; its error as the line `swimd:` would print.
    async fn guarded<T>(command: impl Future<Output = anyhow::Result<T>>) -> Result<T, String> {
        tokio::time::timeout(GUARD, command)
            .await
            .expect("in time")
            .map_err(|e| format!("{e:#}"))
    }

    fn text(out: Vec<u8>) -> String {
        String::from_utf8(out).expect("utf-8 output")
    }

    /// The client subcommands as `swimd` wires them.
    #[derive(Debug, clap::Parser)]
    enum ClientCommand {
        Members(MembersArgs),
        Join(JoinArgs),
        Leave(LeaveArgs),
        ForceLeave(ForceLeaveArgs),
        Watch(WatchArgs),
        Health(HealthArgs),
    }

    fn parse(args: &[&str]) -> Result<ClientCommand, clap::Error> {
        clap::Parser::try_parse_from(std::iter::once("swimd").chain(args.iter().copied()))
    }

    #[test]
    fn arguments_parse_as_documented() {
        <ClientCommand as clap::CommandFactory>::command().debug_assert();
        let Ok(ClientCommand::Members(members)) = parse(&[
            "members",
            "--api",
            "10.1.1.1:7947",
            "--state",
            "alive|suspect",
            "--tag",
            "role=web",
            "--tag",
            "dc=a",
            "--format",
            "json",
        ]) else {
            panic!("members arguments");
        };
        assert_eq!(members.api.api, "10.1.1.1:7947");
        assert_eq!(members.state.as_deref(), Some("alive|suspect"));
        assert_eq!(members.tag, ["role=web", "dc=a"]);
        assert_eq!(members.format, MembersFormat::Json);
        let Ok(ClientCommand::Join(join)) = parse(&["join", "a:7946", "b:7946", "--token", "t"])
        else {
            panic!("join arguments");
        };
        assert_eq!(join.addrs, ["a:7946", "b:7946"]);
        assert_eq!(join.api.token.as_deref(), Some("t"));
        assert!(parse(&["join"]).is_err(), "join needs an address");
        assert!(parse(&["force-leave"]).is_err(), "force-leave needs a name");
        assert!(parse(&["members", "--format", "yaml"]).is_err());
        let Ok(ClientCommand::Watch(watch)) = parse(&["watch", "--format", "json"]) else {
            panic!("watch arguments");
        };
        assert_eq!(watch.format, WatchFormat::Json);
    }

    #[test]
    fn table_aligns_columns_and_lists_tags() {
        let mut critical = member("alpha", "alive", 1, &["role=web", "dc=a"]);
        critical.health = crate::model::Health::Critical;
        critical.failing_checks = vec!["web".into()];
        let mut drained = member("bravo", "failed", 3, &[]);
        drained.health = crate::model::Health::Maintenance;
        drained.maintenance = Some("disk swap".into());
        let members = [critical, drained, member("charlie-long", "failed", 12, &[])];
        assert_eq!(
            render_table(&members, false),
            "NAME          ADDR            STATE   HEALTH                   INCARNATION  TAGS\n\
             alpha         10.0.0.5:7946   alive   critical (web)           1            dc=a,role=web\n\
             bravo         10.0.0.5:7946   failed  maintenance (disk swap)  3\n\
             charlie-long  10.0.0.12:7946  failed  passing                  12\n"
        );
    }

    #[test]
    fn detailed_table_shows_each_members_release_and_wire_versions() {
        let mut new = member("alpha", "alive", 1, &[]);
        new.software = Some(crate::model::Software {
            release: "0.2.0".into(),
            writes: 1,
            reads_from: 1,
            reads_to: 2,
        });
        let old = member("bravo", "alive", 4, &["role=db"]);
        assert_eq!(
            render_table(&[new, old], true),
            "NAME   ADDR           STATE  HEALTH   INCARNATION  RELEASE  WIRE     TAGS\n\
             alpha  10.0.0.5:7946  alive  passing  1            0.2.0    w1 r1-2\n\
             bravo  10.0.0.5:7946  alive  passing  4            -        -        role=db\n"
        );
    }

    #[test]
    fn peer_controlled_text_cannot_drive_the_terminal() {
        let sneaky = member("alpha", "alive", 1, &["note=\u{1b}[2Jgotcha\nline"]);
        assert_eq!(tags_text(&sneaky.tags), "note=\\u{1b}[2Jgotcha\\nline");
        assert_eq!(printable("plain-name.1"), "plain-name.1");
    }

    #[test]
    fn state_regex_matches_the_whole_word() {
        let members = cluster();
        let names = |filter: &MemberFilter| {
            filter
                .select(members.clone())
                .into_iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&MemberFilter::new(None, &[]).expect("filter")),
            ["alpha", "bravo", "charlie", "delta"]
        );
        assert_eq!(
            names(&MemberFilter::new(Some("alive|suspect"), &[]).expect("filter")),
            ["alpha", "bravo"]
        );
        assert_eq!(
            names(&MemberFilter::new(Some("fail"), &[]).expect("filter")),
            Vec::<String>::new()
        );
        assert_eq!(
            names(&MemberFilter::new(Some("fail.*"), &[]).expect("filter")),
            ["charlie"]
        );
    }

    #[test]
    fn every_tag_filter_must_match() {
        let members = cluster();
        let names = |tags: &[&str]| {
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            let filter = MemberFilter::new(None, &tags).expect("filter");
            filter
                .select(members.clone())
                .into_iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&["role=web"]), ["alpha", "charlie"]);
        assert_eq!(names(&["role=web", "dc=b"]), ["charlie"]);
        assert_eq!(names(&["role=web", "dc=c"]), Vec::<String>::new());
    }

    #[test]
    fn bad_filters_are_reported() {
        let error = MemberFilter::new(Some("ali(ve"), &[])
            .expect_err("bad regex")
            .to_string();
        assert!(
            error.starts_with("--state 'ali(ve' is not a valid regex"),
            "{error}"
        );
        let error = MemberFilter::new(None, &["role".to_string()])
            .expect_err("bad tag")
            .to_string();
        assert_eq!(error, "--tag: tag filter must be k=v, got 'role'");
    }

    #[test]
    fn event_lines_read_as_a_log() {
        let failed = event(9, "member.failed", "bravo", Some("suspect"), "failed");
        assert_eq!(
            event_line(&event_json(&failed)),
            "2023-11-14T22:13:20.250Z member.failed bravo suspect→failed incarnation=9"
        );
        let joined = event(1, "member.joined", "delta", None, "alive");
        assert_eq!(
            event_line(&event_json(&joined)),
            "2023-11-14T22:13:20.250Z member.joined delta -→alive incarnation=1"
        );
    }

    #[test]
    fn utc_time_handles_epoch_leap_days_and_nonsense() {
        assert_eq!(utc_time(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_time(951_782_400.0), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_time(1_700_000_000.999_6), "2023-11-14T22:13:21.000Z");
        assert_eq!(utc_time(-0.001), "1969-12-31T23:59:59.999Z");
        assert_eq!(utc_time(f64::NAN), "1970-01-01T00:00:00.000Z");
        let _ = utc_time(f64::INFINITY);
    }

    #[test]
    fn api_address_is_host_port_or_http_url() {
        assert_eq!(
            api_base_url("127.0.0.1:7947").expect("url").as_str(),
            "http://127.0.0.1:7947/"
        );
        assert_eq!(
            api_base_url("[::1]:7947").expect("url").as_str(),
            "http://[::1]:7947/"
        );
        assert_eq!(
            api_base_url("http://agent.local:80/swimd/")
                .expect("url")
                .as_str(),
            "http://agent.local/swimd/"
        );
        assert!(api_base_url("https://agent:7947").is_err());
        assert!(api_base_url("").is_err());
    }

    #[tokio::test]
    async fn members_prints_a_table_sorted_by_name() {
        let fake = FakeApi::start(None).await;
        let mut out = Vec::new();
        let result = guarded(members_to(
            members_args(&fake, None, &[], MembersFormat::Table),
            &mut out,
        ))
        .await;
        assert_eq!(result, Ok(ExitCode::SUCCESS));
        assert_eq!(
            text(out),
            "NAME     ADDR           STATE    HEALTH   INCARNATION  TAGS\n\
             alpha    10.0.0.5:7946  alive    passing  1            dc=a,role=web\n\
             bravo    10.0.0.5:7946  suspect  passing  3            dc=a,role=db\n\
             charlie  10.0.0.7:7946  failed   passing  7            dc=b,role=web\n\
             delta    10.0.0.5:7946  left     passing  2\n"
        );
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn members_json_is_exactly_the_filtered_list() {
        let fake = FakeApi::start(None).await;
        let mut out = Vec::new();
        let args = members_args(
            &fake,
            Some("alive|failed"),
            &["role=web"],
            MembersFormat::Json,
        );
        assert_eq!(
            guarded(members_to(args, &mut out)).await,
            Ok(ExitCode::SUCCESS)
        );
        let mut expected: Vec<MemberJson> = cluster()
            .into_iter()
            .filter(|m| m.name == "alpha" || m.name == "charlie")
            .collect();
        expected.sort_by(|a, b| a.name.cmp(&b.name));
        let expected = format!(
            "{}\n",
            serde_json::to_string(&MembersJson { members: expected }).expect("json")
        );
        assert!(
            expected.starts_with("{\"members\":[{\"name\":\"alpha\""),
            "{expected}"
        );
        assert_eq!(text(out), expected);
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn members_exits_2_and_prints_nothing_when_nothing_matches() {
        let fake = FakeApi::start(None).await;
        for format in [MembersFormat::Table, MembersFormat::Json] {
            let mut out = Vec::new();
            let args = members_args(&fake, Some("suspect"), &["role=web"], format);
            assert_eq!(
                guarded(members_to(args, &mut out)).await,
                Ok(ExitCode::from(NOTHING_MATCHED))
            );
            assert_eq!(text(out), "");
        }
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn an_unreachable_agent_is_one_clear_line() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let args = HealthArgs {
            api: ApiArgs {
                api: addr.to_string(),
                token: None,
            },
        };
        let mut out = Vec::new();
        assert_eq!(
            guarded(health_to(args, &mut out)).await,
            Err(format!(
                "cannot reach the agent API at {addr}: connection refused (is the agent running? set --api or SWIMD_API)"
            ))
        );
        let args = WatchArgs {
            api: ApiArgs {
                api: addr.to_string(),
                token: None,
            },
            format: WatchFormat::Text,
        };
        let result = guarded(watch_to(
            args,
            &mut out,
            Reconnect::default(),
            std::future::pending(),
        ))
        .await;
        assert!(
            result
                .expect_err("unreachable")
                .starts_with("cannot reach the agent API at")
        );
        assert_eq!(text(out), "");
    }

    #[tokio::test]
    async fn the_token_is_sent_and_a_missing_one_explained() {
        let fake = FakeApi::start(Some("s3cret")).await;
        let mut out = Vec::new();
        let args = members_args(&fake, None, &[], MembersFormat::Json);
        assert_eq!(
            guarded(members_to(args, &mut out)).await,
            Err("missing or wrong bearer token (set --token or SWIMD_TOKEN)".to_string())
        );
        let mut args = members_args(&fake, None, &[], MembersFormat::Json);
        args.api.token = Some("s3cret".to_string());
        assert_eq!(
            guarded(members_to(args, &mut out)).await,
            Ok(ExitCode::SUCCESS)
        );
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn join_leave_and_force_leave_print_what_happened() {
        let fake = FakeApi::start(None).await;
        let mut out = Vec::new();
        let args = JoinArgs {
            api: api(&fake, None),
            addrs: vec!["10.0.0.2:7946".into(), "10.0.0.3:7946".into()],
        };
        assert_eq!(
            guarded(join_to(args, &mut out)).await,
            Ok(ExitCode::SUCCESS)
        );
        let args = ForceLeaveArgs {
            api: api(&fake, None),
            name: "charlie".into(),
        };
        assert_eq!(
            guarded(force_leave_to(args, &mut out)).await,
            Ok(ExitCode::SUCCESS)
        );
        let args = LeaveArgs {
            api: api(&fake, None),
        };
        assert_eq!(
            guarded(leave_to(args, &mut out)).await,
            Ok(ExitCode::SUCCESS)
        );
        let on = MaintCommand::On {
            api: api(&fake, None),
            reason: "disk swap".into(),
        };
        assert_eq!(guarded(maint_to(on, &mut out)).await, Ok(ExitCode::SUCCESS));
        let off = MaintCommand::Off {
            api: api(&fake, None),
        };
        assert_eq!(
            guarded(maint_to(off, &mut out)).await,
            Ok(ExitCode::SUCCESS)
        );
        let bad = MaintCommand::On {
            api: api(&fake, None),
            reason: "a\tb".into(),
        };
        assert!(guarded(maint_to(bad, &mut out)).await.is_err());
        assert_eq!(
            text(out),
            "contacted 2\ncharlie marked left\nleaving\nmaintenance on\nmaintenance off\n"
        );
        assert_eq!(
            fake.state.lock().expect("state").actions,
            [
                "join 10.0.0.2:7946,10.0.0.3:7946",
                "force-leave charlie",
                "leave",
                "maint on disk swap",
                "maint off"
            ]
        );
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn agent_refusals_are_printed_as_their_message() {
        let fake = FakeApi::start(None).await;
        let mut out = Vec::new();
        let args = JoinArgs {
            api: api(&fake, None),
            addrs: vec!["nohost".into()],
        };
        assert_eq!(
            guarded(join_to(args, &mut out)).await,
            Err("none of [\"nohost\"] could be resolved".to_string())
        );
        let args = ForceLeaveArgs {
            api: api(&fake, None),
            name: "alpha".into(),
        };
        assert_eq!(
            guarded(force_leave_to(args, &mut out)).await,
            Err("alpha is alive, not failed: only failed members can be forced out".to_string())
        );
        let args = ForceLeaveArgs {
            api: api(&fake, None),
            name: "no/such member".into(),
        };
        assert_eq!(
            guarded(force_leave_to(args, &mut out)).await,
            Err("no member named no/such member".to_string())
        );
        assert_eq!(text(out), "");
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn health_prints_ok_or_the_reason() {
        let fake = FakeApi::start(None).await;
        let mut out = Vec::new();
        assert_eq!(
            guarded(health_to(
                HealthArgs {
                    api: api(&fake, None)
                },
                &mut out
            ))
            .await,
            Ok(ExitCode::SUCCESS)
        );
        fake.state.lock().expect("state").health = Fitness::Unfit("not joined".to_string());
        assert_eq!(
            guarded(health_to(
                HealthArgs {
                    api: api(&fake, None)
                },
                &mut out
            ))
            .await,
            Ok(ExitCode::FAILURE)
        );
        assert_eq!(text(out), "ok\nunhealthy: not joined\n");
        fake.shutdown().await;

        let gone = FakeApi::start_without_agent().await;
        let mut out = Vec::new();
        assert_eq!(
            guarded(health_to(
                HealthArgs {
                    api: api(&gone, None)
                },
                &mut out
            ))
            .await,
            Ok(ExitCode::FAILURE)
        );
        assert_eq!(text(out), "unhealthy: agent is shutting down\n");
        gone.shutdown().await;
    }

    /// Stdout for a watcher running in a task: complete lines arrive on a channel.
    struct Lines {
        sender: mpsc::UnboundedSender<String>,
        partial: Vec<u8>,
    }

    impl Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.partial.extend_from_slice(bytes);
            while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=end).collect();
                let _ = self
                    .sender
                    .send(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A running `watch`, its output lines, and a Ctrl-C for it.
    struct Watcher {
        lines: mpsc::UnboundedReceiver<String>,
        interrupt: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<ExitCode, String>>,
    }

    impl Watcher {
        fn start(fake: &FakeApi, format: WatchFormat, reconnect: Reconnect) -> Watcher {
            let (sender, lines) = mpsc::unbounded_channel();
            let (interrupt, interrupted) = tokio::sync::oneshot::channel::<()>();
            let args = WatchArgs {
                api: api(fake, None),
                format,
            };
            let task = tokio::spawn(async move {
                let mut out = Lines {
                    sender,
                    partial: Vec::new(),
                };
                let interrupted = async move {
                    let _ = interrupted.await;
                };
                watch_to(args, &mut out, reconnect, interrupted)
                    .await
                    .map_err(|e| format!("{e:#}"))
            });
            Watcher {
                lines,
                interrupt: Some(interrupt),
                task,
            }
        }

        async fn line(&mut self) -> String {
            tokio::time::timeout(GUARD, self.lines.recv())
                .await
                .expect("a line in time")
                .expect("watcher running")
        }

        async fn interrupt(mut self) -> Result<ExitCode, String> {
            if let Some(interrupt) = self.interrupt.take() {
                let _ = interrupt.send(());
            }
            self.finished().await
        }

        async fn finished(self) -> Result<ExitCode, String> {
            tokio::time::timeout(GUARD, self.task)
                .await
                .expect("watcher ends in time")
                .expect("watcher task")
        }
    }

    /// Subscribing is not an event the test can await, so poll for it (bounded).
    async fn until_subscribed(events: &EventBus, subscribers: usize) {
        tokio::time::timeout(GUARD, async {
            while events.subscribers() < subscribers {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("the watcher subscribes in time");
    }

    fn quick_reconnect(give_up_after: Duration) -> Reconnect {
        Reconnect {
            first_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            give_up_after,
        }
    }

    #[tokio::test]
    async fn watch_prints_one_line_per_event() {
        let fake = FakeApi::start(None).await;
        let mut watcher = Watcher::start(&fake, WatchFormat::Text, Reconnect::default());
        until_subscribed(&fake.events, 1).await;
        fake.events.publish(event(
            1,
            "member.suspect",
            "bravo",
            Some("alive"),
            "suspect",
        ));
        fake.events.publish(event(
            2,
            "member.failed",
            "bravo",
            Some("suspect"),
            "failed",
        ));
        assert_eq!(
            watcher.line().await,
            "2023-11-14T22:13:20.250Z member.suspect bravo alive→suspect incarnation=1"
        );
        assert_eq!(
            watcher.line().await,
            "2023-11-14T22:13:20.250Z member.failed bravo suspect→failed incarnation=2"
        );
        assert_eq!(watcher.interrupt().await, Ok(ExitCode::SUCCESS));
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn watch_json_prints_each_event_as_one_line() {
        let fake = FakeApi::start(None).await;
        let mut watcher = Watcher::start(&fake, WatchFormat::Json, Reconnect::default());
        until_subscribed(&fake.events, 1).await;
        let joined = event(1, "member.joined", "echo", None, "alive");
        fake.events.publish(joined.clone());
        let line = watcher.line().await;
        let joined = event_json(&joined);
        assert_eq!(
            serde_json::from_str::<EventJson>(&line).expect("EventJson"),
            joined
        );
        assert_eq!(line, serde_json::to_string(&joined).expect("json"));
        assert_eq!(watcher.interrupt().await, Ok(ExitCode::SUCCESS));
        fake.shutdown().await;
    }

    #[tokio::test]
    async fn watch_resumes_after_the_last_event_when_the_stream_drops() {
        let fake = FakeApi::start(None).await;
        let (addr, events) = (fake.addr, fake.events.clone());
        let mut watcher = Watcher::start(&fake, WatchFormat::Text, quick_reconnect(GUARD));
        until_subscribed(&events, 1).await;
        events.publish(event(
            1,
            "member.suspect",
            "bravo",
            Some("alive"),
            "suspect",
        ));
        assert!(watcher.line().await.contains("member.suspect"));

        // The API restarts; an event happens while the watcher is disconnected.
        fake.shutdown().await;
        events.publish(event(
            2,
            "member.failed",
            "bravo",
            Some("suspect"),
            "failed",
        ));
        let restarted = FakeApi::start_on(addr, None, events.clone(), true).await;
        assert!(
            watcher
                .line()
                .await
                .contains("member.failed bravo suspect→failed incarnation=2")
        );
        events.publish(event(
            3,
            "member.recovered",
            "bravo",
            Some("failed"),
            "alive",
        ));
        assert!(watcher.line().await.contains("member.recovered"));
        assert_eq!(watcher.interrupt().await, Ok(ExitCode::SUCCESS));
        restarted.shutdown().await;
    }

    #[tokio::test]
    async fn watch_gives_up_when_the_agent_stays_away() {
        let fake = FakeApi::start(None).await;
        let (addr, events) = (fake.addr, fake.events.clone());
        let watcher = Watcher::start(
            &fake,
            WatchFormat::Text,
            quick_reconnect(Duration::from_millis(300)),
        );
        until_subscribed(&events, 1).await;
        fake.shutdown().await;
        assert_eq!(
            watcher.finished().await,
            Err(format!(
                "lost the agent API at {addr}: connection refused (gave up reconnecting after 0.3s)"
            ))
        );
    }
}

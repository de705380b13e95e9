//! Local service health checks (http, tcp, exec) with HAProxy/keepalived-style rise/fall.
//! Each check runs in its own task and never blocks gossip; the agent learns only state
//! changes, and publishes the failing checks with the member's state.

mod metrics;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::model::SpecError;
use crate::net::http::LazyClient;
use crate::process::{CommandEnd, run_bounded};
pub use metrics::CheckMetrics;

/// A `[[checks]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Unique name (gossiped when failing, metric label).
    pub name: String,
    /// `http`, `tcp` or `exec`.
    pub kind: CheckKind,
    /// http: the URL to GET.
    pub url: Option<String>,
    /// http: accepted statuses, e.g. "200-399" or "200,204".
    #[serde(default = "default_expect")]
    pub expect_status: String,
    /// tcp: `host:port` to connect to.
    pub address: Option<String>,
    /// exec: argv, no shell; exit 0 passes.
    pub command: Option<Vec<String>>,
    /// Time between two runs.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// One run's limit (a hung exec check is killed, with its process group).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive passes that make a critical check passing.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that make a passing check critical.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

/// Check kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// HTTP GET, status in `expect_status`.
    Http,
    /// TCP connect.
    Tcp,
    /// A command; exit 0 passes.
    Exec,
}

fn default_expect() -> String {
    "200-399".into()
}
fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    2
}

/// Longest check name (names are gossiped).
pub const MAX_CHECK_NAME: usize = 64;

impl CheckSpec {
    /// Checks what serde could not; the error names the key.
    pub fn validate(&self) -> Result<(), SpecError> {
        crate::model::validate_name(&self.name, MAX_CHECK_NAME)?;
        if self.interval < Duration::from_millis(100) {
            return Err(SpecError::new("interval", "must be at least 100ms".into()));
        }
        if self.timeout.is_zero() || self.timeout > self.interval {
            return Err(SpecError::new(
                "timeout",
                "must be more than 0 and at most the interval".into(),
            ));
        }
        if self.rise == 0 || self.fall == 0 {
            return Err(SpecError::new(
                "rise",
                "rise and fall must be at least 1".into(),
            ));
        }
        let (needs, has) = match self.kind {
            CheckKind::Http => ("url", self.url.is_some()),
            CheckKind::Tcp => ("address", self.address.is_some()),
            CheckKind::Exec => ("command", self.command.is_some()),
        };
        if !has {
            return Err(SpecError::new(
                needs,
                format!("a {:?} check needs {needs}", self.kind).to_lowercase(),
            ));
        }
        for (key, present, kind) in [
            ("url", self.url.is_some(), CheckKind::Http),
            ("address", self.address.is_some(), CheckKind::Tcp),
            ("command", self.command.is_some(), CheckKind::Exec),
        ] {
            if present && self.kind != kind {
                return Err(SpecError::new(
                    key,
                    format!("only {kind:?} checks take {key}").to_lowercase(),
                ));
            }
        }
        match self.kind {
            CheckKind::Http => {
                let url = self.url.as_deref().unwrap_or_default();
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| SpecError::new("url", format!("{url:?} is not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(SpecError::new(
                        "url",
                        format!("{url:?} must be http:// or https://"),
                    ));
                }
                parse_statuses(&self.expect_status)
                    .map_err(|e| SpecError::new("expect_status", e))?;
            }
            CheckKind::Tcp => {
                let address = self.address.as_deref().unwrap_or_default();
                match address.rsplit_once(':') {
                    Some((host, port))
                        if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
                    _ => {
                        return Err(SpecError::new(
                            "address",
                            format!("{address:?} is not host:port"),
                        ));
                    }
                }
            }
            CheckKind::Exec => {
                if self
                    .command
                    .as_ref()
                    .is_none_or(|c| c.first().is_none_or(String::is_empty))
                {
                    return Err(SpecError::new(
                        "command",
                        "must name a program: [\"/path\", \"arg\", …]".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Parses "200-399" or "200,204,300-302" into ranges.
pub fn parse_statuses(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let bad = || format!("{text:?}: write statuses and ranges such as \"200-399\" or \"200,204\"");
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if !(100..=599).contains(&a) || !(100..=599).contains(&b) || a > b {
            return Err(bad());
        }
        out.push((a, b));
    }
    Ok(out)
}

/// A check changed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckChange {
    /// The check.
    pub name: String,
    /// Passing now?
    pub passing: bool,
    /// What the last run said.
    pub output: String,
}

/// The running checks; dropping it stops them.
#[derive(Default)]
pub struct Checks {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Checks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Checks {
    /// Starts one task per check; state changes arrive on `changes`.
    pub fn start(
        specs: &[CheckSpec],
        failing: &std::collections::BTreeSet<String>,
        changes: mpsc::UnboundedSender<CheckChange>,
        metrics: CheckMetrics,
    ) -> Checks {
        let client = LazyClient::new(|| {
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
        });
        let tasks = specs
            .iter()
            .map(|spec| {
                metrics.init(&spec.name);
                let passing = !failing.contains(&spec.name);
                metrics.status(&spec.name, passing);
                tokio::spawn(run(
                    spec.clone(),
                    passing,
                    client.clone(),
                    changes.clone(),
                    metrics.clone(),
                ))
            })
            .collect();
        Checks { tasks }
    }
}

/// The result of one run: passed, and what it said.
pub async fn run_once(spec: &CheckSpec, client: &LazyClient) -> (bool, String) {
    match spec.kind {
        CheckKind::Http => {
            let url = spec.url.as_deref().unwrap_or_default();
            let ranges = parse_statuses(&spec.expect_status).unwrap_or_default();
            let client = match client.get() {
                Ok(client) => client,
                Err(error) => return (false, error),
            };
            match client.get(url).timeout(spec.timeout).send().await {
                Ok(response) => {
                    let code = response.status().as_u16();
                    let ok = ranges.iter().any(|&(a, b)| (a..=b).contains(&code));
                    (ok, format!("HTTP {code}"))
                }
                Err(e) if e.is_timeout() => (false, "timed out".into()),
                Err(e) => (false, e.to_string()),
            }
        }
        CheckKind::Tcp => {
            let address = spec.address.as_deref().unwrap_or_default();
            let connect = async {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host(address).await?.collect();
                let mut last = std::io::Error::other("no address");
                for addr in addrs {
                    match tokio::net::TcpStream::connect(addr).await {
                        Ok(_) => return Ok(addr),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            };
            match tokio::time::timeout(spec.timeout, connect).await {
                Ok(Ok(addr)) => (true, format!("connected to {addr}")),
                Ok(Err(e)) => (false, e.to_string()),
                Err(_) => (false, "timed out".into()),
            }
        }
        CheckKind::Exec => {
            let argv = spec.command.as_deref().unwrap_or_default();
            match run_bounded(argv, Vec::new(), b"", spec.timeout).await {
                CommandEnd::Exited(Some(0), _) => (true, "exit 0".into()),
                CommandEnd::Exited(Some(code), err) => (false, format!("exit {code}: {err}")),
                CommandEnd::Exited(None, err) => (false, format!("killed by a signal: {err}")),
                CommandEnd::TimedOut => (false, "timed out; process group killed".into()),
                CommandEnd::Error(e) => (false, e),
            }
        }
    }
}

/// Rise/fall: `passing` flips only after `rise` passes or `fall` failures in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RiseFall {
    /// The state now.
    pub passing: bool,
    streak: u32,
}

impl RiseFall {
    /// Starts passing (as HAProxy starts servers up): a service that is down turns
    /// critical after `fall` runs.
    pub fn new() -> RiseFall {
        RiseFall {
            passing: true,
            streak: 0,
        }
    }

    /// Counts one result; true if the state flipped.
    pub fn record(&mut self, passed: bool, rise: u32, fall: u32) -> bool {
        if passed == self.passing {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if passed { rise } else { fall };
        if self.streak >= needed {
            self.passing = passed;
            self.streak = 0;
            return true;
        }
        false
    }
}

impl Default for RiseFall {
    fn default() -> Self {
        RiseFall::new()
    }
}

async fn run(
    spec: CheckSpec,
    passing: bool,
    client: LazyClient,
    changes: mpsc::UnboundedSender<CheckChange>,
    metrics: CheckMetrics,
) {
    let mut state = RiseFall { passing, streak: 0 };
    let mut next = Instant::now();
    loop {
        tokio::time::sleep_until(next.into()).await;
        next += spec.interval;
        let started = Instant::now();
        let (passed, output) = run_once(&spec, &client).await;
        metrics.ran(
            &spec.name,
            started.elapsed(),
            passed,
            output.contains("timed out"),
        );
        if started.elapsed() > spec.interval {
            next = Instant::now();
        }
        if state.record(passed, spec.rise, spec.fall) {
            if state.passing {
                info!(check = %spec.name, output = %output, "check passing");
            } else {
                warn!(check = %spec.name, output = %output, "check critical");
            }
            metrics.status(&spec.name, state.passing);
            let change = CheckChange {
                name: spec.name.clone(),
                passing: state.passing,
                output,
            };
            if changes.send(change).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> CheckSpec {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_issue_example_works_as_it_stands() {
        let s = spec(
            "name = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:8080/\"\ninterval = \"500ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2",
        );
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(parse_statuses(&s.expect_status), Ok(vec![(200, 399)]));
    }

    #[test]
    fn bad_checks_name_their_key() {
        for (text, key) in [
            ("name = \"a b\"\nkind = \"tcp\"\naddress = \"x:1\"", "name"),
            ("name = \"a\"\nkind = \"tcp\"", "address"),
            (
                "name = \"a\"\nkind = \"tcp\"\naddress = \"nope\"",
                "address",
            ),
            (
                "name = \"a\"\nkind = \"tcp\"\naddress = \"x:1\"\nurl = \"http://x/\"",
                "url",
            ),
            (
                "name = \"a\"\nkind = \"http\"\nurl = \"http://x/\"\nexpect_status = \"2xx\"",
                "expect_status",
            ),
            ("name = \"a\"\nkind = \"exec\"\ncommand = []", "command"),
            (
                "name = \"a\"\nkind = \"tcp\"\naddress = \"x:1\"\ntimeout = \"20s\"",
                "timeout",
            ),
            (
                "name = \"a\"\nkind = \"tcp\"\naddress = \"x:1\"\nfall = 0",
                "rise",
            ),
        ] {
            assert_eq!(
                spec(text).validate().err().map(|e| e.key),
                Some(key),
                "{text}"
            );
        }
    }

    #[test]
    fn rise_and_fall_need_consecutive_results() {
        let mut s = RiseFall::new();
        // A flapping check (pass, fail, pass, fail…) never changes state with fall = 2.
        for i in 0..20 {
            assert!(!s.record(i % 2 == 0, 2, 2));
        }
        assert!(s.passing);
        assert!(!s.record(true, 2, 2));
        assert!(!s.record(false, 2, 2));
        assert!(s.record(false, 2, 2), "second failure in a row");
        assert!(!s.passing);
        assert!(!s.record(true, 3, 2));
        assert!(!s.record(true, 3, 2));
        assert!(s.record(true, 3, 2), "third pass in a row");
        assert!(s.passing);
    }

    #[tokio::test]
    async fn probes_pass_and_fail_for_real() {
        crate::net::tls::install_crypto_provider();
        let client = LazyClient::new(reqwest::Client::builder);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = |a: &str| {
            spec(&format!(
                "name = \"t\"\nkind = \"tcp\"\naddress = \"{a}\"\ntimeout = \"1s\""
            ))
        };
        assert!(run_once(&tcp(&addr.to_string()), &client).await.0);
        drop(listener);
        assert!(!run_once(&tcp(&addr.to_string()), &client).await.0);
        let exec = |cmd: &str, timeout: &str| {
            spec(&format!(
                "name = \"e\"\nkind = \"exec\"\ncommand = [\"/bin/sh\", \"-c\", {cmd:?}]\ntimeout = \"{timeout}\""
            ))
        };
        assert!(run_once(&exec("exit 0", "1s"), &client).await.0);
        let (ok, out) = run_once(&exec("echo broken >&2; exit 2", "1s"), &client).await;
        assert!(!ok && out.contains("broken"), "{out}");
        let started = Instant::now();
        let (ok, out) = run_once(&exec("sleep 30", "200ms"), &client).await;
        assert!(!ok && out.contains("timed out"), "{out}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a hung check is killed"
        );
        assert!(!client.is_built(), "only HTTP checks need the HTTP client");
        let http =
            spec("name = \"h\"\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\ntimeout = \"1s\"");
        assert!(!run_once(&http, &client).await.0);
        assert!(client.is_built());
    }
}

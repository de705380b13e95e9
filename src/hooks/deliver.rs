//! One delivery attempt: an HTTP request or a local command, bounded by the hook's timeout.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::payload::{HookEvent, sign};
use super::spec::{Format, Hook, HookKind};
use crate::net::http::LazyClient;
use crate::process::{CommandEnd, run_bounded, truncate};

/// What an attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done (2xx, exit 0).
    Success,
    /// Try again later (network error, timeout, 408/425/429/5xx, exit 1), no sooner than
    /// `after` if the receiver said so (`Retry-After`).
    Retry {
        /// What went wrong.
        error: String,
        /// The receiver's `Retry-After`.
        after: Option<Duration>,
    },
    /// Retrying cannot help (other 4xx, exit ≥ 2).
    Failed(String),
    /// The receiver answered 410 Gone: the hook is disabled.
    Gone,
}

/// Makes one attempt.
pub async fn attempt(
    hook: &Hook,
    event: &HookEvent,
    client: &LazyClient,
    self_name: &str,
) -> Outcome {
    match hook.spec.kind {
        // Only webhooks need the client: command hooks never build it.
        HookKind::Webhook => match client.get() {
            Ok(client) => webhook(hook, event, client).await,
            Err(error) => Outcome::Retry { error, after: None },
        },
        HookKind::Exec => exec(hook, event, self_name).await,
    }
}

async fn webhook(hook: &Hook, event: &HookEvent, client: &reqwest::Client) -> Outcome {
    let spec = &hook.spec;
    let Some(url) = &spec.url else {
        return Outcome::Failed("no url".into());
    };
    let body = match (&spec.body, spec.format) {
        (Some(template), _) => event.render(template).into_bytes(),
        (None, Format::Alertmanager) => event.alertmanager_json(),
        (None, Format::Standard) => event.json(),
    };
    let method =
        reqwest::Method::from_bytes(spec.method.as_bytes()).unwrap_or(reqwest::Method::POST);
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut request = client
        .request(method, url)
        .timeout(spec.timeout)
        .header("content-type", "application/json")
        .header("user-agent", concat!("swimd/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", &event.data.id)
        .header("webhook-timestamp", timestamp.to_string());
    if let Some(key) = &hook.key {
        request = request.header(
            "webhook-signature",
            sign(key, &event.data.id, timestamp, &body),
        );
    }
    for (name, value) in &spec.headers {
        request = request.header(name.as_str(), value.as_str());
    }
    let response = match request.body(body).send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            return Outcome::Retry {
                error: format!(
                    "timed out after {}",
                    humantime::format_duration(spec.timeout)
                ),
                after: None,
            };
        }
        Err(e) => {
            // The URL may hold credentials (`user:pass@`, a token in the path): it must not
            // reach logs, the outbox or `GET /v1/hooks`.
            return Outcome::Retry {
                error: error_chain(&e.without_url()),
                after: None,
            };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Outcome::Success;
    }
    if status == reqwest::StatusCode::GONE {
        return Outcome::Gone;
    }
    let after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after);
    let text = response.text().await.unwrap_or_default();
    let error = truncate(format!("HTTP {status}: {}", text.trim()));
    if matches!(status.as_u16(), 408 | 425 | 429) || status.is_server_error() {
        Outcome::Retry { error, after }
    } else {
        Outcome::Failed(error)
    }
}

/// `Retry-After`: delta-seconds or an HTTP date.
pub fn retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    truncate(text)
}

async fn exec(hook: &Hook, event: &HookEvent, self_name: &str) -> Outcome {
    let Some(argv) = hook.spec.command.as_deref() else {
        return Outcome::Failed("no command".into());
    };
    let retry = |error| Outcome::Retry { error, after: None };
    match run_bounded(argv, event.env(self_name), &event.json(), hook.spec.timeout).await {
        CommandEnd::TimedOut => retry(format!(
            "timed out after {}; process group killed",
            humantime::format_duration(hook.spec.timeout)
        )),
        CommandEnd::Error(e) if e.starts_with("cannot run") => Outcome::Failed(e),
        CommandEnd::Error(e) => retry(e),
        CommandEnd::Exited(Some(0), _) => Outcome::Success,
        CommandEnd::Exited(Some(1), err) => retry(format!("exit 1: {err}")),
        CommandEnd::Exited(Some(code), err) => Outcome::Failed(format!("exit {code}: {err}")),
        CommandEnd::Exited(None, err) => retry(format!("killed by a signal: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::payload::PayloadMember;
    use crate::hooks::spec::HookSpec;

    fn exec_hook(command: &str, timeout: &str) -> Hook {
        crate::net::tls::install_crypto_provider();
        let text = format!(
            "name = \"x\"\nkind = \"exec\"\nevents = [\"member.failed\"]\ntimeout = \"{timeout}\"\ncommand = [\"/bin/sh\", \"-c\", {command:?}]"
        );
        toml::from_str::<HookSpec>(&text)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn event() -> HookEvent {
        HookEvent::new(
            "member.failed",
            1.0,
            "c",
            PayloadMember::sample("web-1", 1),
            None,
            "me",
        )
    }

    /// One attempt of `hook` with the sample event and a fresh client.
    async fn attempt_once(hook: &Hook) -> Outcome {
        attempt(
            hook,
            &event(),
            &LazyClient::new(reqwest::Client::builder),
            "me",
        )
        .await
    }

    #[tokio::test]
    async fn exit_status_decides_the_outcome() {
        let client = LazyClient::new(reqwest::Client::builder);
        let ok = exec_hook(
            "test \"$SWIMD_MEMBER_NAME\" = web-1 && grep -q member.failed",
            "5s",
        );
        assert_eq!(
            attempt(&ok, &event(), &client, "me").await,
            Outcome::Success
        );
        let retry = exec_hook("echo busy >&2; exit 1", "5s");
        assert!(matches!(
            attempt(&retry, &event(), &client, "me").await,
            Outcome::Retry { error, .. } if error.contains("busy")
        ));
        let failed = exec_hook("exit 2", "5s");
        assert!(matches!(
            attempt(&failed, &event(), &client, "me").await,
            Outcome::Failed(_)
        ));
        assert!(
            !client.is_built(),
            "command hooks do not need the HTTP client"
        );
    }

    #[tokio::test]
    async fn a_command_that_exited_succeeds_though_its_child_holds_stderr() {
        let hook = exec_hook("echo started >&2; sleep 30 & exit 0", "2s");
        let outcome = attempt_once(&hook).await;
        assert_eq!(outcome, Outcome::Success);
    }

    #[tokio::test]
    async fn webhook_errors_never_carry_the_url() {
        crate::net::tls::install_crypto_provider();
        // A port nothing listens on: the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = format!(
            "name = \"x\"\nkind = \"webhook\"\nevents = [\"member.failed\"]\nurl = \"http://admin:hunter2@127.0.0.1:{port}/hook/tok3n\""
        );
        let hook = toml::from_str::<HookSpec>(&text)
            .unwrap()
            .validate()
            .unwrap();
        let outcome = attempt_once(&hook).await;
        let Outcome::Retry { error, .. } = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            !error.contains("hunter2") && !error.contains("tok3n") && !error.contains("admin"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_hung_command_and_its_children_are_killed_at_the_timeout() {
        let dir = std::env::temp_dir().join(format!("swimd-exec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("child.pid");
        let hook = exec_hook(
            &format!("sleep 30 & echo $! > {}; wait", pidfile.display()),
            "300ms",
        );
        let started = std::time::Instant::now();
        let outcome = attempt_once(&hook).await;
        assert!(
            matches!(outcome, Outcome::Retry { ref error, .. } if error.contains("timed out")),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild was in the group: it is gone (or a zombie about to be reaped by init).
        let mut gone = false;
        for _ in 0..50 {
            let status =
                std::fs::read_to_string(format!("/proc/{child}/status")).unwrap_or_default();
            if status.is_empty() || status.contains("State:\tZ") {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "the hook's child process survived the timeout");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        let later = SystemTime::now() + Duration::from_secs(100);
        let d = retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(d > Duration::from_secs(90) && d <= Duration::from_secs(100));
        assert_eq!(retry_after("soon"), None);
    }
}

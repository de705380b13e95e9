//! What a `[[hooks]]` entry says, parsed with serde and then checked as a whole.

use std::collections::BTreeMap;
use std::time::Duration;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::model::SpecError;
use crate::wire::Tags;

/// Every event a hook can subscribe to (DESIGN.md's vocabulary).
pub const EVENTS: [&str; 11] = [
    "member.joined",
    "member.updated",
    "member.suspect",
    "member.failed",
    "member.recovered",
    "member.left",
    "member.reaped",
    "member.critical",
    "member.passing",
    "member.maintenance",
    "member.ready",
];

/// A `[[hooks]]` entry as written; [`HookSpec::check`] turns it into a [`Hook`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// Unique name (metric label, outbox key).
    pub name: String,
    /// `webhook` or `exec`.
    pub kind: HookKind,
    /// Events delivered.
    pub events: Vec<String>,
    /// Glob on the member name.
    #[serde(default = "any_member")]
    pub members: String,
    /// Tags a member must have (all of them).
    #[serde(default)]
    pub tags: Tags,
    /// `local` (every agent) or `cluster` (exactly one agent).
    #[serde(default)]
    pub scope: Scope,
    /// Cluster scope: tags an agent must have to deliver.
    #[serde(default)]
    pub owner_tags: Tags,
    /// Cluster scope: how long an event waits before the owner and the minority rule are
    /// judged (a partition shows up as one failure after another).
    #[serde(default = "default_settle", with = "humantime_serde")]
    pub settle: Duration,
    /// One attempt's time limit.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts before an event goes to the dead letters.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt, with jitter.
    #[serde(default = "default_backoff_base", with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest retry delay.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// A recovery after a failure waits until the member has been alive this long.
    #[serde(default = "default_hold_down", with = "humantime_serde")]
    pub hold_down: Duration,
    /// Failures within `flap_window` that make a member flapping.
    #[serde(default = "default_flap_threshold")]
    pub flap_threshold: u32,
    /// The window in which failures are counted.
    #[serde(default = "default_flap_window", with = "humantime_serde")]
    pub flap_window: Duration,
    /// A flapping member's recovery waits until it has been alive this long.
    #[serde(default = "default_flap_hold_down", with = "humantime_serde")]
    pub flap_hold_down: Duration,
    /// Never fail out more than this share of the matching members at once.
    #[serde(default = "default_max_failed_fraction")]
    pub max_failed_fraction: f64,
    /// Webhook: where to send.
    pub url: Option<String>,
    /// Webhook: HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Webhook: extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Webhook: a body template instead of the JSON payload.
    pub body: Option<String>,
    /// Webhook: the Standard Webhooks signing secret (`whsec_` + base64).
    pub secret: Option<String>,
    /// Webhook: `standard` or `alertmanager`.
    #[serde(default)]
    pub format: Format,
    /// Exec: argv, no shell.
    pub command: Option<Vec<String>>,
}

/// Webhook or local command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    /// An HTTP request.
    Webhook,
    /// A local command.
    Exec,
}

/// Who delivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every agent that sees the event.
    #[default]
    Local,
    /// Exactly one agent in the cluster.
    Cluster,
}

/// Webhook body shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// swimd's JSON payload.
    #[default]
    Standard,
    /// Alertmanager's webhook payload.
    Alertmanager,
}

fn any_member() -> String {
    "*".into()
}
fn default_settle() -> Duration {
    Duration::from_secs(1)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_attempts() -> u32 {
    8
}
fn default_backoff_base() -> Duration {
    Duration::from_millis(500)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(60)
}
fn default_hold_down() -> Duration {
    Duration::from_secs(10)
}
fn default_flap_threshold() -> u32 {
    3
}
fn default_flap_window() -> Duration {
    Duration::from_secs(600)
}
fn default_flap_hold_down() -> Duration {
    Duration::from_secs(120)
}
fn default_max_failed_fraction() -> f64 {
    0.5
}
fn default_method() -> String {
    "POST".into()
}

/// A checked hook, ready to run.
#[derive(Debug, Clone)]
pub struct Hook {
    /// As written.
    pub spec: HookSpec,
    /// `spec.members` compiled.
    pub members: GlobMatcher,
    /// The signing key (decoded `secret`).
    pub key: Option<Vec<u8>>,
}

/// Longest hook name, so note keys stay short.
pub const MAX_HOOK_NAME: usize = 64;

impl HookSpec {
    /// Checks everything serde could not; the error names the key at fault.
    pub fn validate(self) -> Result<Hook, SpecError> {
        crate::model::validate_name(&self.name, MAX_HOOK_NAME)?;
        if self.events.is_empty() {
            return Err(SpecError::new(
                "events",
                format!("list at least one of {}", EVENTS.join(", ")),
            ));
        }
        if let Some(bad) = self.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
            return Err(SpecError::new(
                "events",
                format!("unknown event {bad:?} (expected: {})", EVENTS.join(", ")),
            ));
        }
        let members = Glob::new(&self.members)
            .map_err(|e| {
                SpecError::new("members", format!("{:?} is not a glob: {e}", self.members))
            })?
            .compile_matcher();
        if self.timeout.is_zero() {
            return Err(SpecError::new("timeout", "must be more than 0".into()));
        }
        if self.max_attempts == 0 {
            return Err(SpecError::new("max_attempts", "must be at least 1".into()));
        }
        if self.backoff_base.is_zero() || self.backoff_max < self.backoff_base {
            return Err(SpecError::new(
                "backoff_max",
                "backoff_base must be more than 0 and backoff_max at least backoff_base".into(),
            ));
        }
        if !(self.max_failed_fraction > 0.0 && self.max_failed_fraction <= 1.0) {
            return Err(SpecError::new(
                "max_failed_fraction",
                format!("({}) must be in (0, 1]", self.max_failed_fraction),
            ));
        }
        if self.flap_threshold == 0 {
            return Err(SpecError::new(
                "flap_threshold",
                "must be at least 1".into(),
            ));
        }
        let mut key = None;
        match self.kind {
            HookKind::Webhook => {
                let Some(url) = &self.url else {
                    return Err(SpecError::new(
                        "url",
                        "a webhook needs url = \"http(s)://…\"".into(),
                    ));
                };
                let parsed = reqwest::Url::parse(url)
                    .map_err(|e| SpecError::new("url", format!("{url:?} is not a URL: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(SpecError::new(
                        "url",
                        format!("{url:?} must be http:// or https://"),
                    ));
                }
                if reqwest::Method::from_bytes(self.method.as_bytes()).is_err() {
                    return Err(SpecError::new(
                        "method",
                        format!("{:?} is not an HTTP method", self.method),
                    ));
                }
                for (name, value) in &self.headers {
                    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                        || reqwest::header::HeaderValue::from_str(value).is_err()
                    {
                        return Err(SpecError::new(
                            "headers",
                            format!("{name:?} is not a valid header"),
                        ));
                    }
                }
                if self.command.is_some() {
                    return Err(SpecError::new(
                        "command",
                        "only exec hooks take a command".into(),
                    ));
                }
                if let Some(secret) = &self.secret {
                    key = Some(
                        super::payload::decode_secret(secret)
                            .map_err(|e| SpecError::new("secret", e))?,
                    );
                }
            }
            HookKind::Exec => {
                match &self.command {
                    Some(argv) if argv.first().is_some_and(|p| !p.is_empty()) => {}
                    _ => {
                        return Err(SpecError::new(
                            "command",
                            "an exec hook needs command = [\"/path/to/program\", \"arg\", …]"
                                .into(),
                        ));
                    }
                }
                for (k, v) in [
                    ("url", self.url.is_some()),
                    ("secret", self.secret.is_some()),
                ] {
                    if v {
                        return Err(SpecError::new(k, "only webhooks take this key".into()));
                    }
                }
            }
        }
        Ok(Hook {
            spec: self,
            members,
            key,
        })
    }
}

impl Hook {
    /// Does this hook want `event` about a member with this name and tags?
    pub fn wants(&self, event: &str, member: &str, tags: &Tags) -> bool {
        self.spec.events.iter().any(|e| e == event)
            && self.members.is_match(member)
            && self.matches_member(member, tags)
    }

    /// Is a member covered by this hook's member and tag filters?
    pub fn matches_member(&self, member: &str, tags: &Tags) -> bool {
        self.members.is_match(member)
            && self
                .spec
                .tags
                .iter()
                .all(|(k, v)| tags.get(k).is_some_and(|t| t == v))
    }

    /// Does this hook fail members out (so hold-down and the failed-fraction cap apply)?
    pub fn fails_over(&self) -> bool {
        self.spec
            .events
            .iter()
            .any(|e| e == "member.failed" || e == "member.critical")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> Result<Hook, SpecError> {
        let text = format!(
            "name = \"lb\"\nkind = \"webhook\"\nevents = [\"member.failed\"]\nurl = \"http://127.0.0.1:9/\"\n{extra}"
        );
        toml::from_str::<HookSpec>(&text)
            .map_err(|e| SpecError::new("toml", e.to_string()))?
            .validate()
    }

    #[test]
    fn defaults_are_sane() {
        let hook = spec("").unwrap();
        assert_eq!(hook.spec.scope, Scope::Local);
        assert_eq!(hook.spec.timeout, Duration::from_secs(5));
        assert_eq!(hook.spec.max_failed_fraction, 0.5);
        assert!(hook.wants("member.failed", "anything", &Tags::new()));
        assert!(!hook.wants("member.joined", "anything", &Tags::new()));
    }

    #[test]
    fn filters_on_name_glob_and_tags() {
        let hook = spec("members = \"web-*\"\ntags = { role = \"web\" }").unwrap();
        let web: Tags = [("role".to_string(), "web".to_string())].into();
        assert!(hook.wants("member.failed", "web-1", &web));
        assert!(!hook.wants("member.failed", "db-1", &web));
        assert!(!hook.wants("member.failed", "web-1", &Tags::new()));
    }

    #[test]
    fn bad_values_name_their_key() {
        assert_eq!(spec("name = \"a b\"").err().map(|e| e.key), Some("toml"));
        for (extra, key) in [
            ("max_attempts = 0", "max_attempts"),
            ("max_failed_fraction = 0.0", "max_failed_fraction"),
            ("secret = \"nope\"", "secret"),
            ("command = [\"/bin/true\"]", "command"),
            ("members = \"[\"", "members"),
            ("method = \"BAD METHOD\"", "method"),
        ] {
            assert_eq!(spec(extra).err().map(|e| e.key), Some(key), "{extra}");
        }
        let e = toml::from_str::<HookSpec>(
            "name = \"x\"\nkind = \"exec\"\nevents = [\"member.gone\"]\ncommand = [\"/bin/true\"]",
        )
        .unwrap()
        .validate()
        .err()
        .unwrap();
        assert_eq!(e.key, "events");
        assert!(e.problem.contains("member.failed"), "{}", e.problem);
    }
}

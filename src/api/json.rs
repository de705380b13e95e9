//! The API's JSON: what each route answers and accepts, and the conversions from the
//! agent's typed answers, written once. The CLI decodes the same types.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::model::{
    Event, Fitness, Health, MemberView, SelfView, Software, State, StateCounts, Tags,
    TransportTotals,
};

/// A member as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberJson {
    /// Unique name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// `alive`, `suspect`, `failed` or `left`.
    #[serde(with = "crate::model::state_word")]
    pub state: State,
    /// The member's incarnation.
    pub incarnation: u64,
    /// Its tags.
    pub tags: Tags,
    /// Seconds since it entered its state (as this agent saw it).
    pub state_age_s: f64,
    /// Its service health: `passing`, `critical` (its checks fail) or `maintenance`.
    #[serde(default)]
    pub health: Health,
    /// The checks failing on it (empty when passing).
    #[serde(default)]
    pub failing_checks: Vec<String>,
    /// In maintenance: the reason given (possibly empty); `null` otherwise.
    #[serde(default)]
    pub maintenance: Option<String>,
    /// What it runs, as it advertised; `null` for v0.1.0 agents.
    #[serde(with = "crate::model::software_fields", default)]
    pub software: Option<Software>,
}

impl MemberJson {
    /// A member as seen at `now` (its state age is measured to it).
    pub fn new(m: &MemberView, now: Instant) -> Self {
        MemberJson {
            name: m.info.name.to_string(),
            addr: m.info.addr.to_string(),
            state: m.state,
            incarnation: m.incarnation.0,
            tags: m.info.tags.clone(),
            state_age_s: (now.saturating_duration_since(m.since).as_millis() as f64) / 1000.0,
            health: m.info.health(),
            failing_checks: m.info.failing.clone(),
            maintenance: m.info.maintenance.clone(),
            software: m.info.software.clone(),
        }
    }
}

/// `GET /v1/self`: this agent's own entry plus its local view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfJson {
    /// Our member entry.
    pub member: MemberJson,
    /// The cluster name.
    pub cluster: String,
    /// True once another member is known alive (or a seed answered).
    pub joined: bool,
    /// Lifeguard local health score (0 = healthy).
    pub health_score: u32,
    /// Members by state, ourselves included.
    pub counts: StateCounts,
    /// `swimd --version`.
    pub version: String,
    /// What the gossip transport has sent and received so far.
    #[serde(default)]
    pub transport: TransportTotals,
}

impl From<&SelfView> for SelfJson {
    fn from(v: &SelfView) -> Self {
        SelfJson {
            member: MemberJson::new(&v.member, v.at),
            cluster: v.cluster.clone(),
            joined: v.joined,
            health_score: v.health_score,
            counts: v.counts,
            version: v.version.clone(),
            transport: v.transport,
        }
    }
}

impl From<&Fitness> for HealthJson {
    fn from(f: &Fitness) -> Self {
        match f {
            Fitness::Fit => HealthJson {
                status: "ok".to_string(),
                reason: String::new(),
            },
            Fitness::Unfit(reason) => HealthJson {
                status: "unhealthy".to_string(),
                reason: reason.clone(),
            },
        }
    }
}

impl From<&Event> for EventJson {
    fn from(e: &Event) -> Self {
        EventJson {
            id: e.id,
            kind: e.kind.as_str().to_string(),
            timestamp: e.timestamp,
            member: MemberJson::new(&e.member, e.at),
            previous_state: e.previous,
            observed_by: e.observed_by.to_string(),
        }
    }
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthJson {
    /// `ok` or `unhealthy`.
    pub status: String,
    /// Why not ok (empty when ok).
    pub reason: String,
}

/// One membership event as the API and hooks see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventJson {
    /// Sequence number on this agent (the SSE id).
    pub id: u64,
    /// `member.joined`, `member.failed`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix time in seconds (with milliseconds).
    pub timestamp: f64,
    /// The member after the change.
    pub member: MemberJson,
    /// Its state before the change, if it was known.
    #[serde(with = "crate::model::option_state_word")]
    pub previous_state: Option<State>,
    /// The agent that observed it.
    pub observed_by: String,
}

/// `GET /v1/members`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembersJson {
    /// Members sorted by name.
    pub members: Vec<MemberJson>,
}

/// `POST /v1/join` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// `host:port` addresses to contact.
    pub addrs: Vec<String>,
}

/// `POST /v1/join` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinJson {
    /// How many addresses the agent resolved and contacted.
    pub contacted: usize,
}

/// `PUT /v1/self/tags` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagsRequest {
    /// The complete new tag set.
    pub tags: Tags,
}

/// `PUT /v1/self/maintenance` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// Why (shown in `swimd members`, hook payloads and logs); at most 256 bytes.
    #[serde(default)]
    pub reason: String,
}

/// The answer of the action endpoints (`leaving`, `left`, `updated`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusJson {
    /// What happened.
    pub status: String,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorJson {
    /// What went wrong, for a human.
    pub error: String,
}

/// `GET /v1/hooks`.
#[derive(Debug, Serialize, Deserialize)]
pub struct HooksJson {
    /// Every configured hook.
    pub hooks: Vec<crate::hooks::HookStatus>,
}

/// `POST /v1/hooks/{name}/test` body (both optional).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookTestRequest {
    /// Event type (default: the hook's first).
    #[serde(default)]
    pub event: Option<String>,
    /// Member the sample is about (default: this agent).
    #[serde(default)]
    pub member: Option<String>,
}

/// `POST /v1/hooks/replay` body (optional).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only this hook's dead letters.
    #[serde(default)]
    pub hook: Option<String>,
}

/// `POST /v1/hooks/replay` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplayJson {
    /// Dead letters moved back to the outbox.
    pub replayed: usize,
}

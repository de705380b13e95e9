//! What a hook delivers: the event record, its JSON forms, the Standard Webhooks signature,
//! body templates and an exec hook's environment.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Health, MemberView, State, Tags};

/// A member as a hook payload shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadMember {
    /// Name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// Tags.
    pub tags: Tags,
    /// Incarnation the event is about.
    pub incarnation: u64,
    /// Its service health: `passing`, `critical` or `maintenance`.
    #[serde(default)]
    pub health: Health,
    /// Its failing checks.
    #[serde(default)]
    pub failing_checks: Vec<String>,
    /// In maintenance: the reason given; `null` otherwise.
    #[serde(default)]
    pub maintenance: Option<String>,
}

impl From<&MemberView> for PayloadMember {
    fn from(m: &MemberView) -> Self {
        PayloadMember {
            name: m.info.name.to_string(),
            addr: m.info.addr.to_string(),
            tags: m.info.tags.clone(),
            incarnation: m.incarnation.0,
            health: m.info.health(),
            failing_checks: m.info.failing.clone(),
            maintenance: m.info.maintenance.clone(),
        }
    }
}

#[cfg(test)]
impl PayloadMember {
    /// A passing member at 127.0.0.1:1 with no tags, for tests.
    pub(crate) fn sample(name: &str, incarnation: u64) -> PayloadMember {
        PayloadMember {
            name: name.into(),
            addr: "127.0.0.1:1".into(),
            tags: Tags::new(),
            incarnation,
            health: Health::Passing,
            failing_checks: Vec::new(),
            maintenance: None,
        }
    }
}

/// One event for hooks: what goes into the outbox and, as JSON, to the receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookEvent {
    /// `member.failed`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds (with milliseconds) when this agent saw it.
    pub timestamp: f64,
    /// The event's details.
    pub data: EventData,
}

/// The `data` object of a payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    /// Cluster name.
    pub cluster: String,
    /// The member.
    pub member: PayloadMember,
    /// Its state before, if known.
    #[serde(with = "crate::model::option_state_word")]
    pub previous_state: Option<State>,
    /// The agent that saw it.
    pub observed_by: String,
    /// Idempotency key per (cluster, member, incarnation, event): the `webhook-id`.
    pub id: String,
}

impl HookEvent {
    /// Builds an event; its id depends only on (cluster, member, incarnation, kind), so every
    /// agent and every retry names it the same.
    pub fn new(
        kind: &str,
        timestamp: f64,
        cluster: &str,
        member: PayloadMember,
        previous_state: Option<State>,
        observed_by: &str,
    ) -> HookEvent {
        let id = event_id(cluster, &member.name, member.incarnation, kind);
        HookEvent {
            kind: kind.to_string(),
            timestamp,
            data: EventData {
                cluster: cluster.to_string(),
                member,
                previous_state,
                observed_by: observed_by.to_string(),
                id,
            },
        }
    }

    /// The JSON body.
    pub fn json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The body in Alertmanager's webhook format (version 4): a failure-like event fires an
    /// alert, anything else resolves it.
    pub fn alertmanager_json(&self) -> Vec<u8> {
        let firing = matches!(self.kind.as_str(), "member.failed" | "member.suspect");
        let status = if firing { "firing" } else { "resolved" };
        let at = httpdate_rfc3339(self.timestamp);
        let member = &self.data.member;
        let labels = serde_json::json!({
            "alertname": "SwimdMemberDown",
            "cluster": self.data.cluster,
            "member": member.name,
            "addr": member.addr,
            "severity": "critical",
        });
        let fingerprint =
            hex(&Sha256::digest(format!("{}/{}", self.data.cluster, member.name).as_bytes())[..8]);
        let alert = serde_json::json!({
            "status": status,
            "labels": labels,
            "annotations": {
                "summary": format!("{} is {}", member.name, self.kind.trim_start_matches("member.")),
                "description": format!(
                    "swimd on {} saw {} ({}, incarnation {})",
                    self.data.observed_by, self.kind, member.addr, member.incarnation
                ),
            },
            "startsAt": at,
            "endsAt": if firing { "0001-01-01T00:00:00Z".to_string() } else { at.clone() },
            "generatorURL": "",
            "fingerprint": fingerprint,
        });
        let body = serde_json::json!({
            "version": "4",
            "groupKey": format!("{{}}:{{alertname=\"SwimdMemberDown\",member=\"{}\"}}", member.name),
            "truncatedAlerts": 0,
            "status": status,
            "receiver": "swimd",
            "groupLabels": {"alertname": "SwimdMemberDown", "member": member.name},
            "commonLabels": labels,
            "commonAnnotations": {},
            "externalURL": "",
            "alerts": [alert],
        });
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// Fills a body template: `{{type}}`, `{{id}}`, `{{cluster}}`, `{{timestamp}}`,
    /// `{{observed_by}}`, `{{previous_state}}`, `{{member.name}}`, `{{member.addr}}`,
    /// `{{member.host}}`, `{{member.port}}`, `{{member.incarnation}}`, `{{member.tags.KEY}}`.
    /// Unknown placeholders are left as written. Values are escaped as JSON string
    /// contents (the body goes out as `application/json`; write placeholders inside
    /// quotes): a member's tag cannot add fields or break the document.
    pub fn render(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = after[..end].trim();
            match self.placeholder(name) {
                Some(value) => out.push_str(&json_string_contents(&value)),
                None => out.push_str(&rest[start..start + 4 + end]),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn placeholder(&self, name: &str) -> Option<String> {
        let member = &self.data.member;
        let (host, port) = member
            .addr
            .parse::<std::net::SocketAddr>()
            .map(|a| (a.ip().to_string(), a.port().to_string()))
            .unwrap_or_default();
        Some(match name {
            "type" => self.kind.clone(),
            "id" => self.data.id.clone(),
            "cluster" => self.data.cluster.clone(),
            "timestamp" => format!("{:.3}", self.timestamp),
            "observed_by" => self.data.observed_by.clone(),
            "previous_state" => self.data.previous_state.map_or("", State::as_str).into(),
            "member.name" => member.name.clone(),
            "member.addr" => member.addr.clone(),
            "member.host" => host,
            "member.port" => port,
            "member.incarnation" => member.incarnation.to_string(),
            _ => member.tags.get(name.strip_prefix("member.tags.")?)?.clone(),
        })
    }

    /// An exec hook's environment.
    pub fn env(&self, self_name: &str) -> Vec<(String, String)> {
        let member = &self.data.member;
        let mut env = vec![
            ("SWIMD_EVENT".to_string(), self.kind.clone()),
            ("SWIMD_EVENT_ID".to_string(), self.data.id.clone()),
            ("SWIMD_MEMBER_NAME".to_string(), member.name.clone()),
            ("SWIMD_MEMBER_ADDR".to_string(), member.addr.clone()),
            (
                "SWIMD_MEMBER_INCARNATION".to_string(),
                member.incarnation.to_string(),
            ),
            (
                "SWIMD_PREVIOUS_STATE".to_string(),
                self.data.previous_state.map_or("", State::as_str).into(),
            ),
            ("SWIMD_CLUSTER".to_string(), self.data.cluster.clone()),
            ("SWIMD_SELF_NAME".to_string(), self_name.to_string()),
            (
                "SWIMD_MEMBER_HEALTH".to_string(),
                member.health.as_str().into(),
            ),
        ];
        if let Some(reason) = &member.maintenance {
            // Control characters are refused where the reason is set; a NUL from an older
            // or hostile peer is dropped as in tags.
            env.push((
                "SWIMD_MAINTENANCE_REASON".to_string(),
                reason.replace('\0', ""),
            ));
        }
        for (key, value) in &member.tags {
            let key: String = key
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            // A NUL cannot be passed in the environment: dropped, or every delivery about
            // this member would fail to start.
            env.push((format!("SWIMD_TAG_{key}"), value.replace('\0', "")));
        }
        env
    }
}

/// `value` escaped for the inside of a JSON string (without the quotes).
fn json_string_contents(value: &str) -> String {
    let quoted = serde_json::Value::String(value.to_string()).to_string();
    quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or_default()
        .to_string()
}

/// The idempotency key of an event: `evt_` and 24 hex digits of a SHA-256.
pub fn event_id(cluster: &str, member: &str, incarnation: u64, kind: &str) -> String {
    let digest = Sha256::digest(format!("{cluster}\0{member}\0{incarnation}\0{kind}").as_bytes());
    format!("evt_{}", hex(&digest[..12]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes a Standard Webhooks secret: `whsec_` followed by base64.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret.strip_prefix("whsec_").ok_or_else(|| {
        "must start with whsec_ followed by base64 (Standard Webhooks)".to_string()
    })?;
    let key = BASE64
        .decode(encoded)
        .map_err(|e| format!("the part after whsec_ is not base64: {e}"))?;
    if key.len() < 16 {
        return Err(format!(
            "the key is {} bytes; use at least 16 (e.g. `openssl rand -base64 32`)",
            key.len()
        ));
    }
    Ok(key)
}

/// The `webhook-signature` header value: `v1,` and the base64 HMAC-SHA256 of
/// `id.timestamp.body`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// Checks a `webhook-signature` header (a space-separated list) against the body.
pub fn verify(key: &[u8], id: &str, timestamp: u64, body: &[u8], header: &str) -> bool {
    let expected = sign(key, id, timestamp, body);
    header.split(' ').any(|candidate| {
        candidate.len() == expected.len()
            && candidate
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

/// Unix seconds as RFC 3339 (UTC).
fn httpdate_rfc3339(unix: f64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis((unix * 1000.0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> HookEvent {
        HookEvent::new(
            "member.failed",
            1_700_000_000.5,
            "prod",
            PayloadMember {
                addr: "10.0.0.1:7946".into(),
                tags: [("role".to_string(), "web".to_string())].into(),
                ..PayloadMember::sample("web-1", 3)
            },
            Some(State::Suspect),
            "web-2",
        )
    }

    /// The published Standard Webhooks test vector (standard-webhooks/standard-webhooks).
    #[test]
    fn standard_webhooks_test_vector() {
        let key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
            "v1,bm9ldHU= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
        assert!(!verify(&key, "msg_other", 1614265330, b"{}", &signature));
    }

    #[test]
    fn secrets_must_be_whsec_base64() {
        assert!(decode_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(decode_secret("whsec_!!!").is_err());
        assert!(decode_secret("whsec_c2hvcnQ=").is_err(), "too short");
    }

    #[test]
    fn id_is_stable_per_member_incarnation_and_event() {
        let a = event();
        let mut b = event();
        b.timestamp += 10.0;
        b.data.observed_by = "web-3".into();
        assert_eq!(
            a.data.id,
            HookEvent::new(
                "member.failed",
                0.0,
                "prod",
                b.data.member.clone(),
                None,
                "x"
            )
            .data
            .id
        );
        assert_eq!(event_id("prod", "web-1", 3, "member.failed"), a.data.id);
        assert_ne!(event_id("prod", "web-1", 4, "member.failed"), a.data.id);
        assert_ne!(event_id("prod", "web-1", 3, "member.recovered"), a.data.id);
        assert!(a.data.id.starts_with("evt_") && a.data.id.len() == 28);
    }

    #[test]
    fn payload_has_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_slice(&event().json()).unwrap();
        assert_eq!(v["type"], "member.failed");
        assert_eq!(v["data"]["cluster"], "prod");
        assert_eq!(v["data"]["member"]["name"], "web-1");
        assert_eq!(v["data"]["member"]["tags"]["role"], "web");
        assert_eq!(v["data"]["member"]["incarnation"], 3);
        assert_eq!(v["data"]["previous_state"], "suspect");
        assert_eq!(v["data"]["observed_by"], "web-2");
        assert!(v["timestamp"].is_f64());
    }

    #[test]
    fn alertmanager_format_fires_and_resolves() {
        let v: serde_json::Value = serde_json::from_slice(&event().alertmanager_json()).unwrap();
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["alerts"][0]["labels"]["member"], "web-1");
        let mut recovered = event();
        recovered.kind = "member.recovered".into();
        let v: serde_json::Value = serde_json::from_slice(&recovered.alertmanager_json()).unwrap();
        assert_eq!(v["alerts"][0]["status"], "resolved");
    }

    #[test]
    fn templates_fill_known_placeholders_only() {
        let out = event().render(
            "set server be/{{ member.name }} state maint # {{member.host}}:{{member.port}} \
             {{member.tags.role}} {{nope}} {{type}}",
        );
        assert_eq!(
            out,
            "set server be/web-1 state maint # 10.0.0.1:7946 web {{nope}} member.failed"
        );
        assert_eq!(event().render("unclosed {{type"), "unclosed {{type");
    }

    #[test]
    fn member_controlled_values_cannot_add_fields_to_a_template_body() {
        let mut e = event();
        e.data
            .member
            .tags
            .insert("role".into(), "x\",\"state\":\"ready\\\n\u{0}".into());
        let out = e.render("{\"member\": \"{{member.name}}\", \"role\": \"{{member.tags.role}}\"}");
        let v: serde_json::Value = serde_json::from_str(&out).expect(&out);
        assert_eq!(v.as_object().unwrap().len(), 2, "{out}");
        assert_eq!(v["role"], "x\",\"state\":\"ready\\\n\u{0}");
    }

    #[test]
    fn a_nul_in_a_tag_is_dropped_from_the_environment() {
        let mut e = event();
        e.data
            .member
            .tags
            .insert("zone".into(), "eu\u{0}west".into());
        let env = e.env("me");
        assert!(
            env.iter()
                .all(|(k, v)| !k.contains('\0') && !v.contains('\0'))
        );
        assert!(env.contains(&("SWIMD_TAG_ZONE".to_string(), "euwest".to_string())));
    }

    #[test]
    fn exec_environment_names_the_member_and_its_tags() {
        let env = event().env("me");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("SWIMD_EVENT"), Some("member.failed"));
        assert_eq!(get("SWIMD_MEMBER_NAME"), Some("web-1"));
        assert_eq!(get("SWIMD_MEMBER_ADDR"), Some("10.0.0.1:7946"));
        assert_eq!(get("SWIMD_SELF_NAME"), Some("me"));
        assert_eq!(get("SWIMD_TAG_ROLE"), Some("web"));
        assert!(get("SWIMD_EVENT_ID").is_some_and(|id| id.starts_with("evt_")));
    }
}

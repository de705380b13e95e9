//! The agent's configuration file: read, validated and resolved completely before the agent
//! binds a port, so a bad file ends the process with one line naming file, position and key.
//!
//! The file is walked as a spanned TOML tree rather than derived with serde, because every
//! error must carry the line and column of the offending key or value, and serde's `flatten`
//! would lose unknown-key errors for the `[gossip]` table, which mixes agent settings with
//! every field of [`crate::core::Config`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::IntoDeserializer;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::checks::CheckSpec;
use crate::core::Config as ProtocolConfig;
use crate::hooks::spec::HookSpec;
use crate::model::SpecError;
use crate::wire::{NodeName, Tags, tags_len};

/// The exit status for any configuration error (`EX_CONFIG` in sysexits.h).
pub const EXIT_CONFIG: u8 = 78;

/// Longest cluster name accepted, in bytes.
pub const MAX_CLUSTER_LEN: usize = 64;

/// Default ports, also suggested in messages when a configured port is 0.
const GOSSIP_PORT: u16 = 7946;
const API_PORT: u16 = 7947;
const METRICS_PORT: u16 = 9946;
const HAPROXY_AGENT_PORT: u16 = 7948;

/// The whole agent configuration, as read from one file.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// This member's identity.
    pub node: NodeConfig,
    /// Addresses, seeds and protocol timings.
    pub gossip: GossipConfig,
    /// Mutual-TLS material for the QUIC transport.
    pub tls: TlsConfig,
    /// The local HTTP API.
    pub api: ApiConfig,
    /// The Prometheus metrics listener.
    pub metrics: MetricsConfig,
    /// Where state survives restarts.
    pub state: StateConfig,
    /// Log filter and format.
    pub log: LogConfig,
    /// `[[hooks]]`, each already checked.
    pub hooks: Vec<HookSpec>,
    /// `[[checks]]`, each already checked.
    pub checks: Vec<CheckSpec>,
    /// `[haproxy_agent]`: HAProxy's agent-check port, if enabled.
    pub haproxy_agent: Option<HaproxyAgentConfig>,
    /// The file this configuration came from (a reload reads it again).
    pub path: PathBuf,
}

/// `[node]`: who this member is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The member's name, unique in the cluster.
    pub name: NodeName,
    /// The cluster's name; peers with another name are ignored.
    pub cluster: String,
    /// Key/value metadata gossiped with the member.
    pub tags: Tags,
}

/// `[gossip]`: how this member reaches and is reached by the others.
#[derive(Clone, Debug, PartialEq)]
pub struct GossipConfig {
    /// The local UDP address the QUIC endpoint binds.
    pub bind: SocketAddr,
    /// The address peers reach this member at, when it differs from `bind`.
    pub advertise: Option<SocketAddr>,
    /// Members to join through, unresolved.
    pub seeds: Vec<Seed>,
    /// Protocol timings and limits.
    pub protocol: ProtocolConfig,
}

impl GossipConfig {
    /// The address peers reach this member at: `advertise` if set, else `bind`.
    pub fn advertise_addr(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.bind)
    }
}

/// `[tls]`: certificate files, resolved against the config file's folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The cluster's CA certificate (PEM), which every peer's certificate must chain to.
    pub ca: PathBuf,
    /// This member's certificate chain (PEM).
    pub cert: PathBuf,
    /// This member's private key (PEM).
    pub key: PathBuf,
    /// Certificate revocation lists (PEM, one or more), each signed by a CA in `ca`.
    pub crl: Option<PathBuf>,
}

/// `[api]`: the local HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// The TCP address the API listens on.
    pub listen: SocketAddr,
    /// The bearer token clients must present, if any.
    pub token: Option<String>,
    /// Open HTTP connections per listener (API, metrics); at the limit the oldest that has
    /// not sent a request makes room.
    pub max_connections: usize,
    /// A client that has not sent a request's headers within this is disconnected (idle
    /// keep-alive connections included).
    pub header_timeout: Duration,
}

/// `[metrics]`: the read-only Prometheus listener (`/metrics` and `/v1/health`, no token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The TCP address it listens on; `None` when written as `"off"`.
    pub listen: Option<SocketAddr>,
    /// Export `swimd_member_up{member}`, one series per known member.
    pub member_up: bool,
}

/// `[haproxy_agent]`: answers HAProxy's agent checks.
#[derive(Clone, Debug, PartialEq)]
pub struct HaproxyAgentConfig {
    /// The TCP address it listens on.
    pub listen: SocketAddr,
    /// Never answer more than this share of the members down at once.
    pub max_failed_fraction: f64,
}

/// `[state]`: persistent state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateConfig {
    /// The folder for state kept across restarts, resolved against the config file's folder.
    pub dir: PathBuf,
}

/// `[log]`: what is logged and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// A level (`error` … `trace`) or a `tracing_subscriber::EnvFilter` directive string.
    pub level: String,
    /// The line format.
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A member to join through, as written in `gossip.seeds`; DNS is resolved by the agent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seed {
    /// `host:port`, the host an IP literal (IPv6 without its brackets) or a DNS name.
    Addr {
        /// IP literal or DNS name.
        host: String,
        /// UDP port.
        port: u16,
    },
    /// `srv:NAME`: the targets of a DNS SRV record.
    Srv(String),
}

impl FromStr for Seed {
    type Err = String;

    /// Parses `host:port`, `[ipv6]:port` or `srv:NAME`; the error says what to write instead.
    fn from_str(text: &str) -> Result<Seed, String> {
        let usage = "write HOST:PORT (e.g. \"10.0.0.1:7946\", \"[fd00::1]:7946\" or \
                     \"node-1.example.com:7946\") or srv:NAME";
        if let Some(name) = text.strip_prefix("srv:") {
            if name.is_empty() {
                return Err(format!("{text:?} has no SRV record name; {usage}"));
            }
            if !is_dns_name(name) {
                return Err(format!("{text:?}: {name:?} is not a DNS name; {usage}"));
            }
            return Ok(Seed::Srv(name.to_string()));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let Some((ip, port)) = rest.split_once("]:") else {
                return Err(format!(
                    "{text:?} has no port after the bracketed address; {usage}"
                ));
            };
            if ip.parse::<Ipv6Addr>().is_err() {
                return Err(format!("{text:?}: {ip:?} is not an IPv6 address; {usage}"));
            }
            (ip, port)
        } else {
            let Some((host, port)) = text.rsplit_once(':') else {
                return Err(format!("{text:?} has no port; {usage}"));
            };
            if host.contains(':') {
                return Err(format!("{text:?}: an IPv6 address needs brackets; {usage}"));
            }
            if host.parse::<Ipv4Addr>().is_err() && !is_dns_name(host) {
                return Err(format!(
                    "{text:?}: {host:?} is not an IP address or a DNS name; {usage}"
                ));
            }
            (host, port)
        };
        match port.parse::<u16>() {
            Ok(port) if port != 0 => Ok(Seed::Addr {
                host: host.to_string(),
                port,
            }),
            _ => Err(format!(
                "{text:?}: {port:?} is not a port (1 to 65535); {usage}"
            )),
        }
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seed::Addr { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Seed::Addr { host, port } => write!(f, "{host}:{port}"),
            Seed::Srv(name) => write!(f, "srv:{name}"),
        }
    }
}

/// RFC 1123 host names, plus the leading underscores of SRV names (`_swimd._udp.example.com`).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    // An all-digit last label is a mistyped IPv4 address, never a real name.
    let numeric_tld = name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    name.len() <= 253 && name.split('.').all(label_ok) && !numeric_tld
}

/// A configuration problem, located in its file.
///
/// Displays as one line, `FILE[:LINE:COLUMN]: MESSAGE`, where the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The configuration file, as given.
    pub file: PathBuf,
    /// 1-based line of the offending key or value, when it is in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the offending key or value.
    pub column: Option<usize>,
    /// The dotted key at fault (`gossip.probe_timeout`), when one is.
    pub key: Option<String>,
    /// What is wrong and how to fix it, naming the key.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Every table of the agent's file and the keys it takes. `[gossip]` also takes every
/// protocol setting (`core::Config`'s fields); `[[hooks]]` and `[[checks]]` entries take
/// their specs' keys (checked by serde, so listed empty here). Any other key is an error.
pub const KEYS: [(&str, &[&str]); 10] = [
    ("node", &["name", "cluster", "tags"]),
    ("gossip", &["bind", "advertise", "seeds"]),
    ("tls", &["ca", "cert", "key", "crl"]),
    (
        "api",
        &["listen", "token", "max_connections", "header_timeout"],
    ),
    ("metrics", &["listen", "member_up"]),
    ("state", &["dir"]),
    ("log", &["level", "format"]),
    ("hooks", &[]),
    ("checks", &[]),
    ("haproxy_agent", &["listen", "max_failed_fraction"]),
];

/// The keys `KEYS` lists for `table`.
fn keys_of(table: &str) -> &'static [&'static str] {
    KEYS.iter()
        .find(|(name, _)| *name == table)
        .map_or(&[], |(_, keys)| keys)
}

/// Reads, parses and validates the file at `path`, resolving relative paths against its folder.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        column: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?;
    parse(&text, path)
}

/// Parses and validates `text` as if read from `path` (used for messages and relative paths).
pub fn parse(text: &str, path: &Path) -> Result<AgentConfig, ConfigError> {
    let src = Source { text, file: path };
    let root = DeTable::parse(text)
        .map_err(|e| src.error(e.span(), None, format!("invalid TOML: {}", e.message())))?;
    let root = root.get_ref();
    let protocol_defaults = toml::Table::try_from(ProtocolConfig::default()).map_err(|e| {
        src.error(
            None,
            None,
            format!("cannot list the [gossip] settings: {e}"),
        )
    })?;
    let gossip_keys: Vec<&str> = keys_of("gossip")
        .iter()
        .copied()
        .chain(protocol_defaults.keys().map(String::as_str))
        .collect();

    // Every unknown key, anywhere, is reported before any value is judged.
    let tables: Vec<&str> = KEYS.iter().map(|(name, _)| *name).collect();
    refuse_unknown_keys(&src, root, "", &tables)?;
    let section = |name: &'static str| Section::new(&src, root, name, keys_of(name));
    let node = section("node")?;
    let gossip = Section::new(&src, root, "gossip", &gossip_keys)?;
    let tls = section("tls")?;
    let api = section("api")?;
    let metrics = section("metrics")?;
    let state = section("state")?;
    let log = section("log")?;
    let haproxy = section("haproxy_agent")?;
    let base = path.parent().unwrap_or(Path::new(""));

    let node_config = parse_node(&node)?;
    let gossip_config = parse_gossip(&gossip, &protocol_defaults)?;
    let max_tags = gossip_config.protocol.max_tags_bytes;
    let encoded = tags_len(&node_config.tags);
    if encoded > max_tags {
        return Err(node.invalid(
            "tags",
            node.span_of("tags"),
            format!(
                "encode to {encoded} bytes, more than gossip.max_tags_bytes ({max_tags}); \
                 shorten them or raise gossip.max_tags_bytes (at most 4096)"
            ),
        ));
    }
    let tls_config = TlsConfig {
        ca: tls.path(
            "ca",
            "the cluster's CA certificate, e.g. \"tls/ca.pem\"",
            base,
        )?,
        cert: tls.path(
            "cert",
            "the node's certificate, e.g. \"tls/node-1.pem\"",
            base,
        )?,
        key: tls.path(
            "key",
            "the node's private key, e.g. \"tls/node-1-key.pem\"",
            base,
        )?,
        crl: match tls.string("crl")? {
            None => None,
            Some(_) => Some(tls.path(
                "crl",
                "revocation lists signed by the CA, e.g. \"tls/crl.pem\" (swimd tls revoke)",
                base,
            )?),
        },
    };
    let api_config = ApiConfig {
        listen: api.socket_addr("listen", (Ipv4Addr::LOCALHOST, API_PORT).into())?,
        token: match api.string("token")? {
            Some(token) if token.get_ref().is_empty() => {
                return Err(api.invalid(
                    "token",
                    Some(token.span()),
                    "must not be empty; set a secret, or remove the key to require none",
                ));
            }
            token => token.map(|t| t.into_inner().to_string()),
        },
        max_connections: api.count("max_connections", 256, 1..=16_384)?,
        header_timeout: api.duration(
            "header_timeout",
            Duration::from_secs(5),
            Duration::from_millis(100)..=Duration::from_secs(300),
        )?,
    };
    let metrics_config = MetricsConfig {
        listen: match metrics.string("listen")? {
            Some(text) if *text.get_ref() == "off" => None,
            _ => Some(metrics.socket_addr("listen", (Ipv4Addr::UNSPECIFIED, METRICS_PORT).into())?),
        },
        member_up: metrics.boolean("member_up", true)?,
    };
    let state_config = StateConfig {
        dir: state.path(
            "dir",
            "the folder for state kept across restarts, e.g. \"state/node-1\"",
            base,
        )?,
    };
    let log_config = parse_log(&log)?;
    let hooks = parse_hooks(&src, root)?;
    let checks = parse_checks(&src, root)?;
    let haproxy_agent = match haproxy.table {
        Some(_) => Some(HaproxyAgentConfig {
            listen: haproxy
                .socket_addr("listen", (Ipv4Addr::LOCALHOST, HAPROXY_AGENT_PORT).into())?,
            max_failed_fraction: haproxy.fraction("max_failed_fraction", 0.5)?,
        }),
        None => None,
    };
    Ok(AgentConfig {
        node: node_config,
        gossip: gossip_config,
        tls: tls_config,
        api: api_config,
        metrics: metrics_config,
        state: state_config,
        log: log_config,
        hooks,
        checks,
        haproxy_agent,
        path: path.to_path_buf(),
    })
}

/// `[[hooks]]`: each entry through [`HookSpec`]'s serde, then its own checks.
fn parse_hooks(src: &Source, root: &DeTable) -> Result<Vec<HookSpec>, ConfigError> {
    parse_entries(src, root, "hooks", |spec: &HookSpec| {
        (spec.name.clone(), spec.clone().validate().err())
    })
}

/// `[[checks]]`: each entry through [`CheckSpec`]'s serde, then its own checks.
fn parse_checks(src: &Source, root: &DeTable) -> Result<Vec<CheckSpec>, ConfigError> {
    parse_entries(src, root, "checks", |spec: &CheckSpec| {
        (spec.name.clone(), spec.validate().err())
    })
}

/// An array of tables (`[[NAME]]`) of uniquely named entries: serde first, then
/// `check` (the entry's name and its problem, if any); errors point at the entry's key.
fn parse_entries<T: serde::de::DeserializeOwned>(
    src: &Source,
    root: &DeTable,
    section: &str,
    check: impl Fn(&T) -> (String, Option<SpecError>),
) -> Result<Vec<T>, ConfigError> {
    let Some(value) = root.get(section) else {
        return Ok(Vec::new());
    };
    let DeValue::Array(entries) = value.get_ref() else {
        return Err(src.error(
            Some(value.span()),
            Some(section.into()),
            format!(
                "{section}: expected [[{section}]] entries, found {}",
                describe(value.get_ref())
            ),
        ));
    };
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("{section}[{i}]");
        let DeValue::Table(table) = entry.get_ref() else {
            return Err(src.error(
                Some(entry.span()),
                Some(at.clone()),
                format!(
                    "{at}: expected a table, found {}",
                    describe(entry.get_ref())
                ),
            ));
        };
        let spec = T::deserialize(entry.clone().into_deserializer()).map_err(|e| {
            src.error(
                e.span().or(Some(entry.span())),
                Some(at.clone()),
                format!("{at}: {}", e.message().trim()),
            )
        })?;
        let span_of = |key: &str| table.get(key).map(|v| v.span()).or(Some(entry.span()));
        let (name, problem) = check(&spec);
        if let Some(SpecError { key, problem }) = problem {
            return Err(src.error(
                span_of(key),
                Some(format!("{at}.{key}")),
                format!("{at}.{key} ({section} entry {name:?}): {problem}"),
            ));
        }
        if names.contains(&name) {
            return Err(src.error(
                span_of("name"),
                Some(format!("{at}.name")),
                format!("{at}.name: {name:?} is used twice; names must be unique"),
            ));
        }
        names.push(name);
        out.push(spec);
    }
    Ok(out)
}

fn parse_node(node: &Section) -> Result<NodeConfig, ConfigError> {
    let name = node.required_string("name", "this member's unique name, e.g. \"node-1\"")?;
    NodeName::validate(name.get_ref()).map_err(|why| {
        node.invalid(
            "name",
            Some(name.span()),
            format!("{:?} is invalid: {why}", name.get_ref()),
        )
    })?;
    let cluster = node.required_string("cluster", "the cluster's name, e.g. \"prod\"")?;
    if cluster.get_ref().is_empty() || cluster.get_ref().len() > MAX_CLUSTER_LEN {
        return Err(node.invalid(
            "cluster",
            Some(cluster.span()),
            format!(
                "({:?}) must be 1 to {MAX_CLUSTER_LEN} bytes long",
                cluster.get_ref()
            ),
        ));
    }
    let mut tags = Tags::new();
    if let Some(value) = node.get("tags") {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(node.invalid(
                "tags",
                Some(value.span()),
                format!(
                    "expected a table of strings such as {{ role = \"web\" }}, found {}",
                    describe(value.get_ref())
                ),
            ));
        };
        for (key, value) in table.iter() {
            let DeValue::String(text) = value.get_ref() else {
                return Err(node.src.error(
                    Some(value.span()),
                    Some(format!("node.tags.{}", key.get_ref())),
                    format!(
                        "node.tags.{}: expected a string, found {}",
                        key.get_ref(),
                        describe(value.get_ref())
                    ),
                ));
            };
            tags.insert(key.get_ref().to_string(), text.to_string());
        }
    }
    Ok(NodeConfig {
        name: NodeName::new(name.get_ref()),
        cluster: cluster.get_ref().to_string(),
        tags,
    })
}

fn parse_gossip(
    gossip: &Section,
    protocol_defaults: &toml::Table,
) -> Result<GossipConfig, ConfigError> {
    let bind = gossip.socket_addr("bind", (Ipv4Addr::UNSPECIFIED, GOSSIP_PORT).into())?;
    let advertise = match gossip.string("advertise")? {
        None => None,
        Some(text) => {
            let addr = parse_socket_addr(text.get_ref())
                .map_err(|why| gossip.invalid("advertise", Some(text.span()), why))?;
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(gossip.invalid(
                    "advertise",
                    Some(text.span()),
                    format!(
                        "({addr}) must be an address and port peers can reach, e.g. \"10.0.0.1:7946\""
                    ),
                ));
            }
            Some(addr)
        }
    };
    if bind.ip().is_unspecified() && advertise.is_none() {
        return Err(gossip.invalid(
            "bind",
            gossip.span_of("bind"),
            format!(
                "({bind}) listens on every interface, so peers cannot tell which address \
                 reaches this member; set gossip.advertise, e.g. \"10.0.0.1:{}\"",
                bind.port()
            ),
        ));
    }

    let mut seeds = Vec::new();
    if let Some(value) = gossip.get("seeds") {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(gossip.invalid(
                "seeds",
                Some(value.span()),
                format!(
                    "expected an array of strings such as [\"10.0.0.1:7946\"], found {}",
                    describe(value.get_ref())
                ),
            ));
        };
        for item in items.iter() {
            let DeValue::String(text) = item.get_ref() else {
                return Err(gossip.invalid(
                    "seeds",
                    Some(item.span()),
                    format!("expected a string, found {}", describe(item.get_ref())),
                ));
            };
            seeds.push(
                text.parse::<Seed>()
                    .map_err(|why| gossip.invalid("seeds", Some(item.span()), why))?,
            );
        }
    }

    Ok(GossipConfig {
        bind,
        advertise,
        seeds,
        protocol: parse_protocol(gossip, protocol_defaults)?,
    })
}

/// Builds the protocol settings through `core::Config`'s own serde, so names, types and
/// defaults cannot drift from the core; each key is tried alone first to locate a bad value.
fn parse_protocol(
    gossip: &Section,
    protocol_defaults: &toml::Table,
) -> Result<ProtocolConfig, ConfigError> {
    let mut set: Vec<_> = gossip.table.map_or(Vec::new(), |table| {
        table
            .iter()
            .filter_map(|(key, value)| {
                Some((key, value, protocol_defaults.get(key.get_ref().as_ref())?))
            })
            .collect()
    });
    // The first bad value in file order is the one a reader expects to hear about.
    set.sort_by_key(|(key, _, _)| key.span().start);
    let mut all = DeTable::new();
    for (key, value, default) in set {
        let mut alone = DeTable::new();
        alone.insert(key.clone(), value.clone());
        if let Err(e) = deserialize_protocol(alone, value.span()) {
            let problem = protocol_value_problem(default, value.get_ref(), &e);
            return Err(gossip.invalid(key.get_ref(), Some(value.span()), problem));
        }
        all.insert(key.clone(), value.clone());
    }
    let span = gossip.span.clone().unwrap_or(0..0);
    let protocol = deserialize_protocol(all, span.clone()).map_err(|e| {
        gossip.src.error(
            e.span().or(Some(span)),
            None,
            format!("gossip: {}", e.message()),
        )
    })?;
    protocol.validate().map_err(|e| {
        gossip.src.error(
            gossip.span_of(e.key),
            Some(format!("gossip.{}", e.key)),
            e.to_string(),
        )
    })?;
    Ok(protocol)
}

fn deserialize_protocol(
    table: DeTable<'_>,
    span: Range<usize>,
) -> Result<ProtocolConfig, toml::de::Error> {
    ProtocolConfig::deserialize(Spanned::new(span, DeValue::Table(table)).into_deserializer())
}

/// Says what a protocol setting expects, judged by the type of its default.
fn protocol_value_problem(
    default: &toml::Value,
    value: &DeValue,
    error: &toml::de::Error,
) -> String {
    let found = describe(value);
    match (default, value) {
        (toml::Value::String(_), DeValue::String(text))
            if humantime::parse_duration(text).is_err() =>
        {
            format!(
                "{text:?} is not a duration: write a number and a unit (ms, s, min, h, day), \
                 e.g. \"500ms\", \"2s\" or \"1day\""
            )
        }
        (toml::Value::String(_), _) => {
            format!("expected a duration such as \"500ms\" or \"2s\", found {found}")
        }
        (toml::Value::Integer(_), DeValue::Integer(int)) => {
            format!("({int}) is out of range; expected a non-negative whole number")
        }
        (toml::Value::Integer(_), _) => format!("expected a whole number, found {found}"),
        (toml::Value::Float(_), _) => format!("expected a number such as 1.25, found {found}"),
        (toml::Value::Boolean(_), _) => format!("expected true or false, found {found}"),
        _ => error.message().to_string(),
    }
}

fn parse_log(log: &Section) -> Result<LogConfig, ConfigError> {
    let level = match log.string("level")? {
        None => "info".to_string(),
        Some(level) => {
            let text = level.get_ref().trim();
            if text.is_empty() {
                return Err(log.invalid(
                    "level",
                    Some(level.span()),
                    "must not be empty; use error, warn, info, debug or trace",
                ));
            }
            if let Err(why) = tracing_subscriber::EnvFilter::try_new(text) {
                return Err(log.invalid(
                    "level",
                    Some(level.span()),
                    format!(
                        "({text:?}) is neither a level (error, warn, info, debug, trace) \
                         nor a tracing filter directive: {why}"
                    ),
                ));
            }
            text.to_string()
        }
    };
    let format = match log.string("format")? {
        None => LogFormat::default(),
        Some(format) => match *format.get_ref() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(log.invalid(
                    "format",
                    Some(format.span()),
                    format!("({other:?}) must be \"text\" or \"json\""),
                ));
            }
        },
    };
    Ok(LogConfig { level, format })
}

/// Bind and listen addresses are IP literals: a host name would make the bound interface
/// depend on DNS at start-up.
fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    match text.parse::<SocketAddr>() {
        Ok(addr) => Ok(addr),
        Err(_) => Err(format!(
            "({text:?}) must be an IP address and port, e.g. \"10.0.0.1:7946\" or \"[::1]:7946\""
        )),
    }
}

/// A value's type and, for scalars, the value, as TOML writes it.
fn describe(value: &DeValue) -> String {
    match value {
        DeValue::String(text) => format!("string {text:?}"),
        DeValue::Integer(int) => format!("integer {int}"),
        DeValue::Float(float) => format!("float {float}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        other => other.type_str().to_string(),
    }
}

/// The text being parsed, to turn byte spans into lines and columns.
struct Source<'t> {
    text: &'t str,
    file: &'t Path,
}

impl Source<'_> {
    fn error(
        &self,
        span: Option<Range<usize>>,
        key: Option<String>,
        message: String,
    ) -> ConfigError {
        let position = span.map(|span| self.line_column(span.start));
        ConfigError {
            file: self.file.to_path_buf(),
            line: position.map(|(line, _)| line),
            column: position.map(|(_, column)| column),
            key,
            message,
        }
    }

    fn line_column(&self, offset: usize) -> (usize, usize) {
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (
            before.matches('\n').count() + 1,
            before[line_start..].chars().count() + 1,
        )
    }
}

/// Rejects the first key (in file order) of `table` that is not in `allowed`.
fn refuse_unknown_keys(
    src: &Source,
    table: &DeTable,
    prefix: &str,
    allowed: &[&str],
) -> Result<(), ConfigError> {
    let mut keys: Vec<_> = table.iter().map(|(key, _)| key).collect();
    keys.sort_by_key(|key| key.span().start);
    match keys
        .into_iter()
        .find(|key| !allowed.contains(&key.get_ref().as_ref()))
    {
        None => Ok(()),
        Some(key) => {
            let dotted = format!("{prefix}{}", key.get_ref());
            Err(src.error(
                Some(key.span()),
                Some(dotted.clone()),
                format!(
                    "unknown key {dotted} (expected one of: {})",
                    allowed.join(", ")
                ),
            ))
        }
    }
}

/// One top-level table, possibly absent, with its keys already checked.
struct Section<'a, 'i> {
    src: &'a Source<'a>,
    name: &'static str,
    table: Option<&'a DeTable<'i>>,
    /// Where the table is declared, for errors about keys that were left to their defaults.
    span: Option<Range<usize>>,
}

impl<'a, 'i> Section<'a, 'i> {
    fn new(
        src: &'a Source<'a>,
        root: &'a DeTable<'i>,
        name: &'static str,
        allowed: &[&str],
    ) -> Result<Self, ConfigError> {
        let Some(value) = root.get(name) else {
            return Ok(Section {
                src,
                name,
                table: None,
                span: None,
            });
        };
        let DeValue::Table(table) = value.get_ref() else {
            return Err(src.error(
                Some(value.span()),
                Some(name.to_string()),
                format!(
                    "{name}: expected a table ([{name}]), found {}",
                    describe(value.get_ref())
                ),
            ));
        };
        refuse_unknown_keys(src, table, &format!("{name}."), allowed)?;
        Ok(Section {
            src,
            name,
            table: Some(table),
            span: Some(value.span()),
        })
    }

    fn get(&self, key: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.table.and_then(|table| table.get(key))
    }

    /// The key's value if it is in the file, else the table's header.
    fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.get(key)
            .map(|value| value.span())
            .or_else(|| self.span.clone())
    }

    fn invalid(
        &self,
        key: &str,
        span: Option<Range<usize>>,
        problem: impl fmt::Display,
    ) -> ConfigError {
        let dotted = format!("{}.{key}", self.name);
        let message = format!("{dotted}: {problem}");
        self.src.error(span, Some(dotted), message)
    }

    fn string(&self, key: &str) -> Result<Option<Spanned<&'a str>>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(value) => match value.get_ref() {
                DeValue::String(text) => Ok(Some(Spanned::new(value.span(), text.as_ref()))),
                other => Err(self.invalid(
                    key,
                    Some(value.span()),
                    format!("expected a string, found {}", describe(other)),
                )),
            },
        }
    }

    /// A number in (0, 1].
    fn fraction(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(default);
        };
        let number = match value.get_ref() {
            DeValue::Float(f) => f.to_string().parse::<f64>().ok(),
            DeValue::Integer(i) => i.to_string().parse::<f64>().ok(),
            _ => None,
        };
        match number {
            Some(n) if n > 0.0 && n <= 1.0 => Ok(n),
            _ => Err(self.invalid(
                key,
                Some(value.span()),
                format!(
                    "expected a number in (0, 1] such as 0.5, found {}",
                    describe(value.get_ref())
                ),
            )),
        }
    }

    /// A whole number in `range`.
    fn count(
        &self,
        key: &str,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        let Some(value) = self.get(key) else {
            return Ok(default);
        };
        let number = match value.get_ref() {
            DeValue::Integer(i) => i.to_string().parse::<usize>().ok(),
            _ => None,
        };
        match number {
            Some(n) if range.contains(&n) => Ok(n),
            _ => Err(self.invalid(
                key,
                Some(value.span()),
                format!(
                    "expected a whole number from {} to {}, found {}",
                    range.start(),
                    range.end(),
                    describe(value.get_ref())
                ),
            )),
        }
    }

    /// A duration such as "5s" in `range`.
    fn duration(
        &self,
        key: &str,
        default: Duration,
        range: std::ops::RangeInclusive<Duration>,
    ) -> Result<Duration, ConfigError> {
        let Some(text) = self.string(key)? else {
            return Ok(default);
        };
        match humantime::parse_duration(text.get_ref()) {
            Ok(d) if range.contains(&d) => Ok(d),
            _ => Err(self.invalid(
                key,
                Some(text.span()),
                format!(
                    "expected a duration from {} to {} such as \"{}\", found \"{}\"",
                    humantime::format_duration(*range.start()),
                    humantime::format_duration(*range.end()),
                    humantime::format_duration(default),
                    text.get_ref()
                ),
            )),
        }
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(value) => match value.get_ref() {
                DeValue::Boolean(b) => Ok(*b),
                other => Err(self.invalid(
                    key,
                    Some(value.span()),
                    format!("expected true or false, found {}", describe(other)),
                )),
            },
        }
    }

    fn required_string(&self, key: &str, hint: &str) -> Result<Spanned<&'a str>, ConfigError> {
        self.string(key)?.ok_or_else(|| {
            let dotted = format!("{}.{key}", self.name);
            self.src.error(
                None,
                Some(dotted.clone()),
                format!("missing key {dotted} ({hint})"),
            )
        })
    }

    fn socket_addr(&self, key: &str, default: SocketAddr) -> Result<SocketAddr, ConfigError> {
        let Some(text) = self.string(key)? else {
            return Ok(default);
        };
        let addr = parse_socket_addr(text.get_ref())
            .map_err(|why| self.invalid(key, Some(text.span()), why))?;
        if addr.port() == 0 {
            return Err(self.invalid(
                key,
                Some(text.span()),
                format!(
                    "({addr}) needs a fixed port, e.g. \"{}\"",
                    SocketAddr::new(addr.ip(), default.port())
                ),
            ));
        }
        Ok(addr)
    }

    /// A required path, resolved against `base` (the config file's folder).
    fn path(&self, key: &str, hint: &str, base: &Path) -> Result<PathBuf, ConfigError> {
        let text = self.required_string(key, hint)?;
        if text.get_ref().is_empty() {
            return Err(self.invalid(
                key,
                Some(text.span()),
                format!("must not be empty ({hint})"),
            ));
        }
        Ok(base.join(text.get_ref()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MINIMAL: &str = r#"[node]
name = "node-1"
cluster = "demo"
[gossip]
bind = "127.0.0.2:7946"
seeds = ["127.0.0.3:7946"]
[tls]
ca = "tls/ca.pem"
cert = "tls/node-1.pem"
key = "tls/node-1-key.pem"
[api]
listen = "127.0.0.2:7947"
[state]
dir = "state/node-1"
"#;

    fn minimal_with(from: &str, to: &str) -> String {
        assert!(
            MINIMAL.contains(from),
            "{from:?} is not in the minimal file"
        );
        MINIMAL.replacen(from, to, 1)
    }

    fn error_of(text: &str) -> ConfigError {
        match parse(text, Path::new("swimd.toml")) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e,
        }
    }

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/swimd.toml")
    }

    #[test]
    fn minimal_file_loads_with_defaults() {
        let config = parse(MINIMAL, Path::new("/etc/swimd/swimd.toml")).unwrap();
        assert_eq!(config.node.name.as_str(), "node-1");
        assert_eq!(config.node.cluster, "demo");
        assert!(config.node.tags.is_empty());
        assert_eq!(config.gossip.bind, "127.0.0.2:7946".parse().unwrap());
        assert_eq!(config.gossip.advertise, None);
        assert_eq!(config.gossip.advertise_addr(), config.gossip.bind);
        assert_eq!(
            config.gossip.seeds,
            [Seed::Addr {
                host: "127.0.0.3".into(),
                port: 7946
            }]
        );
        assert_eq!(config.gossip.protocol, ProtocolConfig::default());
        assert_eq!(config.api.listen, "127.0.0.2:7947".parse().unwrap());
        assert_eq!(config.api.token, None);
        assert_eq!(
            config.log,
            LogConfig {
                level: "info".into(),
                format: LogFormat::Text
            }
        );
        assert_eq!(config.path, Path::new("/etc/swimd/swimd.toml"));
    }

    #[test]
    fn relative_paths_resolve_against_the_files_folder() {
        let text = minimal_with("ca = \"tls/ca.pem\"", "ca = \"/pki/ca.pem\"");
        let config = parse(&text, Path::new("/etc/swimd/swimd.toml")).unwrap();
        assert_eq!(config.tls.ca, Path::new("/pki/ca.pem"));
        assert_eq!(config.tls.cert, Path::new("/etc/swimd/tls/node-1.pem"));
        assert_eq!(config.tls.key, Path::new("/etc/swimd/tls/node-1-key.pem"));
        assert_eq!(config.state.dir, Path::new("/etc/swimd/state/node-1"));

        let config = parse(MINIMAL, Path::new("conf/node-1.toml")).unwrap();
        assert_eq!(config.tls.ca, Path::new("conf/tls/ca.pem"));
        let config = parse(MINIMAL, Path::new("swimd.toml")).unwrap();
        assert_eq!(config.state.dir, Path::new("state/node-1"));
    }

    #[test]
    fn every_setting_is_read() {
        let text = r#"
[node]
name = "web-1"
cluster = "prod"
tags = { role = "web", zone = "a" }
[gossip]
bind = "[::]:8000"
advertise = "[fd00::1]:8000"
seeds = ["[fd00::2]:8000", "node-3.example.com:8000", "srv:_swimd._udp.example.com"]
probe_interval = "2s"
suspicion_mult = 4
ring_probes = false
reap_left_after = "1h"
[tls]
ca = "ca.pem"
cert = "cert.pem"
key = "key.pem"
[api]
listen = "[::1]:9000"
token = "secret"
[state]
dir = "/var/lib/swimd"
[log]
level = "info,swimd=debug"
format = "json"
"#;
        let config = parse(text, Path::new("/etc/swimd.toml")).unwrap();
        assert_eq!(config.node.tags["zone"], "a");
        assert_eq!(
            config.gossip.advertise_addr(),
            "[fd00::1]:8000".parse().unwrap()
        );
        let seeds: Vec<String> = config.gossip.seeds.iter().map(Seed::to_string).collect();
        assert_eq!(
            seeds,
            [
                "[fd00::2]:8000",
                "node-3.example.com:8000",
                "srv:_swimd._udp.example.com"
            ]
        );
        assert_eq!(
            config.gossip.protocol,
            ProtocolConfig {
                probe_interval: Duration::from_secs(2),
                suspicion_mult: 4.0,
                ring_probes: false,
                reap_left_after: Duration::from_secs(3600),
                ..ProtocolConfig::default()
            }
        );
        assert_eq!(config.api.token.as_deref(), Some("secret"));
        assert_eq!(config.state.dir, Path::new("/var/lib/swimd"));
        assert_eq!(config.log.level, "info,swimd=debug");
        assert_eq!(config.log.format, LogFormat::Json);
    }

    #[test]
    fn example_file_loads() {
        let config = load(&example_path()).unwrap();
        assert_eq!(config.gossip.protocol, ProtocolConfig::default());
        assert_eq!(config.gossip.seeds.len(), 3);
    }

    /// The example documents each optional key as a commented-out `# key = default` line;
    /// uncommented, they must all parse and equal the real defaults.
    #[test]
    fn example_file_documents_every_key_with_its_default() {
        let text = std::fs::read_to_string(example_path()).unwrap();
        let uncommented: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(key, _)| {
                        !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
                {
                    rest
                }
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let config = parse(&uncommented, &example_path()).unwrap();
        assert_eq!(config.gossip.protocol, ProtocolConfig::default());
        assert_eq!(config.gossip.bind, "0.0.0.0:7946".parse().unwrap());
        assert_eq!(config.api.listen, "127.0.0.1:7947".parse().unwrap());
        assert_eq!(config.metrics.listen, Some("0.0.0.0:9946".parse().unwrap()));
        assert!(config.metrics.member_up);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
        assert!(config.api.token.is_some() && !config.node.tags.is_empty());

        let root: toml::Table = toml::from_str(&uncommented).unwrap();
        for (table, keys) in KEYS.iter().filter(|(table, _)| *table != "haproxy_agent") {
            for key in *keys {
                assert!(
                    root[*table].as_table().unwrap().contains_key(*key),
                    "conf/swimd.toml lacks {table}.{key}"
                );
            }
        }
        let gossip = root["gossip"].as_table().unwrap();
        for key in toml::Table::try_from(ProtocolConfig::default())
            .unwrap()
            .keys()
        {
            assert!(
                gossip.contains_key(key),
                "conf/swimd.toml lacks gossip.{key}"
            );
        }
    }

    #[test]
    fn example_hooks_and_haproxy_agent_parse_with_their_defaults() {
        let text = std::fs::read_to_string(example_path()).unwrap();
        let block = |begin: &str, end: &str| -> String {
            let start = text.find(begin).unwrap() + begin.len();
            let stop = text[start..].find(end).map_or(text.len(), |i| start + i);
            text[start..stop]
                .lines()
                .map(|l| l.trim_start_matches('#').trim_start())
                .map(|l| format!("{l}\n"))
                .collect()
        };
        let hooks = block(
            "# --- hooks example begin ---",
            "# --- hooks example end ---",
        );
        let haproxy = block("with no hook at all.", "# -----");
        let haproxy: String = haproxy
            .lines()
            .skip_while(|l| !l.starts_with("[haproxy_agent]"))
            .map(|l| format!("{l}\n"))
            .collect();
        let documented: toml::Table = toml::from_str(&haproxy).unwrap();
        for key in keys_of("haproxy_agent") {
            assert!(
                documented["haproxy_agent"]
                    .as_table()
                    .unwrap()
                    .contains_key(*key),
                "conf/swimd.toml's example lacks haproxy_agent.{key}"
            );
        }
        let config = parse(&format!("{MINIMAL}{haproxy}{hooks}"), &example_path()).unwrap();
        assert_eq!(
            config.haproxy_agent,
            Some(HaproxyAgentConfig {
                listen: "127.0.0.1:7948".parse().unwrap(),
                max_failed_fraction: 0.5
            })
        );
        assert_eq!(config.hooks.len(), 2);
        let lb = &config.hooks[0];
        let defaults: HookSpec = toml::from_str(
            "name = \"lb\"\nkind = \"webhook\"\nevents = [\"member.failed\", \"member.recovered\"]",
        )
        .unwrap();
        // Every default the example states is the code's default.
        assert_eq!(
            HookSpec {
                url: None,
                secret: None,
                ..lb.clone()
            },
            defaults
        );
        assert!(config.hooks[1].command.is_some());

        let checks = block(
            "# --- checks example begin ---",
            "# --- checks example end ---",
        );
        let config = parse(&format!("{MINIMAL}{checks}"), &example_path()).unwrap();
        assert_eq!(config.checks.len(), 2);
        let defaults: CheckSpec =
            toml::from_str("name = \"web\"\nkind = \"http\"\nurl = \"http://127.0.0.1:8080/\"")
                .unwrap();
        assert_eq!(config.checks[0], defaults);
        let e = error_of(&format!(
            "{MINIMAL}[[checks]]\nname = \"db\"\nkind = \"tcp\"\n"
        ));
        assert_eq!(e.key.as_deref(), Some("checks[0].address"));
    }

    #[test]
    fn bad_hooks_are_located_and_named() {
        let case = |hooks: &str| error_of(&format!("{MINIMAL}{hooks}"));
        let e = case("[[hooks]]\nname = \"x\"\nkind = \"exec\"\nevents = [\"member.failed\"]\n");
        assert_eq!(e.key.as_deref(), Some("hooks[0].command"));
        assert!(e.message.contains("needs command"), "{e}");
        let e = case(
            "[[hooks]]\nname = \"x\"\nkind = \"exec\"\nevents = [\"member.failed\"]\ncommand = [\"/bin/true\"]\ntimeout = \"soon\"\n",
        );
        assert_eq!(e.key.as_deref(), Some("hooks[0]"));
        assert_eq!((e.line, e.column), (Some(20), Some(11)), "{e}");
        let e = case(
            "[[hooks]]\nname = \"x\"\nkind = \"exec\"\nevents = [\"member.failed\"]\ncommand = [\"/bin/true\"]\nbogus = 1\n",
        );
        assert!(e.message.contains("bogus"), "{e}");
        let twice = "[[hooks]]\nname = \"x\"\nkind = \"exec\"\nevents = [\"member.failed\"]\ncommand = [\"/bin/true\"]\n";
        let e = case(&format!("{twice}{twice}"));
        assert_eq!(e.key.as_deref(), Some("hooks[1].name"));
    }

    #[test]
    fn missing_file_cannot_be_read() {
        let e = load(Path::new("/nonexistent/swimd.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/swimd.toml: cannot read: "),
            "{e}"
        );
        assert_eq!((e.line, e.column), (None, None));
    }

    #[test]
    fn invalid_toml_is_located() {
        let e = error_of(&minimal_with("cluster = \"demo\"", "cluster = demo"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:3:11: invalid TOML: string values must be quoted, expected literal string"
        );
    }

    #[test]
    fn unknown_top_level_key_is_named() {
        let e = error_of(&format!("{MINIMAL}[telemetry]\nport = 9100\n"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:15:2: unknown key telemetry \
             (expected one of: node, gossip, tls, api, metrics, state, log, hooks, checks, haproxy_agent)"
        );
        assert_eq!(e.key.as_deref(), Some("telemetry"));
    }

    #[test]
    fn unknown_key_in_section_is_named() {
        let e = error_of(&minimal_with("name =", "nmae ="));
        assert_eq!(
            e.to_string(),
            "swimd.toml:2:1: unknown key node.nmae (expected one of: name, cluster, tags)"
        );
        assert_eq!((e.line, e.column), (Some(2), Some(1)));
    }

    #[test]
    fn unknown_gossip_key_is_named() {
        let e = error_of(&minimal_with(
            "seeds =",
            "probe_intervall = \"1s\"\nseeds =",
        ));
        assert_eq!(e.key.as_deref(), Some("gossip.probe_intervall"));
        assert!(
            e.to_string().starts_with(
                "swimd.toml:6:1: unknown key gossip.probe_intervall \
                 (expected one of: bind, advertise, seeds, "
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_type_is_reported_at_the_value() {
        let e = error_of(&minimal_with("cluster = \"demo\"", "cluster = 5"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:3:11: node.cluster: expected a string, found integer 5"
        );
        let e = error_of(&minimal_with(
            "seeds =",
            "indirect_checks = \"three\"\nseeds =",
        ));
        assert_eq!(
            e.to_string(),
            "swimd.toml:6:19: gossip.indirect_checks: expected a whole number, \
             found string \"three\""
        );
        let e = error_of(&minimal_with("seeds =", "indirect_checks = -1\nseeds ="));
        assert_eq!(
            e.to_string(),
            "swimd.toml:6:19: gossip.indirect_checks: (-1) is out of range; \
             expected a non-negative whole number"
        );
    }

    #[test]
    fn first_bad_gossip_value_in_file_order_is_reported() {
        let e = error_of(&minimal_with(
            "seeds =",
            "retransmit_mult = true\ngossip_nodes = \"x\"\nseeds =",
        ));
        assert_eq!(e.key.as_deref(), Some("gossip.retransmit_mult"));
    }

    #[test]
    fn bad_duration_is_explained() {
        let e = error_of(&minimal_with(
            "seeds =",
            "probe_interval = \"1 parsec\"\nseeds =",
        ));
        assert_eq!(
            e.to_string(),
            "swimd.toml:6:18: gossip.probe_interval: \"1 parsec\" is not a duration: write a \
             number and a unit (ms, s, min, h, day), e.g. \"500ms\", \"2s\" or \"1day\""
        );
        let e = error_of(&minimal_with("seeds =", "probe_interval = 1\nseeds ="));
        assert_eq!(
            e.to_string(),
            "swimd.toml:6:18: gossip.probe_interval: expected a duration such as \"500ms\" \
             or \"2s\", found integer 1"
        );
    }

    #[test]
    fn missing_required_key_says_what_it_is() {
        let e = error_of(&minimal_with("cert = \"tls/node-1.pem\"\n", ""));
        assert_eq!(
            e.to_string(),
            "swimd.toml: missing key tls.cert (the node's certificate, e.g. \"tls/node-1.pem\")"
        );
        assert_eq!(e.key.as_deref(), Some("tls.cert"));
        let e = error_of(&minimal_with("[state]\ndir = \"state/node-1\"\n", ""));
        assert_eq!(
            e.to_string(),
            "swimd.toml: missing key state.dir \
             (the folder for state kept across restarts, e.g. \"state/node-1\")"
        );
    }

    #[test]
    fn probe_timeout_must_be_shorter_than_probe_interval() {
        let e = error_of(&minimal_with("seeds =", "probe_timeout = \"2s\"\nseeds ="));
        assert_eq!(
            e.to_string(),
            "swimd.toml:6:17: gossip.probe_timeout: (2s) must be above zero and shorter \
             than gossip.probe_interval (1s)"
        );
        assert_eq!(e.key.as_deref(), Some("gossip.probe_timeout"));
        // A default made invalid by another key is blamed on the [gossip] table.
        let e = error_of(&minimal_with(
            "seeds =",
            "probe_interval = \"300ms\"\nseeds =",
        ));
        assert_eq!(
            e.to_string(),
            "swimd.toml:4:1: gossip.probe_timeout: (500ms) must be above zero and shorter \
             than gossip.probe_interval (300ms)"
        );
    }

    #[test]
    fn bad_node_name_is_rejected() {
        let e = error_of(&minimal_with("\"node-1\"", "\"node 1\""));
        assert_eq!(
            e.to_string(),
            "swimd.toml:2:8: node.name: \"node 1\" is invalid: a node name may only contain \
             letters, digits, '.', '-' and '_'"
        );
        let e = error_of(&minimal_with("cluster = \"demo\"", "cluster = \"\""));
        assert_eq!(
            e.to_string(),
            "swimd.toml:3:11: node.cluster: (\"\") must be 1 to 64 bytes long"
        );
    }

    #[test]
    fn unspecified_bind_needs_advertise() {
        let e = error_of(&minimal_with("127.0.0.2:7946", "0.0.0.0:7946"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:5:8: gossip.bind: (0.0.0.0:7946) listens on every interface, so \
             peers cannot tell which address reaches this member; set gossip.advertise, \
             e.g. \"10.0.0.1:7946\""
        );
        let e = error_of(&minimal_with("bind = \"127.0.0.2:7946\"\n", ""));
        assert_eq!((e.line, e.column), (Some(4), Some(1)), "{e}");
        let text = minimal_with(
            "bind = \"127.0.0.2:7946\"",
            "bind = \"[::]:7946\"\nadvertise = \"[fd00::7]:7946\"",
        );
        let config = parse(&text, Path::new("swimd.toml")).unwrap();
        assert_eq!(
            config.gossip.advertise_addr(),
            "[fd00::7]:7946".parse().unwrap()
        );
    }

    #[test]
    fn bad_seeds_are_rejected_with_the_syntax() {
        let usage = "write HOST:PORT (e.g. \"10.0.0.1:7946\", \"[fd00::1]:7946\" or \
                     \"node-1.example.com:7946\") or srv:NAME";
        let cases = [
            ("nohost", "\"nohost\" has no port"),
            (
                "host:notaport",
                "\"host:notaport\": \"notaport\" is not a port (1 to 65535)",
            ),
            ("host:0", "\"host:0\": \"0\" is not a port (1 to 65535)"),
            ("srv:", "\"srv:\" has no SRV record name"),
            (
                "srv:bad name",
                "\"srv:bad name\": \"bad name\" is not a DNS name",
            ),
            ("::1:7946", "\"::1:7946\": an IPv6 address needs brackets"),
            ("[::1]", "\"[::1]\" has no port after the bracketed address"),
            (
                "[nope]:7946",
                "\"[nope]:7946\": \"nope\" is not an IPv6 address",
            ),
            (
                "300.1.1.1:7946",
                "\"300.1.1.1:7946\": \"300.1.1.1\" is not an IP address or a DNS name",
            ),
            (
                "-x.example.com:7946",
                "\"-x.example.com:7946\": \"-x.example.com\" is not an IP address or a DNS name",
            ),
        ];
        for (seed, problem) in cases {
            let e = error_of(&minimal_with("\"127.0.0.3:7946\"", &format!("\"{seed}\"")));
            assert_eq!(
                e.to_string(),
                format!("swimd.toml:6:10: gossip.seeds: {problem}; {usage}")
            );
        }
        let e = error_of(&minimal_with("[\"127.0.0.3:7946\"]", "[\"a:1\", 7]"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:6:17: gossip.seeds: expected a string, found integer 7"
        );
    }

    #[test]
    fn seeds_display_as_written() {
        for text in [
            "10.0.0.1:7946",
            "[fd00::1]:7946",
            "node-1.example.com.:1",
            "srv:_s._udp.x",
        ] {
            assert_eq!(text.parse::<Seed>().unwrap().to_string(), text);
        }
    }

    #[test]
    fn tags_must_fit_max_tags_bytes() {
        let big = "x".repeat(600);
        let e = error_of(&minimal_with(
            "cluster = \"demo\"",
            &format!("cluster = \"demo\"\ntags = {{ note = \"{big}\" }}"),
        ));
        assert_eq!(
            e.to_string(),
            "swimd.toml:4:8: node.tags: encode to 607 bytes, more than gossip.max_tags_bytes \
             (512); shorten them or raise gossip.max_tags_bytes (at most 4096)"
        );
        let text = minimal_with(
            "cluster = \"demo\"",
            &format!("cluster = \"demo\"\ntags = {{ note = \"{big}\" }}"),
        );
        let text = text.replacen("seeds =", "max_tags_bytes = 1024\nseeds =", 1);
        assert!(parse(&text, Path::new("swimd.toml")).is_ok());
        let e = error_of(&minimal_with(
            "cluster = \"demo\"",
            "cluster = \"demo\"\ntags = { n = 1 }",
        ));
        assert_eq!(
            e.to_string(),
            "swimd.toml:4:14: node.tags.n: expected a string, found integer 1"
        );
    }

    #[test]
    fn empty_token_is_rejected() {
        let e = error_of(&minimal_with("listen = \"127.0.0.2:7947\"", "token = \"\""));
        assert_eq!(
            e.to_string(),
            "swimd.toml:12:9: api.token: must not be empty; set a secret, or remove the key \
             to require none"
        );
    }

    #[test]
    fn http_limits_have_defaults_and_bad_ones_are_rejected() {
        let config = parse(MINIMAL, Path::new("swimd.toml")).unwrap();
        assert_eq!(config.api.max_connections, 256);
        assert_eq!(config.api.header_timeout, Duration::from_secs(5));
        let listen = "listen = \"127.0.0.2:7947\"";
        let config = parse(
            &minimal_with(
                listen,
                &format!("{listen}\nmax_connections = 32\nheader_timeout = \"2s\""),
            ),
            Path::new("swimd.toml"),
        )
        .unwrap();
        assert_eq!(config.api.max_connections, 32);
        assert_eq!(config.api.header_timeout, Duration::from_secs(2));
        let e = error_of(&minimal_with(
            listen,
            &format!("{listen}\nmax_connections = 0"),
        ));
        assert!(
            e.to_string().ends_with(
                "api.max_connections: expected a whole number from 1 to 16384, found integer 0"
            ),
            "{e}"
        );
        let e = error_of(&minimal_with(
            listen,
            &format!("{listen}\nheader_timeout = \"1h\""),
        ));
        assert!(
            e.to_string().ends_with(
                "api.header_timeout: expected a duration from 100ms to 5m such as \"5s\", found \"1h\""
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_log_settings_are_rejected() {
        let e = error_of(&format!("{MINIMAL}[log]\nformat = \"yaml\"\n"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:16:10: log.format: (\"yaml\") must be \"text\" or \"json\""
        );
        let e = error_of(&format!("{MINIMAL}[log]\nlevel = \" \"\n"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:16:9: log.level: must not be empty; use error, warn, info, debug or trace"
        );
    }

    #[test]
    fn addresses_need_an_ip_and_a_fixed_port() {
        let e = error_of(&minimal_with("127.0.0.2:7947", "localhost:7947"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:12:10: api.listen: (\"localhost:7947\") must be an IP address and \
             port, e.g. \"10.0.0.1:7946\" or \"[::1]:7946\""
        );
        let e = error_of(&minimal_with("127.0.0.2:7946", "127.0.0.2:0"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:5:8: gossip.bind: (127.0.0.2:0) needs a fixed port, e.g. \"127.0.0.2:7946\""
        );
    }

    #[test]
    fn section_must_be_a_table() {
        let e = error_of(&format!("log = \"debug\"\n{MINIMAL}"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:1:7: log: expected a table ([log]), found string \"debug\""
        );
    }

    #[test]
    fn metrics_listener_defaults_on_and_can_be_turned_off() {
        let config = parse(MINIMAL, Path::new("swimd.toml")).unwrap();
        assert_eq!(config.metrics.listen, Some("0.0.0.0:9946".parse().unwrap()));
        assert!(config.metrics.member_up);
        let text = format!("{MINIMAL}[metrics]\nlisten = \"off\"\nmember_up = false\n");
        let config = parse(&text, Path::new("swimd.toml")).unwrap();
        assert_eq!(config.metrics.listen, None);
        assert!(!config.metrics.member_up);
    }

    #[test]
    fn bad_metrics_keys_are_named_with_their_position() {
        let e = error_of(&format!("{MINIMAL}[metrics]\nlisten = \"\"\n"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:16:10: metrics.listen: (\"\") must be an IP address and port, \
             e.g. \"10.0.0.1:7946\" or \"[::1]:7946\""
        );
        let e = error_of(&format!("{MINIMAL}[metrics]\nmember_up = \"yes\"\n"));
        assert_eq!(
            e.to_string(),
            "swimd.toml:16:13: metrics.member_up: expected true or false, found string \"yes\""
        );
    }
}

//! Real `swimd agent` processes talking QUIC with mutual TLS on loopback.

pub mod support;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use swimd::model::State;

use support::cluster::{Cluster, TempDir, config_text, within};
use support::http;
use support::tools::{SWIMD, signal, swimd, swimd_bin, swimd_in, wait_timeout};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn five_agents_converge_and_a_killed_one_is_failed_everywhere() {
    let mut c = Cluster::new("crash", 21, 5);
    c.start_all();
    assert!(
        c.wait_converged(secs(10)).is_some(),
        "no convergence; log of node-1:\n{}",
        c.log(0)
    );
    c.kill(2);
    let took = c.wait_state(&[0, 1, 3, 4], "node-3", State::Failed, secs(15));
    let took = took
        .unwrap_or_else(|| panic!("node-3 not failed everywhere; log of node-1:\n{}", c.log(0)));
    assert!(took <= secs(10), "detection took {took:?}");
    // The log names the change with previous and new state.
    assert!(
        c.log(0).contains("member.failed node-3 suspect -> failed"),
        "{}",
        c.log(0)
    );
}

/// The crash fast path with real sockets: the killed agent's host (loopback) answers its
/// peers' packets with ICMP port unreachable, the socket's error queue is read, and its
/// observers' word fails it (the metrics say so; the time is printed, not bounded: the
/// figures are the simulator's and the lab's).
#[test]
fn a_killed_agent_is_failed_on_its_observers_word_that_its_port_is_closed() {
    let mut c = Cluster::converged("crashfast", 38, 6);
    c.kill(2);
    let survivors = [0, 1, 3, 4, 5];
    let took = c
        .wait_state(&survivors, "node-3", State::Failed, secs(15))
        .unwrap_or_else(|| panic!("node-3 not failed everywhere; log of node-1:\n{}", c.log(0)));
    let sum = |series: &str| -> f64 { survivors.iter().filter_map(|&i| c.metric(i, series)).sum() };
    let errors = sum("swimd_ports_unreachable_total");
    let verdicts = sum("swimd_closed_port_verdicts_total");
    eprintln!(
        "killed agent failed everywhere after {took:?}: {errors} port-unreachable errors, {verdicts} closed-port verdicts"
    );
    assert!(errors >= 2.0, "no ICMP error reached the core ({errors})");
    assert!(verdicts >= 1.0, "nobody failed it on its observers' word");
    assert!(
        c.not_alive(survivors).iter().all(|s| s.contains("node-3")),
        "{:?}",
        c.not_alive(survivors)
    );
}

/// A crash failed on the fast path and restarted within a second must stay alive: the
/// probes of its dead process and the connections to it must not fail the new one (both
/// did, 3 restarts in 5, before each was fixed).
#[test]
fn an_agent_restarted_right_after_its_failure_is_not_failed_again() {
    for (round, delay_ms) in [100u64, 300, 800].into_iter().enumerate() {
        let mut c = Cluster::converged("refail", 39, 3);
        c.kill(2);
        assert!(
            c.wait_state(&[0, 1], "node-3", State::Failed, secs(15))
                .is_some()
        );
        std::thread::sleep(Duration::from_millis(delay_ms));
        c.start(2);
        assert!(
            c.wait_state(&[0, 1], "node-3", State::Alive, secs(15))
                .is_some()
        );
        let again = within(secs(5), || !c.not_alive([0, 1]).is_empty());
        assert!(
            again.is_none(),
            "round {round} (restart {delay_ms} ms after the failure): {:?}\n{}",
            c.not_alive([0, 1]),
            c.log(0)
        );
    }
}

#[test]
fn sigterm_is_a_graceful_leave_seen_as_left_everywhere() {
    let mut c = Cluster::new("leave", 22, 4);
    c.start_all();
    assert!(c.wait_converged(secs(10)).is_some());
    assert_eq!(c.terminate(3), Some(0), "graceful exit status");
    assert!(
        c.wait_state(&[0, 1, 2], "node-4", State::Left, secs(3))
            .is_some()
    );
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        assert_eq!(
            c.view(i).unwrap()["node-4"].state,
            State::Left,
            "node-4 must stay left, never failed"
        );
    }
}

#[test]
fn restarted_agent_is_alive_again_with_a_higher_incarnation() {
    let mut c = Cluster::new("restart", 23, 4);
    c.start_all();
    assert!(c.wait_converged(secs(10)).is_some());
    let before = c.view(0).unwrap()["node-2"].incarnation;
    c.kill(1);
    assert!(
        c.wait_state(&[0, 2, 3], "node-2", State::Failed, secs(15))
            .is_some()
    );
    c.start(1);
    assert!(
        c.wait_state(&[0, 2, 3], "node-2", State::Alive, secs(10))
            .is_some(),
        "{}",
        c.log(1)
    );
    for i in [0, 2, 3] {
        assert!(
            c.view(i).unwrap()["node-2"].incarnation > before,
            "incarnation must rise"
        );
    }
}

#[test]
fn restarted_agent_rejoins_with_no_seed_reachable() {
    let mut c = Cluster::new("noseed", 24, 3);
    c.start_all();
    assert!(c.wait_converged(secs(10)).is_some());
    // node-3 restarts while its only seed (node-1) is down: its state directory suffices
    // (saved within half a second of a change).
    std::thread::sleep(Duration::from_secs(1));
    c.kill(2);
    c.kill(0);
    c.start(2);
    assert!(
        c.wait_state(&[1, 2], "node-3", State::Alive, secs(10))
            .is_some(),
        "node-2:\n{}\nnode-3:\n{}",
        c.log(1),
        c.log(2)
    );
    assert!(
        c.wait_state(&[2], "node-2", State::Alive, secs(10))
            .is_some(),
        "{}",
        c.log(2)
    );
}

#[test]
fn agent_with_a_certificate_from_another_ca_is_never_admitted() {
    let mut c = Cluster::new("foreign", 25, 3);
    c.start_all();
    assert!(c.wait_converged(secs(10)).is_some());
    // An intruder with its own CA, using node-1 as its seed.
    let other = TempDir::new("foreign-ca");
    let tls = other.0.join("tls");
    swimd::net::tls::init_ca(&tls, "evil").unwrap();
    swimd::net::tls::issue(&tls, "intruder", &["127.0.25.9".parse().unwrap()]).unwrap();
    let config = other.0.join("intruder.toml");
    std::fs::write(
        &config,
        config_text(
            "intruder",
            "127.0.25.9".parse().unwrap(),
            "test",
            &[c.nodes[0].gossip()],
        ),
    )
    .unwrap();
    let mut intruder = std::process::Command::new(SWIMD)
        .args(["agent", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let _ = intruder.kill();
    let _ = intruder.wait();
    for i in 0..3 {
        assert!(
            !c.view(i).unwrap().contains_key("intruder"),
            "node {i} admitted the intruder"
        );
    }
}

#[test]
fn garbage_and_truncated_packets_neither_crash_nor_wedge_an_agent() {
    let mut c = Cluster::new("garbage", 26, 4);
    c.start_all();
    assert!(c.wait_converged(secs(10)).is_some());
    let socket = UdpSocket::bind("127.0.26.100:0").unwrap();
    let target = c.nodes[0].gossip();
    let mut seed = 0x1234_5678_u64;
    for i in 0..2000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 1400) as usize + 1;
        let mut packet: Vec<u8> = (0..len).map(|j| (seed >> (j % 56)) as u8).collect();
        if i % 3 == 0 {
            // Looks like a QUIC long-header Initial, then stops short.
            packet[0] = 0xc0;
            packet.truncate(40.min(len));
        }
        let _ = socket.send_to(&packet, target);
    }
    // Still detecting failures afterwards.
    c.kill(3);
    assert!(
        c.wait_state(&[0, 1, 2], "node-4", State::Failed, secs(15))
            .is_some(),
        "{}",
        c.log(0)
    );
    assert!(
        c.nodes[0]
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "node-1 died"
    );
}

#[test]
fn agent_of_another_cluster_is_rejected() {
    let mut c = Cluster::new("othercluster", 27, 3);
    c.start_all();
    assert!(c.wait_converged(secs(10)).is_some());
    // Same CA, other cluster name.
    swimd::net::tls::issue(
        &c.dir.0.join("tls"),
        "stranger",
        &["127.0.27.9".parse().unwrap()],
    )
    .unwrap();
    let config = c.dir.0.join("stranger.toml");
    std::fs::write(
        &config,
        config_text(
            "stranger",
            "127.0.27.9".parse().unwrap(),
            "elsewhere",
            &[c.nodes[0].gossip()],
        ),
    )
    .unwrap();
    let mut stranger = std::process::Command::new(SWIMD)
        .args(["agent", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = stranger.kill();
    let _ = stranger.wait();
    assert!(!c.view(0).unwrap().contains_key("stranger"));
}

#[test]
fn api_and_cli_output_shapes() {
    let mut c = Cluster::new("shapes", 28, 3);
    c.start_all();
    assert!(c.wait_converged(secs(10)).is_some());
    let api = c.nodes[0].api();
    let env = [("SWIMD_API", api.as_str())];

    let out = swimd_in(&c.dir.0, &["members", "--format", "json"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = json["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "the agent itself is included");
    for key in ["name", "addr", "state", "incarnation", "tags"] {
        assert!(members[0].get(key).is_some(), "missing {key}");
    }

    let out = swimd_in(&c.dir.0, &["members"], &env);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().unwrap().starts_with("NAME"), "{table}");
    assert_eq!(table.lines().count(), 4);

    let out = swimd_in(&c.dir.0, &["members", "--state", "failed"], &env);
    assert_eq!(out.status.code(), Some(2), "nothing matches: exit 2");

    let out = swimd_in(&c.dir.0, &["health"], &env);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");

    let me = http::self_view(&api).unwrap();
    assert_eq!(me.member.name, "node-1");
    let one = http::member(&api, "node-2").unwrap();
    assert_eq!(one.state, State::Alive);
    assert_eq!(
        http::request(&api, "GET", "/v1/members/nobody", None)
            .unwrap()
            .status,
        404
    );
    assert_eq!(
        http::request(
            &api,
            "PUT",
            "/v1/self/tags",
            Some(r#"{"tags":{"role":"web"}}"#)
        )
        .unwrap()
        .status,
        200
    );
    assert!(
        c.wait_state(&[1, 2], "node-1", State::Alive, secs(5))
            .is_some()
    );
    let deadline = std::time::Instant::now() + secs(5);
    loop {
        let seen = http::member(&c.nodes[1].api(), "node-1").unwrap();
        if seen.tags.get("role").is_some_and(|role| role == "web") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tags did not spread: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // `swimd leave` makes the agent leave and exit.
    let out = swimd_in(&c.dir.0, &["leave", "--api", &c.nodes[2].api()], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = wait_timeout(c.nodes[2].child.as_mut().unwrap(), secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    assert!(
        c.wait_state(&[0, 1], "node-3", State::Left, secs(3))
            .is_some()
    );
}

#[test]
fn unreachable_api_is_a_clear_error() {
    let out = swimd(&["members", "--api", "127.0.29.1:7947"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the agent API at 127.0.29.1:7947"),
        "{err}"
    );
}

#[test]
fn version_names_the_source_revision() {
    let out = swimd(&["--version"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("swimd 0.1.0 ("), "{text}");
}

/// libm.so cost every agent ~0.5 MiB resident for four functions (src/math.rs).
#[test]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn binary_does_not_load_libm() {
    // glibc's loader lists the libraries it loads and exits (what `ldd` does).
    let out = Command::new(swimd_bin())
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .output()
        .expect("run swimd");
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(libs.contains("libc.so"), "{libs}");
    assert!(!libs.contains("libm.so"), "{libs}");
}

#[test]
fn invalid_configs_exit_78_with_one_clear_line() {
    let dir = TempDir::new("badconfig");
    let cases: &[(&str, &str)] = &[
        ("[node]\nnmae = \"x\"\n", "unknown"),
        (
            "[node]\nname = \"bad name\"\ncluster = \"c\"\n",
            "node.name",
        ),
        ("not toml at all", ""),
    ];
    for (i, (text, needle)) in cases.iter().enumerate() {
        let path = dir.0.join(format!("case{i}.toml"));
        std::fs::write(&path, text).unwrap();
        for args in [
            vec!["validate", path.to_str().unwrap()],
            vec!["agent", "--config", path.to_str().unwrap()],
        ] {
            let out = swimd(&args);
            assert_eq!(out.status.code(), Some(78), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert!(
                err.contains(&format!("case{i}.toml")) && err.contains(needle),
                "{err}"
            );
        }
    }
    let out = swimd(&["validate", dir.0.join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
}

#[test]
fn world_readable_key_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let mut c = Cluster::new("keyperm", 30, 1);
    let key = c.dir.0.join("tls/node-1-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    c.start(0);
    let status = wait_timeout(c.nodes[0].child.as_mut().unwrap(), secs(5));
    assert_ne!(status.and_then(|s| s.code()), Some(0));
    assert!(c.log(0).contains("chmod 600"), "{}", c.log(0));
}

#[test]
fn sighup_with_an_invalid_config_keeps_running() {
    let mut c = Cluster::new("sighup", 31, 2);
    c.start_all();
    assert!(c.wait_converged(secs(10)).is_some());
    let good = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    std::fs::write(&c.nodes[0].config, "[node]\nname = ").unwrap();
    signal(c.nodes[0].pid().unwrap(), libc::SIGHUP);
    let deadline = std::time::Instant::now() + secs(5);
    while !c.log(0).contains("reload rejected") {
        assert!(
            std::time::Instant::now() < deadline,
            "no rejection logged:\n{}",
            c.log(0)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        c.nodes[0]
            .child
            .as_mut()
            .unwrap()
            .try_wait()
            .unwrap()
            .is_none(),
        "the agent must keep running"
    );
    // New tags through a valid reload.
    std::fs::write(
        &c.nodes[0].config,
        good.replace(
            "cluster = \"test\"",
            "cluster = \"test\"\ntags = { zone = \"b\" }",
        ),
    )
    .unwrap();
    signal(c.nodes[0].pid().unwrap(), libc::SIGHUP);
    let deadline = std::time::Instant::now() + secs(5);
    loop {
        let seen = http::member(&c.nodes[1].api(), "node-1").unwrap();
        if seen.tags.get("zone").is_some_and(|zone| zone == "b") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reloaded tags did not spread: {seen:?}\n{}",
            c.log(0)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every metric docs/metrics.md documents, by family name.
const METRIC_NAMES: [&str; 25] = [
    "swimd_build_info",
    "swimd_members",
    "swimd_member_up",
    "swimd_member_state_transitions_total",
    "swimd_probes_total",
    "swimd_probe_rtt_seconds",
    "swimd_suspicions_total",
    "swimd_refutations_total",
    "swimd_member_flaps_total",
    "swimd_health_score",
    "swimd_incarnation",
    "swimd_suspicion_confirmations",
    "swimd_gossip_messages_total",
    "swimd_gossip_bytes_total",
    "swimd_broadcast_queue_depth",
    "swimd_push_pull_total",
    "swimd_quic_connections",
    "swimd_quic_handshakes_total",
    "swimd_quic_handshake_failures_total",
    "swimd_quic_retries_total",
    "swimd_http_connections_rejected_total",
    "swimd_dropped_messages_total",
    "swimd_config_last_reload_successful",
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
];

/// Checks `text` is Prometheus text format: every sample line is `name{labels} value`, and
/// every sample's family has `# HELP` and `# TYPE`. Returns the family names.
fn parse_prometheus_text(text: &str) -> Vec<String> {
    let mut help = Vec::new();
    let mut types = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            types.push(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("name value");
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad value: {line}"
        );
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("closing brace");
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(
                        key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                        "bad label: {line}"
                    );
                    assert!(!value.contains('\n'), "{line}");
                }
                name
            }
            None => series,
        };
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "bad name: {line}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.iter().any(|t| t == base))
            })
            .unwrap_or(name);
        assert!(help.iter().any(|h| h == family), "no # HELP: {line}");
        assert!(types.iter().any(|t| t == family), "no # TYPE: {line}");
    }
    types
}

#[test]
fn metrics_endpoint_exposes_every_metric() {
    let mut c = Cluster::new("metrics", 32, 3);
    c.start_all();
    assert!(c.wait_converged(secs(10)).is_some());
    c.kill(2);
    assert!(
        c.wait_state(&[0, 1], "node-3", State::Failed, secs(15))
            .is_some(),
        "{}",
        c.log(0)
    );
    for addr in [c.nodes[0].api(), c.nodes[0].metrics()] {
        let http::Response {
            status, body: text, ..
        } = http::request(&addr, "GET", "/metrics", None).unwrap();
        assert_eq!(status, 200, "{addr}: {text}");
        let families = parse_prometheus_text(&text);
        for name in METRIC_NAMES {
            assert!(
                families.iter().any(|f| f == name),
                "{addr}: {name} missing:\n{text}"
            );
        }
        assert!(
            text.contains("swimd_members{state=\"failed\"} 1\n"),
            "{addr}:\n{text}"
        );
        assert!(
            text.contains("swimd_member_up{member=\"node-3\"} 0\n"),
            "{text}"
        );
    }
    // The read-only listener serves health too, and nothing else.
    let health = http::request(&c.nodes[0].metrics(), "GET", "/v1/health", None).unwrap();
    assert_eq!(health.status, 200);
    let members = http::request(&c.nodes[0].metrics(), "GET", "/v1/members", None).unwrap();
    assert_eq!(members.status, 404);
}

#[test]
fn agents_talk_over_ipv6() {
    let dir = TempDir::new("ipv6");
    let tls = dir.0.join("tls");
    swimd::net::tls::init_ca(&tls, "test").unwrap();
    let mut children = Vec::new();
    for (i, port) in [(1u8, 17946u16), (2, 17956)] {
        let name = format!("v6-{i}");
        swimd::net::tls::issue(&tls, &name, &["::1".parse().unwrap()]).unwrap();
        let config = format!(
            "[node]\nname = \"{name}\"\ncluster = \"test\"\n[gossip]\nbind = \"[::1]:{port}\"\nseeds = [\"[::1]:17946\"]\n\
             [tls]\nca = \"tls/ca.pem\"\ncert = \"tls/{name}.pem\"\nkey = \"tls/{name}-key.pem\"\n\
             [api]\nlisten = \"127.0.33.{i}:7947\"\n[state]\ndir = \"state/{name}\"\n[metrics]\nlisten = \"off\"\n"
        );
        let path = dir.0.join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let child = std::process::Command::new(SWIMD)
            .args(["agent", "--config"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }
    let deadline = std::time::Instant::now() + secs(10);
    let seen = loop {
        let view = http::member("127.0.33.2:7947", "v6-1");
        if let Ok(member) = view
            && member.state == State::Alive
        {
            break Some(member.addr);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(
        seen,
        Some("[::1]:17946".to_string()),
        "v6-2 never saw v6-1 alive over IPv6"
    );
}

#[test]
fn systemd_notifications_follow_the_lifecycle() {
    use std::os::unix::net::UnixDatagram;
    let mut c = Cluster::new("notify", 34, 1);
    let socket_path = c.dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(secs(5))).unwrap();
    let path = socket_path.to_str().unwrap().to_string();
    c.start_with_env(0, &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "200000")]);
    let mut buf = [0u8; 512];
    let mut next = |what: &str| -> String {
        loop {
            let n = socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {what} notification: {e}"));
            let message = String::from_utf8_lossy(&buf[..n]).to_string();
            if message.lines().any(|l| l == what) {
                return message;
            }
        }
    };
    next("READY=1");
    next("WATCHDOG=1");
    next("WATCHDOG=1");
    signal(c.nodes[0].pid().unwrap(), libc::SIGHUP);
    let reloading = next("RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    next("READY=1");
    signal(c.nodes[0].pid().unwrap(), libc::SIGTERM);
    next("STOPPING=1");
}

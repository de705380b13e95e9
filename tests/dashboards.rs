//! The Grafana dashboard and the alert rules in `dashboards/`, checked by the real tools:
//! promtool, a real Prometheus scraping real agents, and TypeScript against `@grafana/schema`.

pub mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use regex::Regex;
use serde_json::Value;

use support::cluster::{Cluster, Node, TempDir};
use support::http;
use support::tools::require_tool;

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards")
}

fn read(file: &str) -> String {
    let path = dashboards_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("swimd.json")).expect("dashboards/swimd.json is JSON")
}

/// Every panel of the dashboard, rows' own panels included (a collapsed row holds them).
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        all.push(panel);
        if let Some(inner) = panel["panels"].as_array() {
            all.extend(inner);
        }
    }
    all
}

/// (panel title, PromQL expression) for every query of every panel.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("(untitled)").to_string();
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            queries.push((title.clone(), expr.to_string()));
        }
    }
    queries
}

/// The dashboard's template variable called `name`.
fn variable<'a>(dashboard: &'a Value, name: &str) -> &'a Value {
    dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no template variable {name:?}"))
}

/// A query variable's `label_values(SELECTOR, LABEL)` as (selector, label).
fn label_values_query(dashboard: &Value, name: &str) -> (String, String) {
    let var = variable(dashboard, name);
    let query = var["query"]
        .as_str()
        .or_else(|| var["query"]["query"].as_str())
        .unwrap_or_else(|| panic!("variable {name:?} has no query"));
    let pattern = Regex::new(r"^label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)$").expect("re");
    let captures = pattern
        .captures(query.trim())
        .unwrap_or_else(|| panic!("variable {name:?}: {query:?} is not label_values(…, label)"));
    (captures[1].trim().to_string(), captures[2].to_string())
}

/// Every alert's `expr`, single-line or a block scalar (`expr: |`).
fn alert_expressions(rules: &str) -> Vec<(String, String)> {
    let mut expressions = Vec::new();
    let mut alert = String::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = name.trim().to_string();
        } else if let Some(value) = trimmed.strip_prefix("expr:") {
            let value = value.trim();
            let expr = if value.starts_with('|') || value.starts_with('>') {
                let indent = line.len() - trimmed.len();
                let mut block = String::new();
                while let Some(next) = lines.peek() {
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push_str(next.trim());
                    block.push(' ');
                    lines.next();
                }
                block
            } else {
                value.trim_matches(|c| c == '"' || c == '\'').to_string()
            };
            expressions.push((alert.clone(), expr));
        }
    }
    let alerts = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(
        expressions.len(),
        alerts,
        "every alert's expr must be found: {expressions:?}"
    );
    expressions
}

/// The metric names an expression reads: swimd's, the process collector's, and `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let pattern = Regex::new(r"\b(swimd_[a-z0-9_]+|process_[a-z0-9_]+|up)\b").expect("re");
    pattern
        .find_iter(expr)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// The sample names in a text exposition (a histogram shows as `_bucket`, `_sum`, `_count`,
/// never under its bare name, so a query of the bare name is as wrong as a typo).
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// A Grafana query with its variables replaced as Grafana would for `job` and `instance`.
fn substitute(expr: &str, job: &str, instance: &str) -> String {
    let expr = expr
        .replace("$__rate_interval", "15s")
        .replace("$__interval", "1s")
        .replace("$__range", "30s")
        .replace("$job", job)
        .replace("$instance", instance);
    assert!(!expr.contains('$'), "unknown variable left in {expr:?}");
    expr
}

fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A hook on every agent of `c`, so the `swimd_hook_*` series exist: an exec hook that
/// succeeds at once on `member.failed`, with no safety rule holding a failure back.
fn add_hook(c: &Cluster) {
    use std::io::Write;
    for node in &c.nodes {
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(&node.config)
            .expect("config");
        config
            .write_all(
                b"\n[[hooks]]\nname = \"failover\"\nkind = \"exec\"\nevents = [\"member.failed\"]\n\
                  command = [\"/bin/true\"]\nmax_failed_fraction = 1.0\nhold_down = \"0s\"\n\
                  \n[[checks]]\nname = \"self\"\nkind = \"exec\"\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
                  command = [\"/bin/true\"]\n",
            )
            .expect("append a hook");
    }
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !require_tool("promtool", "prometheus") {
        return;
    }
    let check = run(Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(dashboards_dir()));
    assert!(
        check.status.success(),
        "promtool check rules:\n{}",
        printed(&check)
    );
    assert!(
        printed(&check).contains("SUCCESS: 15 rules found"),
        "{}",
        printed(&check)
    );
    let test = run(Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(dashboards_dir()));
    assert!(
        test.status.success(),
        "promtool test rules:\n{}",
        printed(&test)
    );
    // Each alert has a case in the unit tests.
    let unit_tests = read("alerts_test.yml");
    for (alert, _) in alert_expressions(&read("alerts.yml")) {
        assert!(
            unit_tests.contains(&format!("alertname: {alert}")),
            "alerts_test.yml does not test {alert}"
        );
    }
}

#[test]
fn every_dashboard_query_is_filtered_by_job_and_instance_and_uses_the_rate_interval() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "swimd", "a fixed uid keeps links stable");
    assert!(
        dashboard.get("__inputs").is_none(),
        "no __inputs: provisioning does not fill them"
    );
    assert_eq!(variable(&dashboard, "datasource")["type"], "datasource");
    assert_eq!(variable(&dashboard, "datasource")["query"], "prometheus");
    for name in ["job", "instance"] {
        assert_eq!(variable(&dashboard, name)["type"], "query", "{name}");
        assert_eq!(
            variable(&dashboard, name)["datasource"]["uid"],
            "${datasource}"
        );
    }
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = &panel["title"];
        assert!(ids.insert(panel["id"].to_string()), "duplicate id: {title}");
        if panel["type"] != "row" {
            assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
            for target in panel["targets"].as_array().expect("targets") {
                assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
            }
        }
    }
    let selector =
        Regex::new(r"\b(swimd_[a-z0-9_]+|process_[a-z0-9_]+|up)\b(\{[^}]*\})?").expect("re");
    let range = Regex::new(r"\[([^\]]*)\]").expect("re");
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for (title, expr) in &queries {
        for captures in selector.captures_iter(expr) {
            let matchers = captures.get(2).map_or("", |m| m.as_str());
            assert!(
                matchers.contains(r#"job="$job""#) && matchers.contains(r#"instance=~"$instance""#),
                "panel {title:?}: {} is not filtered by job and instance in {expr}",
                &captures[1]
            );
        }
        for window in range.captures_iter(expr) {
            assert_eq!(
                &window[1], "$__rate_interval",
                "panel {title:?}: a range other than $__rate_interval in {expr}"
            );
        }
    }
}

#[test]
fn every_metric_in_the_dashboard_and_the_alerts_is_exported_and_every_swimd_metric_is_shown() {
    let mut c = Cluster::new("dashboards-names", 40, 1);
    // The hook metrics exist only on an agent with a hook.
    add_hook(&c);
    c.start_all();
    let deadline = Instant::now() + Duration::from_secs(10);
    let exposition = loop {
        match http::request(&c.nodes[0].metrics(), "GET", "/metrics", None) {
            Ok(answer)
                if answer.status == 200
                    && answer.body.contains("swimd_member_up{")
                    && answer.body.contains("swimd_hook_enabled{") =>
            {
                break answer.body;
            }
            _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            other => panic!(
                "no /metrics with swimd_member_up and swimd_hook_enabled: {other:?}\n{}",
                c.log(0)
            ),
        }
    };
    let exposed = exposed_names(&exposition);
    let dashboard = dashboard();
    let mut used = BTreeSet::new();
    let mut queries = panel_queries(&dashboard);
    for name in ["job", "instance"] {
        queries.push((
            format!("variable {name}"),
            label_values_query(&dashboard, name).0,
        ));
    }
    let alerts = alert_expressions(&read("alerts.yml"));
    for (place, expr) in queries.iter().chain(alerts.iter()) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for name in names {
            // `up` is Prometheus's own, one per scrape target.
            assert!(
                name == "up" || exposed.contains(&name),
                "{place}: {name} is not in a live agent's /metrics (typo, or a histogram's bare \
                 name?) in {expr}"
            );
            used.insert(name);
        }
    }
    // The other way round: a new swimd metric belongs on the dashboard.
    for name in exposed.iter().filter(|n| n.starts_with("swimd_")) {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| exposition.contains(&format!("# TYPE {base} histogram")))
            .unwrap_or(name);
        assert!(
            used.iter()
                .any(|u| u == family || u.starts_with(&format!("{family}_"))),
            "{name} is exported but not on the dashboard"
        );
    }
}

/// A Prometheus server for one test: its own config and storage, killed (by pid) on drop.
struct Prometheus {
    child: Child,
    address: String,
    log: PathBuf,
    _dir: TempDir,
}

impl Prometheus {
    fn start(name: &str, address: &str, targets: &[String]) -> Prometheus {
        let dir = TempDir::new(name);
        let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - \"{}\"\n\
                 scrape_configs:\n  - job_name: swimd\n    static_configs:\n      - targets: [{}]\n",
                dashboards_dir().join("alerts.yml").display(),
                targets.join(", ")
            ),
        )
        .expect("prometheus.yml");
        let log = dir.0.join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn prometheus");
        Prometheus {
            child,
            address: address.to_string(),
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `data` of a successful API answer.
    fn api(&self, path: &str) -> Result<Value, String> {
        let http::Response { status, body, .. } =
            http::request_within(&self.address, "GET", path, None, Duration::from_secs(5))?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if status != 200 || answer["status"] != "success" {
            return Err(format!("HTTP {status}: {body}"));
        }
        Ok(answer["data"].clone())
    }

    /// The series of an instant query.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// The series of a range query over the last 30 s, as a Grafana panel asks for them.
    fn query_range(&self, expr: &str) -> Result<Vec<Value>, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let data = self.api(&format!(
            "/api/v1/query_range?query={}&start={}&end={now}&step=1",
            url_encode(expr),
            now - 30
        ))?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Polls `check` until it returns `Some` or `limit` passes.
    fn wait_for<T>(&self, limit: Duration, mut check: impl FnMut(&Self) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(found) = check(self) {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value (as text) of the series whose `instance` is `instance`.
fn value_of(series: &[Value], instance: &str) -> Option<String> {
    series
        .iter()
        .find(|s| s["metric"]["instance"] == instance)
        .and_then(|s| s["value"][1].as_str())
        .map(str::to_string)
}

#[test]
fn prometheus_scrapes_a_cluster_and_every_panel_has_data_after_a_crash() {
    if !require_tool("prometheus", "prometheus") {
        return;
    }
    let started = Instant::now();
    let mut c = Cluster::new("dashboards-cluster", 41, 3);
    // The failure below makes each survivor deliver the hook once.
    add_hook(&c);
    c.start_all();
    assert!(
        c.wait_converged(Duration::from_secs(10)).is_some(),
        "no convergence; log of node-1:\n{}",
        c.log(0)
    );
    let instances: Vec<String> = c.nodes.iter().map(Node::metrics).collect();
    // Not :9090, which a Prometheus installed as a service holds on every address.
    let prometheus = Prometheus::start("dashboards-prometheus", "127.0.41.100:19090", &instances);
    let up = prometheus.wait_for(Duration::from_secs(20), |p| {
        let series = p.query(r#"up{job="swimd"} == 1"#).ok()?;
        (series.len() == 3).then_some(())
    });
    assert!(
        up.is_some(),
        "Prometheus does not scrape all 3 agents:\n{}",
        prometheus.log()
    );

    c.kill(2);
    let survivors = &instances[..2];
    let failed = prometheus.wait_for(Duration::from_secs(20), |p| {
        let series = p
            .query(r#"swimd_members{job="swimd", state="failed"}"#)
            .ok()?;
        survivors
            .iter()
            .all(|i| value_of(&series, i).as_deref() == Some("1"))
            .then_some(())
    });
    assert!(
        failed.is_some(),
        "swimd_members{{state=\"failed\"}} did not reach 1 on both survivors: {:?}\nnode-1:\n{}",
        prometheus.query(r#"swimd_members{state="failed"}"#),
        c.log(0)
    );
    let alert = prometheus.wait_for(Duration::from_secs(10), |p| {
        let alerts = p.api("/api/v1/alerts").ok()?;
        alerts["alerts"].as_array()?.iter().find_map(|a| {
            let state = a["state"].as_str()?;
            (a["labels"]["alertname"] == "SwimdMemberFailed"
                && (state == "pending" || state == "firing"))
                .then(|| state.to_string())
        })
    });
    assert!(
        alert.is_some(),
        "SwimdMemberFailed is neither pending nor firing: {:?}",
        prometheus.api("/api/v1/alerts")
    );
    // Each survivor ran the hook for the failure, and Prometheus saw it.
    let delivered = prometheus.wait_for(Duration::from_secs(10), |p| {
        let series = p
            .query(
                r#"swimd_hook_deliveries_total{job="swimd", hook="failover", outcome="success"}"#,
            )
            .ok()?;
        survivors
            .iter()
            .all(|i| value_of(&series, i).as_deref() == Some("1"))
            .then_some(())
    });
    assert!(
        delivered.is_some(),
        "swimd_hook_deliveries_total{{outcome=\"success\"}} did not reach 1 on both survivors: \
         {:?}\nnode-1:\n{}",
        prometheus.query(r#"swimd_hook_deliveries_total{hook="failover"}"#),
        c.log(0)
    );

    // The variables' own queries list the job and the agents.
    let dashboard = dashboard();
    let (jobs_selector, job_label) = label_values_query(&dashboard, "job");
    let jobs = prometheus
        .api(&format!(
            "/api/v1/label/{job_label}/values?match[]={}",
            url_encode(&jobs_selector)
        ))
        .expect("job values");
    assert!(
        jobs.as_array()
            .is_some_and(|j| j.iter().any(|v| v == "swimd")),
        "variable job: {jobs}"
    );
    let (instances_selector, instance_label) = label_values_query(&dashboard, "instance");
    let listed = prometheus
        .api(&format!(
            "/api/v1/label/{instance_label}/values?match[]={}",
            url_encode(&substitute(&instances_selector, "swimd", ".*"))
        ))
        .expect("instance values");
    for instance in survivors {
        assert!(
            listed
                .as_array()
                .is_some_and(|l| l.iter().any(|v| v == instance)),
            "variable instance lacks {instance}: {listed}"
        );
    }

    // Every panel query, for all instances and for one, returns data.
    let queries = panel_queries(&dashboard);
    let mut missing = Vec::new();
    for instance in [".*", instances[0].as_str()] {
        for (title, expr) in &queries {
            let expr = substitute(expr, "swimd", instance);
            let data = prometheus.wait_for(Duration::from_secs(5), |p| {
                p.query_range(&expr)
                    .ok()
                    .filter(|series| !series.is_empty())
            });
            if data.is_none() {
                missing.push(format!("{title}: {expr}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "panel queries without data:\n{}",
        missing.join("\n")
    );
    // A hook that works raises no hook alert.
    let alerts = prometheus.api("/api/v1/alerts").expect("alerts");
    let hook_alerts: Vec<&Value> = alerts["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| {
            a["labels"]["alertname"]
                .as_str()
                .is_some_and(|n| n.starts_with("SwimdHook"))
        })
        .collect();
    assert!(hook_alerts.is_empty(), "hook alerts: {hook_alerts:?}");
    eprintln!(
        "{} panel queries checked, alert {}, in {:?}",
        queries.len(),
        alert.unwrap_or_default(),
        started.elapsed()
    );
}

#[test]
fn dashboard_type_checks_against_grafana_schema() {
    if !require_tool("npm", "npm") {
        return;
    }
    // A copy, so that node_modules never lands in the source tree.
    let dir = TempDir::new("dashboards-typecheck");
    let project = dir.0.join("typecheck");
    std::fs::create_dir_all(&project).expect("typecheck dir");
    for file in [
        "package.json",
        "package-lock.json",
        "tsconfig.json",
        "check.ts",
        "types.ts",
        "generate.mjs",
    ] {
        std::fs::copy(
            dashboards_dir().join("typecheck").join(file),
            project.join(file),
        )
        .unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }
    let json = dir.0.join("swimd.json");
    std::fs::copy(dashboards_dir().join("swimd.json"), &json).expect("copy swimd.json");
    let install = run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&project));
    assert!(install.status.success(), "npm ci:\n{}", printed(&install));
    let type_check = |dashboard: &str| {
        std::fs::write(&json, dashboard).expect("write swimd.json");
        let generate = run(Command::new("node")
            .arg("generate.mjs")
            .current_dir(&project));
        assert!(
            generate.status.success(),
            "generate.mjs:\n{}",
            printed(&generate)
        );
        run(Command::new("npx")
            .args(["--no-install", "tsc", "--noEmit"])
            .current_dir(&project))
    };
    let check = type_check(&read("swimd.json"));
    assert!(check.status.success(), "tsc --noEmit:\n{}", printed(&check));

    // The checks are live: a field of the wrong type deep in a panel fails both the import
    // (check.ts) and the literal (swimd.gen.ts); a value the schema does not list, or a
    // misspelled key, fails the literal.
    type Mutation = fn(&mut Value);
    let mutations: [(&str, &[&str], Mutation); 3] = [
        (
            "gridPos.h = \"8\"",
            &["check.ts", "swimd.gen.ts"],
            |panel| panel["gridPos"]["h"] = Value::from("8"),
        ),
        (
            "thresholds.mode = \"absolut\"",
            &["swimd.gen.ts", "\"absolut\""],
            |panel| panel["fieldConfig"]["defaults"]["thresholds"]["mode"] = Value::from("absolut"),
        ),
        ("a key gridpos", &["swimd.gen.ts", "\"gridpos\""], |panel| {
            panel["gridpos"] = Value::from(1)
        }),
    ];
    for (mutation, expected, mutate) in mutations {
        let mut wrong = dashboard();
        let panel = wrong["panels"]
            .as_array_mut()
            .and_then(|p| p.iter_mut().find(|p| p["type"] != "row"))
            .expect("a panel");
        mutate(panel);
        let check = type_check(&wrong.to_string());
        let out = printed(&check);
        assert!(
            !check.status.success() && expected.iter().all(|e| out.contains(e)),
            "tsc accepted {mutation} (or did not name {expected:?}):\n{out}"
        );
    }
}

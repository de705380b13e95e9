//! swimd's metrics, checked by Prometheus's own tool.

pub mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use swimd::model::State;

use support::cluster::Cluster;
use support::http;
use support::tools::require_tool;

#[test]
fn promtool_check_metrics_is_clean_on_a_live_agent() {
    if !require_tool("promtool", "prometheus") {
        return;
    }
    let tool = "promtool";
    let mut c = Cluster::new("promtool", 35, 3);
    c.start_all();
    assert!(c.wait_converged(Duration::from_secs(10)).is_some());
    c.kill(2);
    assert!(
        c.wait_state(&[0, 1], "node-3", State::Failed, Duration::from_secs(15))
            .is_some()
    );
    let http::Response { status, body, .. } =
        http::request(&c.nodes[0].metrics(), "GET", "/metrics", None).expect("scrape");
    assert_eq!(status, 200);
    let mut check = Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && printed.trim().is_empty(),
        "promtool check metrics:\n{printed}"
    );
}

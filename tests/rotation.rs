//! Certificates on a running cluster (docs/rotation.md): the cluster CA and every node
//! certificate replaced with SIGHUP only, then one member revoked, on five real agents.

pub mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use swimd::model::State;

use support::cluster::Cluster;
use support::tools::signal;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// SIGHUP to `nodes`; waits until each logged one more accepted reload.
fn reload(c: &Cluster, nodes: &[usize]) {
    let reloaded = |i: usize| c.log(i).matches("configuration reloaded").count();
    let before: Vec<usize> = nodes.iter().map(|&i| reloaded(i)).collect();
    for &i in nodes {
        signal(c.nodes[i].pid().expect("running"), libc::SIGHUP);
    }
    let start = Instant::now();
    for (&i, &n) in nodes.iter().zip(&before) {
        while reloaded(i) <= n {
            assert!(
                start.elapsed() < secs(10),
                "node-{} did not reload:\n{}",
                i + 1,
                c.log(i)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Suspicions node `i` started or joined so far.
fn suspicions(c: &Cluster, i: usize) -> f64 {
    c.metric(i, "swimd_suspicions_total").unwrap_or(f64::NAN)
}

/// Copies a node's new certificate and key over the files its config names.
fn install(from: &Path, tls: &Path, name: &str) {
    for file in [format!("{name}.pem"), format!("{name}-key.pem")] {
        let to = tls.join(&file);
        let tmp = tls.join(format!(".{file}.new"));
        std::fs::copy(from.join(&file), &tmp).expect("copy");
        // rename: an agent reading the files never sees half of one.
        std::fs::rename(&tmp, &to).expect("rename");
    }
}

#[test]
fn the_ca_and_every_certificate_are_replaced_with_sighup_only_then_a_revoked_member_is_refused() {
    let mut c = Cluster::new("rotation", 44, 5);
    let events = c.dir.0.join("events");
    for i in 0..5 {
        c.append_config(
            i,
            &format!(
                "\n[[hooks]]\nname = \"watch\"\nkind = \"exec\"\n\
                 events = [\"member.suspect\", \"member.failed\", \"member.recovered\", \"member.left\"]\n\
                 command = [\"/bin/sh\", \"-c\", \"echo \\\"node-{} $SWIMD_EVENT $SWIMD_MEMBER_NAME\\\" >> {}\"]\n",
                i + 1,
                events.display()
            ),
        );
    }
    c.start_all();
    assert!(c.wait_converged(secs(15)).is_some(), "no convergence");
    let all: Vec<usize> = (0..5).collect();
    let tls = c.dir.0.join("tls");
    let old_ca = std::fs::read_to_string(tls.join("ca.pem")).expect("ca");
    let before: Vec<f64> = all.iter().map(|&i| suspicions(&c, i)).collect();

    // 1. Trust the new CA beside the old one.
    let new = c.dir.0.join("tls-new");
    swimd::net::tls::init_ca(&new, "test").expect("new CA");
    let new_ca = std::fs::read_to_string(new.join("ca.pem")).expect("new ca");
    std::fs::write(tls.join("ca.pem"), format!("{old_ca}{new_ca}")).expect("both CAs");
    reload(&c, &all);
    // 2. Every node gets a certificate from the new CA.
    for node in &c.nodes {
        swimd::net::tls::issue(&new, &node.name, &[std::net::IpAddr::V4(node.ip)])
            .expect("new cert");
        install(&new, &tls, &node.name);
    }
    reload(&c, &all);
    // 3. Drop the old CA: connections made with old certificates close and come back.
    std::fs::write(tls.join("ca.pem"), &new_ca).expect("new CA only");
    reload(&c, &all);
    std::thread::sleep(secs(5));
    assert!(c.wait_converged(secs(5)).is_some(), "still converged");
    let after: Vec<f64> = all.iter().map(|&i| suspicions(&c, i)).collect();
    assert_eq!(before, after, "no suspicion during the rotation");
    let delivered = std::fs::read_to_string(&events).unwrap_or_default();
    assert!(delivered.is_empty(), "no hook delivery: {delivered}");
    let closed = all
        .iter()
        .filter(|&&i| c.log(i).contains("no longer verifies"))
        .count();
    eprintln!("ROTATION agents that closed old-certificate connections: {closed} of 5");

    // A bad revocation list is refused at reload; the running configuration stays.
    std::fs::write(tls.join("crl.pem"), "not a CRL\n").expect("garbage");
    for i in 0..4 {
        let text = std::fs::read_to_string(&c.nodes[i].config).expect("config");
        let text = text.replacen("key = \"tls/", "crl = \"tls/crl.pem\"\nkey = \"tls/", 1);
        std::fs::write(&c.nodes[i].config, text).expect("config");
    }
    signal(c.nodes[0].pid().expect("running"), libc::SIGHUP);
    let start = Instant::now();
    while !c
        .log(0)
        .contains("reload rejected, keeping the running configuration: tls: tls.crl")
    {
        assert!(
            start.elapsed() < secs(10),
            "bad CRL accepted:\n{}",
            c.log(0)
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Revoke node-5: nodes 1-4 load the list; node-5 is refused and ends failed.
    let crl = swimd::net::tls::revoke(&new, "node-5").expect("revoke");
    std::fs::copy(&crl, tls.join("crl.pem")).expect("crl");
    let revoked = Instant::now();
    reload(&c, &[0, 1, 2, 3]);
    let took = c.wait_state(&[0, 1, 2, 3], "node-5", State::Failed, secs(30));
    eprintln!(
        "ROTATION revoked node-5 failed on nodes 1-4 {:?} after the reload",
        took.map(|_| revoked.elapsed())
    );
    assert!(took.is_some(), "a revoked member ends failed everywhere");
    for i in 0..4 {
        assert!(
            c.log(i).contains("node-5") && c.log(i).contains("no longer verifies"),
            "node-{} closed its connection to node-5 at the reload:\n{}",
            i + 1,
            c.log(i)
        );
    }
    std::thread::sleep(secs(3));
    let view = c.view(0).expect("view");
    assert_eq!(
        view.get("node-5").map(|m| m.state),
        Some(State::Failed),
        "it stays failed: it cannot come back"
    );
    for other in ["node-1", "node-2", "node-3", "node-4"] {
        assert_eq!(view.get(other).map(|m| m.state), Some(State::Alive));
    }
}

//! The Kubernetes manifests in deploy/kubernetes, checked without a cluster: kubernetes-validate
//! (PyPI) against the API's schemas, the references between the manifests that no schema sees,
//! and the agent's configuration as the DaemonSet's init container renders it on a node.
//!
//! YAML is read by the PyYAML that kubernetes-validate depends on (`python3`), as JSON.

pub mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use swimd::config::Seed;

use support::cluster::TempDir;
use support::tools::{require_tool, swimd};

/// The newest Kubernetes whose schemas kubernetes-validate 1.37.0 ships (README in
/// deploy/kubernetes says so too).
const KUBERNETES_VERSION: &str = "1.37.0";
const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
/// Kinds from CRDs, whose schemas kubernetes-validate does not have: it only warns about
/// them, so this file checks their fields itself.
const CUSTOM_KINDS: &[&str] = &["ServiceMonitor"];
/// The Secret the operator creates by hand (README), which the DaemonSet mounts.
const TLS_SECRET: &str = "swimd-tls";

const YAML_TO_JSON: &str = "import json, sys, yaml\n\
     json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)";

fn have_tools() -> bool {
    require_tool("kubernetes-validate", "kubernetes-validate (PyPI)")
}

/// Every manifest file (the kustomization aside), sorted.
fn manifest_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(MANIFESTS)
        .expect("deploy/kubernetes")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .filter(|path| !path.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

/// The YAML documents of a file, as JSON values.
fn documents(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args(["-c", YAML_TO_JSON])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{} is not YAML PyYAML reads:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

/// Every resource of every manifest.
fn resources() -> Vec<Value> {
    manifest_files().iter().flat_map(|f| documents(f)).collect()
}

/// The one resource of `kind`.
fn only<'a>(resources: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = resources.iter().filter(|r| r["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"))
}

fn array<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("{what} is not a list: {value}"))
}

/// The item of a list (containers, volumes, ports, env) named `name`.
fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    array(list, "named list")
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("nothing named {name} in {list}"))
}

/// Whether every label `selector` asks for is in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.as_object().expect("matchLabels");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn every_manifest_passes_kubernetes_validate_strictly() {
    if !have_tools() {
        return;
    }
    let files = manifest_files();
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let report = printed(&out);
    assert!(out.status.success(), "kubernetes-validate:\n{report}");

    // A kind or apiVersion without a schema is only a warning: a misspelt one would pass.
    // So every resource must have been validated, save the custom kinds.
    let minor = KUBERNETES_VERSION.rsplit_once('.').unwrap().0;
    for resource in resources() {
        let kind = text(&resource["kind"], "kind");
        let name = text(&resource["metadata"]["name"], "metadata.name");
        if CUSTOM_KINDS.contains(&kind) {
            continue;
        }
        let passed = format!(
            "passed for resource {}/{name} against version {minor}",
            kind.to_lowercase()
        );
        assert!(
            report.contains(&passed),
            "{kind} {name} was not validated:\n{report}"
        );
    }
    for line in report.lines().filter(|l| !l.starts_with("INFO ")) {
        assert!(
            CUSTOM_KINDS
                .iter()
                .any(|kind| line.contains(&format!("schema for kind {kind} "))),
            "unexpected line from kubernetes-validate: {line}\n{report}"
        );
    }
}

#[test]
fn kustomization_lists_every_manifest() {
    if !have_tools() {
        return;
    }
    let kustomization = documents(&Path::new(MANIFESTS).join("kustomization.yaml"));
    let listed: BTreeSet<&str> = array(&kustomization[0]["resources"], "resources")
        .iter()
        .map(|r| text(r, "resource"))
        .collect();
    let files = manifest_files();
    let present: BTreeSet<&str> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(listed, present);
}

#[test]
fn manifests_refer_to_each_other_consistently() {
    if !have_tools() {
        return;
    }
    let all = resources();
    let namespace = text(&only(&all, "Namespace")["metadata"]["name"], "namespace");
    for resource in all.iter().filter(|r| r["kind"] != "Namespace") {
        assert_eq!(
            resource["metadata"]["namespace"], namespace,
            "{} {} is not in namespace {namespace}",
            resource["kind"], resource["metadata"]["name"]
        );
    }

    let daemonset = only(&all, "DaemonSet");
    let pod = &daemonset["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    let spec = &pod["spec"];
    assert!(selects(
        &daemonset["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert_eq!(
        spec["serviceAccountName"],
        only(&all, "ServiceAccount")["metadata"]["name"]
    );
    let volumes = &spec["volumes"];
    assert_eq!(
        named(volumes, "template")["configMap"]["name"],
        only(&all, "ConfigMap")["metadata"]["name"]
    );
    assert_eq!(named(volumes, "tls")["secret"]["secretName"], TLS_SECRET);
    // Group-readable for the pod's fsGroup, never world-readable (swimd refuses such a key).
    assert_eq!(named(volumes, "tls")["secret"]["defaultMode"], 0o440);
    let readme = std::fs::read_to_string(Path::new(MANIFESTS).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("create secret generic {TLS_SECRET}")),
        "README.md does not show how to create the Secret {TLS_SECRET}"
    );

    // The metrics port: the container's, the probes', the annotation's, the Service's.
    let swimd = named(&spec["containers"], "swimd");
    let metrics_port = &named(&swimd["ports"], "metrics")["containerPort"];
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(swimd[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    assert_eq!(swimd["readinessProbe"]["httpGet"]["path"], "/v1/health");
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(metrics_port.to_string().as_str())
    );

    let service = only(&all, "Service");
    assert_eq!(service["spec"]["clusterIP"], "None", "headless");
    assert!(selects(&service["spec"]["selector"], pod_labels));
    let service_ports = &service["spec"]["ports"];
    for port in array(service_ports, "Service ports") {
        let target = text(&port["targetPort"], "targetPort");
        let container_port = named(&swimd["ports"], target);
        assert_eq!(port["port"], container_port["containerPort"]);
        assert_eq!(port["protocol"], container_port["protocol"]);
    }

    let pdb = only(&all, "PodDisruptionBudget");
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"], pod_labels));
    // A DaemonSet has no scale subresource: only an integer minAvailable works.
    assert!(pdb["spec"]["minAvailable"].is_u64(), "{pdb}");
    assert!(pdb["spec"].get("maxUnavailable").is_none(), "{pdb}");
}

#[test]
fn service_monitor_has_its_required_fields_and_scrapes_the_metrics_port() {
    if !have_tools() {
        return;
    }
    let all = resources();
    let monitor = only(&all, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert!(monitor["metadata"]["name"].is_string(), "{monitor}");
    let service = only(&all, "Service");
    assert!(
        selects(
            &monitor["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "the ServiceMonitor does not select the Service"
    );
    let endpoints = array(&monitor["spec"]["endpoints"], "spec.endpoints");
    assert!(!endpoints.is_empty());
    for endpoint in endpoints {
        let port = text(&endpoint["port"], "endpoint port");
        named(&service["spec"]["ports"], port);
        assert_eq!(endpoint["path"], "/metrics");
    }
}

/// The render-config init container, run here as the kubelet would run it on a node named
/// `node` with address `host_ip`, its volumes being folders of `dir`.
struct Render {
    command: Vec<String>,
    template_dir: PathBuf,
    secret_dir: PathBuf,
    config_dir: PathBuf,
}

impl Render {
    /// The container from the DaemonSet; the ConfigMap's template and a Secret holding the
    /// CA and node-a's certificate and key (made by `swimd tls`, as README.md does) in `dir`.
    fn new(dir: &Path) -> Render {
        let all = resources();
        let spec = &only(&all, "DaemonSet")["spec"]["template"]["spec"];
        let init = named(&spec["initContainers"], "render-config");
        let env = &init["env"];
        assert_eq!(
            named(env, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
            "spec.nodeName"
        );
        assert_eq!(
            named(env, "HOST_IP")["valueFrom"]["fieldRef"]["fieldPath"],
            "status.hostIP"
        );
        // Each folder the script is given is where its volume is mounted, and the agent
        // reads the config where the script writes it.
        for (var, volume) in [
            ("TEMPLATE_DIR", "template"),
            ("SECRET_DIR", "tls"),
            ("CONFIG_DIR", "config"),
        ] {
            let mount = named(&init["volumeMounts"], volume);
            assert_eq!(named(env, var)["value"], mount["mountPath"], "{var}");
        }
        let agent = named(&spec["containers"], "swimd");
        let config_dir = text(&named(env, "CONFIG_DIR")["value"], "CONFIG_DIR");
        assert_eq!(
            named(&agent["volumeMounts"], "config")["mountPath"],
            config_dir
        );
        let command: Vec<String> = array(&agent["command"], "command")
            .iter()
            .map(|a| text(a, "argument").to_string())
            .collect();
        let config_file = format!("{config_dir}/swimd.toml");
        assert_eq!(command[1..], ["agent", "--config", config_file.as_str()]);

        let render = Render {
            command: array(&init["command"], "command")
                .iter()
                .map(|a| text(a, "argument").to_string())
                .collect(),
            template_dir: dir.join("template"),
            secret_dir: dir.join("secret"),
            config_dir: dir.join("config"),
        };
        let template = &only(&all, "ConfigMap")["data"]["swimd.toml"];
        std::fs::create_dir_all(&render.template_dir).unwrap();
        std::fs::write(
            render.template_dir.join("swimd.toml"),
            text(template, "swimd.toml"),
        )
        .unwrap();

        let ca = dir.join("ca");
        let ca_arg = ca.to_str().unwrap();
        for args in [
            vec!["tls", "init", "--dir", ca_arg, "--cluster", "kubernetes"],
            vec!["tls", "issue", "node-a", "--dir", ca_arg],
        ] {
            let out = swimd(&args);
            assert!(out.status.success(), "swimd {args:?}:\n{}", printed(&out));
        }
        // What the kubelet mounts: the Secret's keys as files, mode 0440 (defaultMode).
        std::fs::create_dir_all(&render.secret_dir).unwrap();
        for file in ["ca.pem", "node-a.pem", "node-a-key.pem"] {
            let to = render.secret_dir.join(file);
            std::fs::copy(ca.join(file), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o440)).unwrap();
        }
        std::fs::create_dir_all(&render.config_dir).unwrap();
        render
    }

    fn run(&self, node: &str, host_ip: &str) -> Output {
        Command::new(&self.command[0])
            .args(&self.command[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NODE_NAME", node)
            .env("HOST_IP", host_ip)
            .env("TEMPLATE_DIR", &self.template_dir)
            .env("SECRET_DIR", &self.secret_dir)
            .env("CONFIG_DIR", &self.config_dir)
            .output()
            .expect("run the render-config command")
    }
}

#[test]
fn configmap_renders_a_config_swimd_accepts_on_an_ipv4_and_an_ipv6_node() {
    if !have_tools() {
        return;
    }
    let dir = TempDir::new("kubernetes-render");
    let render = Render::new(&dir.0);
    let all = resources();
    let spec = &only(&all, "DaemonSet")["spec"]["template"]["spec"];
    let swimd_container = named(&spec["containers"], "swimd");
    let metrics_port = named(&swimd_container["ports"], "metrics")["containerPort"]
        .as_u64()
        .unwrap();
    let gossip_port = named(&swimd_container["ports"], "gossip")["containerPort"]
        .as_u64()
        .unwrap();
    let state_dir = text(
        &named(&swimd_container["volumeMounts"], "state")["mountPath"],
        "state mountPath",
    );
    assert_eq!(
        named(&spec["volumes"], "state")["hostPath"]["path"],
        state_dir
    );
    let service = only(&all, "Service");
    let seed_name = format!(
        "{}.{}.svc.cluster.local",
        text(&service["metadata"]["name"], "Service name"),
        text(&service["metadata"]["namespace"], "Service namespace")
    );

    for (host_ip, bind) in [("10.1.2.3", "10.1.2.3:7946"), ("fd00::7", "[fd00::7]:7946")] {
        let out = render.run("node-a", host_ip);
        assert!(out.status.success(), "render-config:\n{}", printed(&out));
        let rendered = render.config_dir.join("swimd.toml");
        let out = swimd(&["validate", rendered.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "swimd validate on the rendered config:\n{}\n{}",
            printed(&out),
            std::fs::read_to_string(&rendered).unwrap_or_default()
        );

        let config = swimd::config::load(&rendered).expect("the rendered config");
        assert_eq!(config.node.name.as_str(), "node-a");
        assert_eq!(config.gossip.bind, bind.parse::<SocketAddr>().unwrap());
        assert_eq!(u64::from(config.gossip.bind.port()), gossip_port);
        assert_eq!(
            config.metrics.listen.map(|a| u64::from(a.port())),
            Some(metrics_port),
            "the probes and Prometheus use the metrics port"
        );
        assert_eq!(config.state.dir, Path::new(state_dir));
        assert!(
            config.gossip.seeds.iter().any(|seed| matches!(
                seed,
                Seed::Addr { host, port } if *host == seed_name && u64::from(*port) == gossip_port
            )),
            "the seeds do not name the headless Service {seed_name}: {:?}",
            config.gossip.seeds
        );
        // What the agent loads at start: the copied files chain to the CA, carry the
        // node's name, and the key is private enough.
        swimd::net::tls::load(
            &config.tls.ca,
            &config.tls.cert,
            &config.tls.key,
            &config.node.name,
        )
        .expect("the rendered TLS files");
    }
}

#[test]
fn render_refuses_a_node_without_a_certificate_and_names_the_fix() {
    if !have_tools() {
        return;
    }
    let dir = TempDir::new("kubernetes-no-cert");
    let render = Render::new(&dir.0);
    let out = render.run("node-z", "10.1.2.4");
    let report = printed(&out);
    assert!(!out.status.success(), "render-config succeeded:\n{report}");
    assert!(
        report.contains("no node-z.pem") && report.contains("swimd tls issue node-z"),
        "{report}"
    );
    assert!(!render.config_dir.join("swimd.toml").exists());
}

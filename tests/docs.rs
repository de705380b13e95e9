//! The reference pages in docs/ against the code they describe: metric names against the
//! registrations in src/, API routes against the router, commands against the built binary's
//! `--help`, and every relative link in the Markdown files against the files (and headings)
//! it names. Read from the source and the binary: no agent runs, no network.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use regex::Regex;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SWIMD: &str = env!("CARGO_BIN_EXE_swimd");

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn doc(name: &str) -> String {
    read(&Path::new(ROOT).join("docs").join(name))
}

/// Files under `dir` (recursively) whose name ends with `suffix`, skipping build output and
/// downloaded packages.
fn files(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | "node_modules") && !name.starts_with('.') {
                files(&path, suffix, out);
            }
        } else if name.ends_with(suffix) {
            out.push(path);
        }
    }
    out.sort();
}

/// `path` relative to the repository, for messages.
fn shown(path: &Path) -> String {
    path.strip_prefix(ROOT)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// A source file's text without its trailing test module (`#[cfg(test)] mod …`), so names
/// that tests use are not taken for what the agent does.
fn without_tests(source: &str) -> &str {
    let test_module = Regex::new(r"#\[cfg\(test\)\]\s*(pub(\([a-z]+\))?\s+)?mod ").unwrap();
    match test_module.find(source) {
        Some(found) => &source[..found.start()],
        None => source,
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

/// Every `swimd_*` metric family the agent registers, with the file and line registering it:
/// the name literal that a prometheus `…::new(` (`Opts`, `HistogramOpts`, `IntCounter`,
/// `IntGauge`, …) takes first.
fn registered_metrics() -> BTreeMap<String, String> {
    let registration = Regex::new(r#"::new\(\s*"(swimd_[a-z0-9_]+)""#).unwrap();
    let mut sources = Vec::new();
    files(&Path::new(ROOT).join("src"), ".rs", &mut sources);
    let mut names = BTreeMap::new();
    for path in &sources {
        let text = read(path);
        let code = without_tests(&text);
        for found in registration.captures_iter(code) {
            let name = found.get(1).unwrap();
            let place = format!("{}:{}", shown(path), line_of(code, name.start()));
            names.entry(name.as_str().to_string()).or_insert(place);
        }
    }
    assert!(
        names.len() >= 40,
        "found only {} metric registrations in src/ ({:?}): has the way metrics are \
         registered changed? Teach registered_metrics in tests/docs.rs",
        names.len(),
        names.keys().collect::<Vec<_>>()
    );
    names
}

#[test]
fn every_exported_metric_has_a_row_in_docs_metrics_md_and_every_documented_one_is_exported() {
    let registered = registered_metrics();
    let page = doc("metrics.md");
    let rows: BTreeSet<&str> = page
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    let undocumented: Vec<String> = registered
        .iter()
        .filter(|(name, _)| !rows.contains(name.as_str()))
        .map(|(name, place)| format!("{name} (registered at {place})"))
        .collect();
    // Every name the page mentions, anywhere; a histogram's series by its family, and
    // `swimd_hook_*`-style prefixes are not names.
    let mention = Regex::new(r"\bswimd_[a-z0-9_]*[a-z0-9]\b").unwrap();
    let mut unknown = BTreeSet::new();
    for (number, line) in page.lines().enumerate() {
        for found in mention.find_iter(line) {
            let name = found.as_str();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| registered.contains_key(*base))
                .unwrap_or(name);
            if !registered.contains_key(family) {
                unknown.insert(format!("{name} (docs/metrics.md:{})", number + 1));
            }
        }
    }
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "exported but with no row `| `NAME` | labels | meaning |` in docs/metrics.md's table:\n  \
         {}\nnamed in docs/metrics.md but registered nowhere in src/:\n  {}",
        undocumented.join("\n  "),
        unknown.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

/// Every (method, path) the API's routers serve, with the file and line of its `.route(`.
fn routes_in_code() -> BTreeMap<(String, String), String> {
    let route = Regex::new(r#"\.route\(\s*"([^"]+)"\s*,"#).unwrap();
    let method = Regex::new(r"\b(get|post|put|delete|patch|head|options)\(").unwrap();
    let mut sources = Vec::new();
    files(&Path::new(ROOT).join("src/api"), ".rs", &mut sources);
    let mut routes = BTreeMap::new();
    for path in &sources {
        let text = read(path);
        let code = without_tests(&text);
        for other in [".nest(", ".nest_service(", ".route_service(", ".merge("] {
            assert!(
                !code.contains(other),
                "{} uses {other}: teach routes_in_code in tests/docs.rs to read it",
                shown(path)
            );
        }
        for found in route.captures_iter(code) {
            let whole = found.get(0).unwrap();
            let path_literal = found.get(1).unwrap().as_str();
            let place = format!("{}:{}", shown(path), line_of(code, whole.start()));
            // The handler expression: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let rest = &code[whole.end()..];
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap_or_else(|| panic!("{place}: unclosed .route("));
            let methods: Vec<String> = method
                .captures_iter(&rest[..end])
                .map(|m| m[1].to_uppercase())
                .collect();
            assert!(
                !methods.is_empty(),
                "{place}: no method in the route for {path_literal}: teach routes_in_code in \
                 tests/docs.rs to read it"
            );
            for m in methods {
                routes
                    .entry((m, path_literal.to_string()))
                    .or_insert(place.clone());
            }
        }
    }
    assert!(
        routes.len() >= 10,
        "found only {} routes in src/api/: has the router changed shape? {:?}",
        routes.len(),
        routes.keys().collect::<Vec<_>>()
    );
    routes
}

#[test]
fn every_route_is_in_docs_http_api_md_with_its_method_and_every_documented_route_exists() {
    let code = routes_in_code();
    let page = doc("http-api.md");
    let documented_route =
        Regex::new(r"`(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) (/[^\s`?]*)").unwrap();
    let mut documented = BTreeMap::new();
    for (number, line) in page.lines().enumerate() {
        for found in documented_route.captures_iter(line) {
            documented
                .entry((found[1].to_string(), found[2].to_string()))
                .or_insert(number + 1);
        }
    }
    let undocumented: Vec<String> = code
        .iter()
        .filter(|(route, _)| !documented.contains_key(*route))
        .map(|((method, path), place)| format!("`{method} {path}` (routed at {place})"))
        .collect();
    let unknown: Vec<String> = documented
        .iter()
        .filter(|(route, _)| !code.contains_key(*route))
        .map(|((method, path), line)| format!("`{method} {path}` (docs/http-api.md:{line})"))
        .collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "served but not in docs/http-api.md as `METHOD /path`:\n  {}\n\
         in docs/http-api.md but served by no router in src/api/:\n  {}",
        undocumented.join("\n  "),
        unknown.join("\n  ")
    );
}

/// The subcommands `swimd ARGS --help` lists (clap's own `help` left out).
fn subcommands(args: &[&str]) -> Vec<String> {
    let out = Command::new(SWIMD)
        .args(args)
        .arg("--help")
        .output()
        .expect("run swimd --help");
    assert!(out.status.success(), "swimd {args:?} --help failed");
    let help = String::from_utf8(out.stdout).expect("help is UTF-8");
    let command = Regex::new(r"^  ([a-z][a-z0-9-]*)(\s|$)").unwrap();
    help.lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter_map(|line| command.captures(line).map(|c| c[1].to_string()))
        .filter(|name| name != "help")
        .collect()
}

#[test]
fn every_command_in_swimd_help_is_in_docs_cli_md_and_every_documented_one_exists() {
    let page = doc("cli.md");
    let mut commands = BTreeSet::new();
    for top in subcommands(&[]) {
        let nested = subcommands(&[&top]);
        if nested.is_empty() {
            commands.insert(format!("swimd {top}"));
        }
        commands.extend(nested.into_iter().map(|sub| format!("swimd {top} {sub}")));
    }
    assert!(
        commands.len() >= 15,
        "found only {commands:?} in swimd --help"
    );
    let missing: Vec<&str> = commands
        .iter()
        .map(|command| command.as_str())
        .filter(|command| {
            let named = Regex::new(&format!(r"`{}([^a-z0-9-]|$)", regex::escape(command))).unwrap();
            !page.lines().any(|line| named.is_match(line))
        })
        .collect();
    // `swimd WORD [WORD]` at the start of a code span must be a command (or --version).
    let documented = Regex::new(r"`swimd ([a-z][a-z0-9-]*)(?: ([a-z][a-z0-9-]*))?").unwrap();
    let mut unknown = Vec::new();
    for (number, line) in page.lines().enumerate() {
        for found in documented.captures_iter(line) {
            let top = format!("swimd {}", &found[1]);
            let known = commands.contains(&top)
                || match found.get(2) {
                    Some(sub) => commands.contains(&format!("{top} {}", sub.as_str())),
                    None => commands.iter().any(|c| c.starts_with(&format!("{top} "))),
                };
            if !known {
                unknown.push(format!("`{}` (docs/cli.md:{})", &found[0][1..], number + 1));
            }
        }
    }
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "in `swimd --help` but not named in docs/cli.md (as a code span starting `swimd \
         COMMAND`):\n  {}\nin docs/cli.md but not a command of `swimd --help`:\n  {}",
        missing.join("\n  "),
        unknown.join("\n  ")
    );
}

/// GitHub's anchors for a page's headings (outside code blocks).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut anchors = BTreeSet::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            let title = line.trim_start_matches('#').trim().to_lowercase();
            let anchor: String = title
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            anchors.insert(anchor);
        }
    }
    anchors
}

#[test]
fn every_relative_link_in_the_markdown_files_points_at_a_file_and_heading_that_exist() {
    let link = Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut pages = Vec::new();
    files(Path::new(ROOT), ".md", &mut pages);
    assert!(
        pages.iter().any(|p| p.ends_with("docs/cli.md")),
        "{pages:?}"
    );
    let mut broken = Vec::new();
    for page in &pages {
        let text = read(page);
        let mut in_code = false;
        for (number, line) in text.lines().enumerate() {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            if in_code {
                continue;
            }
            for found in link.captures_iter(line) {
                let target = &found[1];
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                let (file, anchor) = match target.split_once('#') {
                    Some((file, anchor)) => (file, Some(anchor)),
                    None => (target, None),
                };
                let path = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().unwrap().join(file)
                };
                let place = format!("{}:{}", shown(page), number + 1);
                if !path.exists() {
                    broken.push(format!("{place}: {target} (no file {})", shown(&path)));
                } else if let Some(anchor) =
                    anchor.filter(|_| file.is_empty() || file.ends_with(".md"))
                    && !anchors(&read(&path)).contains(anchor)
                {
                    broken.push(format!(
                        "{place}: {target} (no heading #{anchor} in {})",
                        shown(&path)
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links to nothing:\n  {}",
        broken.join("\n  ")
    );
}

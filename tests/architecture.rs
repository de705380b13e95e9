//! Imports flow one way (docs/architecture.md): a room may use only the rooms below it.
//! Read from the source, so a new `use` that points up, or a new cycle, fails here with the
//! file and line that made it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The rooms, bottom first; a room may import only rooms of a lower rank.
const RANKS: [(&str, u8); 17] = [
    ("wire", 0),
    ("math", 0),
    ("process", 0),
    ("core", 1),
    ("model", 2),
    ("net", 2),
    ("sim", 2),
    ("metrics", 3),
    ("hooks", 4),
    ("checks", 4),
    ("config", 5),
    ("agent", 6),
    ("api", 7),
    ("haproxy", 7),
    ("serve", 8),
    ("cli", 9),
    ("lib", 10),
];

fn rank(room: &str) -> Option<u8> {
    RANKS
        .iter()
        .find(|(r, _)| *r == room)
        .map(|(_, rank)| *rank)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::ROOM` a file names outside comments and its test module, with its line.
fn imports(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        if line.trim_start().starts_with("#[cfg(test)]") {
            break; // the test module ends every file that has one
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let room: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !room.is_empty() {
                found.push((n + 1, room));
            }
        }
    }
    found
}

#[test]
fn every_room_imports_only_rooms_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut graph: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let room = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|c| c.trim_end_matches(".rs").to_string())
            .expect("a room");
        if room == "main" {
            continue;
        }
        let Some(own) = rank(&room) else {
            wrong.push(format!(
                "{}: room {room} has no rank in RANKS",
                relative.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("source is readable");
        for (line, target) in imports(&text) {
            if target == room || target == "VERSION" {
                continue;
            }
            graph
                .entry(room.clone())
                .or_default()
                .insert(target.clone());
            match rank(&target) {
                Some(r) if r < own => {}
                _ => wrong.push(format!(
                    "{}:{line}: {room} imports {target}, which is not below it",
                    relative.display()
                )),
            }
        }
    }
    for (room, targets) in &graph {
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        println!("{room} -> {}", targets.join(" "));
    }
    assert!(
        wrong.is_empty(),
        "imports that point up:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scan_sees_imports_and_skips_comments_and_tests() {
    let text = "use crate::wire::State;\n// crate::agent in a comment\nlet x = crate::core::Swim::new(); // crate::api\n#[cfg(test)]\nmod tests { use crate::cli; }\n";
    let found = imports(text);
    assert_eq!(
        found,
        vec![(1, "wire".to_string()), (3, "core".to_string())]
    );
}

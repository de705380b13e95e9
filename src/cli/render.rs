//! How the CLI prints: the members table, event lines, timestamps, and text from the agent
//! made safe for a terminal.

use std::io::Write;

use anyhow::Context;

use crate::api::json::{EventJson, MemberJson};

/// Writes to stdout; false (not an error) when the reader has gone away.
pub(super) fn print(out: &mut impl Write, text: &str) -> anyhow::Result<bool> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// The `members` table: a header, then one aligned row per member.
pub(super) fn render_table(members: &[MemberJson], detailed: bool) -> String {
    let mut header = vec!["NAME", "ADDR", "STATE", "HEALTH", "INCARNATION"];
    if detailed {
        header.extend(["RELEASE", "WIRE"]);
    }
    header.push("TAGS");
    let rows: Vec<Vec<String>> = std::iter::once(header.into_iter().map(String::from).collect())
        .chain(members.iter().map(|m| {
            // Why it is out: the operator's reason, or the checks that fail.
            let why = match &m.maintenance {
                Some(reason) => reason.clone(),
                None => m.failing_checks.join(","),
            };
            let health = if why.is_empty() {
                printable(m.health.as_str())
            } else {
                printable(&format!("{} ({why})", m.health))
            };
            let mut row = vec![
                printable(&m.name),
                printable(&m.addr),
                printable(m.state.as_str()),
                health,
                m.incarnation.to_string(),
            ];
            if detailed {
                let (release, wire) = m.software.as_ref().map_or_else(
                    || ("-".to_string(), "-".to_string()),
                    |s| {
                        (
                            printable(&s.release),
                            format!("w{} r{}-{}", s.writes, s.reads_from, s.reads_to),
                        )
                    },
                );
                row.extend([release, wire]);
            }
            row.push(tags_text(&m.tags));
            row
        }))
        .collect();
    let mut widths = vec![0; rows.first().map_or(0, Vec::len)];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in &rows {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if column > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            let padding = width.saturating_sub(cell.chars().count());
            line.extend(std::iter::repeat_n(' ', padding));
        }
        table.push_str(line.trim_end());
        table.push('\n');
    }
    table
}

/// Tags as `k=v,k=v` (sorted by key).
pub(super) fn tags_text(tags: &crate::wire::Tags) -> String {
    tags.iter()
        .map(|(key, value)| format!("{}={}", printable(key), printable(value)))
        .collect::<Vec<_>>()
        .join(",")
}

/// One `watch` line: `<time> <type> <member> <previous>→<state> incarnation=<n>`.
pub(super) fn event_line(event: &EventJson) -> String {
    format!(
        "{} {} {} {}→{} incarnation={}",
        utc_time(event.timestamp),
        printable(&event.kind),
        printable(&event.member.name),
        event
            .previous_state
            .map_or("-", crate::model::State::as_str),
        event.member.state,
        event.member.incarnation
    )
}

/// Text from peers with control characters escaped, so a tag cannot drive the terminal.
pub(super) fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Unix seconds as `2023-11-14T22:13:20.250Z` (a time outside years ±9999 as `@seconds`).
pub(super) fn utc_time(unix_seconds: f64) -> String {
    // `as` saturates (and maps NaN to 0): a nonsense timestamp prints oddly, never panics.
    let millis = (unix_seconds * 1000.0).round() as i64;
    match time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        ),
        Err(_) => format!("@{unix_seconds}"),
    }
}

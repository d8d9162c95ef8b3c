//! How results look: aligned tables and key–value views for people (bold headers only on a
//! terminal), the API's JSON unchanged for scripts, and the formatting of bytes, rates, times
//! and durations.

use serde_json::Value;

use super::http::{Client, ClientError, Reply};

/// An aligned table: columns padded to their widest cell, two spaces apart.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row; `bold` makes the header bold.
    pub fn render(&self, bold: bool) -> String {
        let columns = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().take(columns).enumerate() {
                widths[i] = widths[i].max(width(cell));
            }
        }
        let line = |cells: &[String], bold: bool| {
            let mut out = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                let last = i + 1 == columns;
                let pad = if last { 0 } else { w - width(cell) };
                if bold {
                    out.push_str(&console::style(cell).bold().force_styling(true).to_string());
                } else {
                    out.push_str(cell);
                }
                if !last {
                    out.push_str(&" ".repeat(pad + 2));
                }
            }
            out.trim_end().to_string()
        };
        let mut out = line(&self.header, bold);
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row, false));
            out.push('\n');
        }
        out
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        print!("{}", self.render(console::colors_enabled()));
    }
}

/// Prints `key: value` lines with the values aligned.
pub fn print_fields(fields: &[(&str, String)]) {
    let w = fields.iter().map(|(k, _)| width(k)).max().unwrap_or(0);
    for (k, v) in fields {
        let line = format!("{k}:{}{v}", " ".repeat(w - width(k) + 1));
        println!("{}", line.trim_end());
    }
}

fn width(s: &str) -> usize {
    console::measure_text_width(s)
}

/// Prints a reply: its JSON unchanged when the client prints JSON, else what `human` makes of
/// it.
///
/// # Errors
/// When the body is not JSON, or `human` fails.
pub fn show(
    client: &Client,
    reply: &Reply,
    human: impl FnOnce(&Value) -> Result<(), ClientError>,
) -> Result<i32, ClientError> {
    if client.json() {
        print_json(reply);
    } else {
        human(&reply.value()?)?;
    }
    Ok(0)
}

/// Prints a reply's body as it came (nothing for an empty one).
pub fn print_json(reply: &Reply) {
    let text = reply.text.trim_end();
    if !text.is_empty() {
        println!("{text}");
    }
}

/// A field as text: strings as they are, numbers and booleans written out, lists joined with
/// commas; null, missing, empty strings and empty lists as `-`.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "-".into(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A field as an integer (0 when missing).
pub fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// A byte count in IEC units: `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n.abs() < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A rate in bytes per second: `20.0 MiB/s`.
pub fn rate(bytes_per_sec: i64) -> String {
    format!("{}/s", bytes(bytes_per_sec))
}

/// A time (Unix ms) in UTC: `2026-05-01 03:00:00Z`.
pub fn time(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// An optional time field: [`time`], or `-`.
pub fn time_of(v: &Value) -> String {
    v.as_i64().map(time).unwrap_or_else(|| "-".into())
}

/// A duration: `850ms`, `42s`, `3m 05s`, `2h 01m`.
pub fn duration(ms: i64) -> String {
    let s = ms / 1000;
    match ms {
        ..1000 => format!("{ms}ms"),
        1000..60_000 => format!("{s}s"),
        60_000..3_600_000 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Now, by this machine's clock, in Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `done` of `total` as a percentage (`-` when the total is unknown).
pub fn percent(done: i64, total: i64) -> String {
    if total <= 0 {
        "-".into()
    } else {
        format!("{}%", (done.saturating_mul(100) / total).clamp(0, 100))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_without_trailing_space() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.row(vec![
            "1".into(),
            "registry.example/app:1".into(),
            "running".into(),
        ]);
        t.row(vec!["12".into(), "x".into(), "-".into()]);
        assert_eq!(
            t.render(false),
            "ID  NAME                    STATE\n\
             1   registry.example/app:1  running\n\
             12  x                       -\n"
        );
    }

    #[test]
    fn units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(rate(1 << 20), "1.0 MiB/s");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(185_000), "3m 05s");
        assert_eq!(duration(7_260_000), "2h 01m");
        assert_eq!(time(0), "1970-01-01 00:00:00Z");
        assert_eq!(percent(1, 3), "33%");
        assert_eq!(percent(1, 0), "-");
        assert_eq!(text(&serde_json::json!([1, 2])), "1, 2");
        assert_eq!(text(&Value::Null), "-");
    }
}

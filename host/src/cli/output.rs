//! What the client subcommands print: aligned tables for people, the node's JSON
//! for scripts, and colour only where a person is looking.

use serde_json::Value;
use std::io::{IsTerminal, Write};

/// Whether to colour output. Colour is on only when stdout is a terminal and
/// neither `--no-color` nor a non-empty `NO_COLOR` (https://no-color.org) says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    color: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum Color {
    Red,
    Green,
    Yellow,
    Blue,
    Magenta,
    Cyan,
    Dim,
    Bold,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Red => "31",
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Blue => "34",
            Color::Magenta => "35",
            Color::Cyan => "36",
            Color::Dim => "2",
            Color::Bold => "1",
        }
    }
}

impl Style {
    pub fn detect(no_color: bool) -> Style {
        let env_off = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Style {
            color: !no_color && !env_off && std::io::stdout().is_terminal(),
        }
    }

    pub fn plain() -> Style {
        Style { color: false }
    }

    pub fn colored() -> Style {
        Style { color: true }
    }

    pub fn paint(&self, color: Color, text: &str) -> String {
        if self.color {
            format!("\x1b[{}m{text}\x1b[0m", color.code())
        } else {
            text.to_string()
        }
    }
}

/// A table with a header row; columns are as wide as their widest cell.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Table {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| visible_width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().take(n).enumerate() {
                widths[i] = widths[i].max(visible_width(cell));
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().take(n).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < n {
                    let pad = widths[i] - visible_width(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    pub fn print(&self) {
        print_str(&self.render());
    }
}

/// Width on screen: characters, not counting ANSI colour sequences.
pub fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            width += 1;
        }
    }
    width
}

/// Shortens `text` to `max` characters, marking the cut with an ellipsis, and
/// keeps a table on one line per row.
pub fn truncate(text: &str, max: usize) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() <= max {
        return one_line;
    }
    let mut cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The node's JSON as given, pretty-printed: stable for `jq` and readable.
pub fn print_json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    print_str(&format!("{text}\n"));
}

/// Prints without panicking when stdout is a closed pipe (`busbar ... | head`).
pub fn print_str(text: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// A JSON field as a table cell: strings bare, absent or null as `-`.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) if s.is_empty() => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The first of several field names present in `value`, for reading answers
/// whose field names differ between node versions.
pub fn first<'a>(value: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter()
        .filter_map(|k| value.get(*k))
        .find(|v| !v.is_null())
}

/// "1 rule", "3 rules".
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_align_on_visible_width() {
        let mut t = Table::new(&["NAME", "STATE"]);
        t.row(vec![
            "orders".into(),
            Style::colored().paint(Color::Green, "ok"),
        ]);
        t.row(vec!["x".into(), "failed".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "NAME    STATE");
        assert_eq!(lines[1], "orders  \x1b[32mok\x1b[0m");
        assert_eq!(lines[2], "x       failed");
    }

    #[test]
    fn plain_style_adds_no_escapes() {
        assert_eq!(
            Style::plain().paint(Color::Red, "dead-letter"),
            "dead-letter"
        );
    }

    #[test]
    fn truncation_marks_the_cut_and_flattens_lines() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("a\nb", 10), "a b");
        assert_eq!(truncate("short", 5), "short");
    }

    #[test]
    fn cells_and_fallback_names() {
        let v = json!({"a": null, "b": 3, "c": "x", "d": ""});
        assert_eq!(cell(v.get("a")), "-");
        assert_eq!(cell(v.get("b")), "3");
        assert_eq!(cell(v.get("c")), "x");
        assert_eq!(cell(v.get("d")), "-");
        assert_eq!(cell(first(&v, &["a", "c"])), "x");
        assert_eq!(cell(first(&v, &["zz"])), "-");
    }
}

//! Terminal output and flag values shared by the commands: aligned tables, cut text and
//! labels.

use std::io::Write;

use anyhow::Result;

/// Prints `rows` (the header first) in columns three spaces apart.
pub fn print_table(out: &mut impl Write, rows: &[Vec<String>]) -> Result<()> {
    let cols = rows.first().map_or(0, |r| r.len());
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// `--label` values as a map: `KEY=VALUE`, or `KEY` for an empty value.
pub fn parse_labels(labels: &[String]) -> std::collections::BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// `s` cut to `n` characters, the last of them an ellipsis, as docker's
/// `formatter.Ellipsis` cuts table cells: a cell of width 0 is empty, and one of width 1
/// holds the first character alone.
pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    match n {
        0 => String::new(),
        1 => s.chars().take(1).collect(),
        _ => {
            let t: String = s.chars().take(n - 1).collect();
            format!("{t}…")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd", "a cell that fits is whole");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(truncate("", 0), "");
        assert_eq!(
            truncate("abc", 0),
            "",
            "width 0: nothing, not a lone ellipsis"
        );
        assert_eq!(
            truncate("abc", 1),
            "a",
            "width 1: the first character, no ellipsis"
        );
        assert_eq!(truncate("abc", 2), "a…");
        assert_eq!(truncate("ééééé", 3), "éé…", "characters, not bytes");
        let t = truncate(&"x".repeat(100), 45);
        assert_eq!(t.chars().count(), 45);
        assert!(t.ends_with('…'));
    }
}

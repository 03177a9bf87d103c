//! Just enough JSON reading for xtask's inputs (cargo's `--message-format=json`
//! lines and the figures' one-object-per-line output), so xtask stays free of
//! dependencies.

/// The value of `"key": value` in one JSON object line: a string (unescaped),
/// a number or bool as written, the first string of an array; `None` when the
/// key is absent or the value is `null`. The first occurrence of the key
/// wins, so ask only for keys that are unique in the line.
pub fn field(obj: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let mut from = 0;
    let rest = loop {
        let at = from + obj[from..].find(&quoted)?;
        let after = obj[at + quoted.len()..].trim_start();
        // A key is followed by a colon; the same text as a value is not.
        if let Some(value) = after.strip_prefix(':') {
            break value.trim_start();
        }
        from = at + quoted.len();
    };
    let rest = rest.strip_prefix('[').map_or(rest, str::trim_start);
    if let Some(s) = rest.strip_prefix('"') {
        return string(s);
    }
    let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_owned()).filter(|v| v != "null" && !v.is_empty())
}

/// Reads a JSON string body up to its closing quote.
fn string(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).unwrap_or('\u{fffd}'));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// Writes `s` as a JSON string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::{field, quote};

    #[test]
    fn reads_a_figure_line() {
        let l = r#"{"name": "pool_apply_roundtrip_us", "unit": "us", "better": "lower", "multiproc": 21.4, "cpython": null}"#;
        assert_eq!(field(l, "name").as_deref(), Some("pool_apply_roundtrip_us"));
        assert_eq!(field(l, "multiproc").as_deref(), Some("21.4"));
        assert_eq!(field(l, "cpython"), None);
        assert_eq!(field(l, "missing"), None);
    }

    #[test]
    fn reads_a_cargo_artifact_line() {
        let l = r#"{"reason":"compiler-artifact","package_id":"path+file:///w#a@0.1.0","target":{"kind":["example"],"crate_types":["bin"],"name":"hello","src_path":"/w/examples/he\"llo.rs"},"executable":"/t/debug/examples/hello","fresh":true}"#;
        assert_eq!(field(l, "kind").as_deref(), Some("example"));
        assert_eq!(field(l, "src_path").as_deref(), Some("/w/examples/he\"llo.rs"));
        assert_eq!(field(l, "executable").as_deref(), Some("/t/debug/examples/hello"));
        assert_eq!(field(l, "fresh").as_deref(), Some("true"));
    }

    #[test]
    fn a_key_spelled_as_a_value_is_skipped() {
        let l = r#"{"note": "name", "name": "x"}"#;
        assert_eq!(field(l, "name").as_deref(), Some("x"));
    }

    #[test]
    fn quotes_round_trip() {
        let s = "a \"b\" \\ c\nd";
        assert_eq!(field(&format!("{{\"k\": {}}}", quote(s)), "k").as_deref(), Some(s));
    }
}

//! Where a JSON document fails to read, in the document's words: the path a finding names
//! (`items[0].name`) and the reader's message without the server's type names. Shared by the
//! order reader and the ERP API's strict bodies.

/// A path as findings write it (`items[0].name`; empty for the document itself).
#[must_use]
pub fn path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// A JSON reader's message in the document's words: the kinds of JSON a field takes, not the
/// names of the types behind them (`expected struct PartyInput` → `expected an object`), and
/// without the line and column (the path says where).
#[must_use]
pub fn plain_message(message: &str) -> String {
    let mut m = message
        .split(" at line ")
        .next()
        .unwrap_or(message)
        .to_owned();
    for (from, to) in [
        ("a sequence", "an array"),
        ("a map", "an object"),
        ("type: sequence", "type: array"),
        ("type: map", "type: object"),
        ("unit value", "null"),
    ] {
        m = m.replace(from, to);
    }
    // `struct Name`, `enum Name`, `tuple struct Name`: an object, or one of the choices.
    for (kind, plain) in [
        ("struct ", "an object"),
        ("enum ", "one of the allowed values"),
    ] {
        while let Some(i) = m.find(&format!("expected {kind}")) {
            let start = i + "expected ".len();
            let end = m[start + kind.len()..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(m.len(), |j| start + kind.len() + j);
            m.replace_range(start..end, plain);
        }
    }
    m
}

//! A tiny JSON value and writer, enough for PD's and TiKV's HTTP answers.
//!
//! Objects keep their fields in insertion order, so the output is byte-for-byte the same
//! every time (and matches the field order of the Go structs it imitates).

use std::fmt::Write as _;

/// A JSON value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// A signed integer.
    Int(i64),
    /// A string (escaped on output).
    Str(String),
    /// An array.
    Array(Vec<Self>),
    /// An object; fields in output order.
    Object(Vec<(String, Self)>),
}

impl Json {
    /// An object from `(name, value)` pairs, in that order.
    pub fn object<K: Into<String>>(fields: impl IntoIterator<Item = (K, Self)>) -> Self {
        Self::Object(
            fields
                .into_iter()
                .map(|(name, value)| (name.into(), value))
                .collect(),
        )
    }

    /// A string value.
    pub fn str(value: impl Into<String>) -> Self {
        Self::Str(value.into())
    }

    /// The compact JSON text of this value.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            Self::UInt(value) => {
                let _ = write!(out, "{value}");
            }
            Self::Int(value) => {
                let _ = write!(out, "{value}");
            }
            Self::Str(value) => write_string(out, value),
            Self::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Self::Object(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(out, name);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Writes `value` as a JSON string literal: quotes, backslashes and control characters are
/// escaped (RFC 8259 section 7); everything else is copied as UTF-8.
fn write_string(out: &mut String, value: &str) {
    out.push('"');
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_compact_json_in_field_order() {
        let value = Json::object([
            ("b", Json::UInt(1)),
            (
                "a",
                Json::Array(vec![Json::Null, Json::Bool(true), Json::Int(-3)]),
            ),
            ("c", Json::object(Vec::<(String, Json)>::new())),
            ("d", Json::Array(Vec::new())),
        ]);
        assert_eq!(
            value.to_text(),
            r#"{"b":1,"a":[null,true,-3],"c":{},"d":[]}"#
        );
    }

    #[test]
    fn escapes_strings() {
        let value = Json::str("q\"b\\n\n\u{1}\u{1f}é");
        assert_eq!(value.to_text(), "\"q\\\"b\\\\n\\n\\u0001\\u001fé\"");
        assert_eq!(Json::str("").to_text(), "\"\"");
    }
}

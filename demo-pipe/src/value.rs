//! A Python value, as the note's `[42, None, 'hello']`: a list may hold an int, `None` and a
//! str side by side, which a Rust `Vec` can only do through an enum. Its `Display` is Python's
//! `repr`, so the demo prints exactly what Python prints.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Python value of the kinds the note's list holds.
///
/// ```
/// use demo_pipe::value::Value;
///
/// let hello = Value::List(vec![42.into(), Value::None, "hello".into()]);
/// assert_eq!(hello.to_string(), "[42, None, 'hello']");
/// ```
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Value {
    /// Python's `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An `int` (here at most 64 bits).
    Int(i64),
    /// A `str`.
    Str(String),
    /// A `list`, whose items may be of different kinds.
    List(Vec<Value>),
}

impl From<i64> for Value {
    fn from(i: i64) -> Value {
        Value::Int(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::None, Into::into)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(b) => f.write_str(if *b { "True" } else { "False" }),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => write_str_repr(f, s),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Python's `repr(str)`: single quotes, unless the text has a single quote and no double
/// one; backslash escapes for the quote, the backslash and control characters. (Python also
/// escapes non-printable characters outside Latin-1, such as U+200B; those pass through here.)
fn write_str_repr(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    write!(f, "{quote}")?;
    for c in s.chars() {
        match c {
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            c if c == quote => write!(f, "\\{c}")?,
            c if c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
            c => write!(f, "{c}")?,
        }
    }
    write!(f, "{quote}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notes_list_prints_as_python_prints_it() {
        let v = Value::List(vec![42.into(), Value::None, "hello".into()]);
        assert_eq!(v.to_string(), "[42, None, 'hello']");
    }

    #[test]
    fn nested_and_other_values() {
        let v = Value::List(vec![
            Value::List(vec![]),
            Value::Bool(true),
            Value::Int(-3),
            None::<i64>.into(),
            Some(5).into(),
        ]);
        assert_eq!(v.to_string(), "[[], True, -3, None, 5]");
    }

    #[test]
    fn strings_are_quoted_and_escaped_as_repr_does() {
        // Each expected text is what Python 3 prints for repr() of the same string.
        let cases = [
            ("hello", "'hello'"),
            ("it's", "\"it's\""),
            ("say \"hi\"", "'say \"hi\"'"),
            ("both ' and \"", "'both \\' and \"'"),
            ("tab\there\nnew", "'tab\\there\\nnew'"),
            ("back\\slash", "'back\\\\slash'"),
            ("\u{1}\u{7f}", "'\\x01\\x7f'"),
            ("\u{85}", "'\\x85'"),
            ("héllo 你好", "'héllo 你好'"),
        ];
        for (s, repr) in cases {
            assert_eq!(Value::from(s).to_string(), repr, "repr of {s:?}");
        }
    }
}

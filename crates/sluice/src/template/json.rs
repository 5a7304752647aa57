//! JSON into templates and back out, every number exactly as it was written.
//!
//! `serde_json` keeps each number's text (the `arbitrary_precision`
//! feature), every digit as written; only an exponent is spelt one way
//! (`1E5` is kept as `1e+5`, the same number). A number whose text an `i128`
//! or an `f64` writes back the same way becomes that native number, so
//! arithmetic and comparisons work on it; any other
//! (`123456789012345678901234567890123456789012`, `1e-400`, `-0`) becomes a
//! [`JsonNumber`] that renders, and goes out through `tojson`, as its text.

use std::fmt;
use std::sync::Arc;

use minijinja::Value;
use minijinja::value::{Object, ObjectRepr, ValueKind};

/// A JSON number no native template number writes back the same way: its
/// text, passed through unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonNumber(pub String);

impl Object for JsonNumber {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Plain
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A parsed JSON document as a template value.
pub fn to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => number(n.as_str()),
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => a.iter().map(to_value).collect(),
        serde_json::Value::Object(o) => o.iter().map(|(k, v)| (k.as_str(), to_value(v))).collect(),
    }
}

/// A number's text as the native number that writes it back the same way,
/// or as a [`JsonNumber`].
fn number(text: &str) -> Value {
    if let Ok(i) = text.parse::<i128>() {
        if i.to_string() == text {
            return Value::from(i);
        }
    } else if let Ok(f) = text.parse::<f64>() {
        // Both ways a float leaves a template: printed, and through tojson.
        let native = Value::from(f);
        if f.is_finite()
            && native.to_string() == text
            && serde_json::to_string(&f).is_ok_and(|s| s == text)
        {
            return native;
        }
    }
    Value::from_object(JsonNumber(text.to_owned()))
}

/// A template value as JSON; `Err` names what JSON cannot hold.
pub fn from_value(v: &Value) -> Result<serde_json::Value, String> {
    if let Some(n) = v.downcast_object_ref::<JsonNumber>() {
        return Ok(serde_json::Value::Number(
            serde_json::Number::from_string_unchecked(n.0.clone()),
        ));
    }
    Ok(match v.kind() {
        ValueKind::Undefined => return Err("an undefined value".into()),
        ValueKind::None => serde_json::Value::Null,
        ValueKind::Seq | ValueKind::Iterable => serde_json::Value::Array(
            v.try_iter()
                .map_err(|e| e.to_string())?
                .map(|x| from_value(&x))
                .collect::<Result<_, _>>()?,
        ),
        ValueKind::Map => {
            let mut out = serde_json::Map::new();
            for k in v.try_iter().map_err(|e| e.to_string())? {
                let item = v.get_item(&k).map_err(|e| e.to_string())?;
                let key = match k.as_str() {
                    Some(s) => s.to_owned(),
                    None => k.to_string(),
                };
                out.insert(key, from_value(&item)?);
            }
            serde_json::Value::Object(out)
        }
        // Strings, bools, native numbers, bytes: as minijinja serializes
        // them.
        _ => serde_json::to_value(v).map_err(|e| e.to_string())?,
    })
}

/// `tojson`: the value as JSON text, numbers exact; `indent` spaces per
/// level when given. An undefined value is an error, not `null`: a
/// misspelt variable must not post `null`.
pub fn tojson(value: &Value, indent: Option<usize>) -> Result<String, String> {
    if value.is_undefined() {
        return Err("tojson was given an undefined value".into());
    }
    let json = from_value(value)?;
    let text = match indent {
        None => serde_json::to_string(&json),
        Some(n) => {
            let pad = vec![b' '; n];
            let mut out = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(&pad);
            let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
            serde::Serialize::serialize(&json, &mut ser)
                .map(|()| String::from_utf8(out).expect("serde_json writes UTF-8"))
        }
    };
    text.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(text: &str) -> (String, String) {
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let v = to_value(&doc);
        (v.to_string(), tojson(&v, None).unwrap())
    }

    #[test]
    fn numbers_keep_their_text() {
        for n in [
            "123456789012345678901234567890",
            "-123456789012345678901234567890123456789012345",
            "1e-400",
            "1e+400",
            "1e+5",
            "1.5e-10",
            "-0",
            "1.0",
            "1",
            "0.1",
            "-2.5",
            "18446744073709551616",
            "3.141592653589793238462643383279",
        ] {
            assert_eq!(through(n), (n.to_owned(), n.to_owned()), "{n}");
        }
        // Exponents are spelt one way; the number is the same.
        for (n, kept) in [("1E5", "1e+5"), ("1e400", "1e+400"), ("2.5E-3", "2.5e-3")] {
            assert_eq!(through(n), (kept.to_owned(), kept.to_owned()), "{n}");
        }
        let (_, json) = through(r#"{"a": [1E5, 1.0, 1, -0], "b": 123456789012345678901234567890}"#);
        assert_eq!(
            json,
            r#"{"a":[1e+5,1.0,1,-0],"b":123456789012345678901234567890}"#
        );
    }

    #[test]
    fn plain_numbers_stay_numbers() {
        let doc: serde_json::Value =
            serde_json::from_str(r#"[7, 1.5, 170141183460469231731687303715884105727]"#).unwrap();
        let v = to_value(&doc);
        assert_eq!(v.get_item(&Value::from(0)).unwrap().as_i64(), Some(7));
        assert_eq!(
            v.get_item(&Value::from(1)).unwrap().kind(),
            ValueKind::Number
        );
        assert_eq!(
            v.get_item(&Value::from(2)).unwrap().kind(),
            ValueKind::Number
        );
    }

    #[test]
    fn tojson_indents_and_refuses_undefined() {
        let doc: serde_json::Value = serde_json::from_str(r#"{"a": 1}"#).unwrap();
        assert_eq!(
            tojson(&to_value(&doc), Some(2)).unwrap(),
            "{\n  \"a\": 1\n}"
        );
        assert!(tojson(&Value::UNDEFINED, None).is_err());
    }
}

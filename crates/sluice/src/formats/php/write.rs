//! Writing PHP's `serialize()` format: for `sluice send`, which hands jobs
//! to Laravel, and for the parser's tests.

use serde_json::Value as Json;

use super::{Key, Object, PhpValue, Property, Visibility};

/// What PHP's `serialize()` writes for `value` (a [`PhpValue::Recursion`],
/// which stands for a reference PHP would write as `r:`, is written `N;`).
pub fn serialize(value: &PhpValue) -> Vec<u8> {
    let mut out = Vec::new();
    serialize_into(value, &mut out);
    out
}

/// [`serialize`], appending to `out`.
pub fn serialize_into(value: &PhpValue, out: &mut Vec<u8>) {
    fn string(bytes: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(format!("s:{}:\"", bytes.len()).as_bytes());
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\";");
    }
    match value {
        PhpValue::Null | PhpValue::Recursion => out.extend_from_slice(b"N;"),
        PhpValue::Bool(b) => out.extend_from_slice(format!("b:{};", u8::from(*b)).as_bytes()),
        PhpValue::Int(n) => out.extend_from_slice(format!("i:{n};").as_bytes()),
        PhpValue::Float(f) => out.extend_from_slice(format!("d:{};", php_float(*f)).as_bytes()),
        PhpValue::String(bytes) => string(bytes, out),
        PhpValue::Array(entries) => {
            out.extend_from_slice(format!("a:{}:{{", entries.len()).as_bytes());
            for (key, value) in entries {
                match key {
                    Key::Int(n) => out.extend_from_slice(format!("i:{n};").as_bytes()),
                    Key::String(bytes) => string(bytes, out),
                }
                serialize_into(value, out);
            }
            out.push(b'}');
        }
        PhpValue::Object(object) => {
            let class = &object.class;
            let count = object.properties.len();
            out.extend_from_slice(format!("O:{}:\"{class}\":{count}:{{", class.len()).as_bytes());
            for p in &object.properties {
                let mangled = match &p.visibility {
                    Visibility::Public => p.name.clone(),
                    Visibility::Protected => format!("\0*\0{}", p.name),
                    Visibility::Private { class } => format!("\0{class}\0{}", p.name),
                };
                string(mangled.as_bytes(), out);
                serialize_into(&p.value, out);
            }
            out.push(b'}');
        }
        PhpValue::Custom { class, raw } => {
            out.extend_from_slice(
                format!("C:{}:\"{class}\":{}:{{", class.len(), raw.len()).as_bytes(),
            );
            out.extend_from_slice(raw);
            out.push(b'}');
        }
        PhpValue::Enum { class, case } => {
            let text = format!("{class}:{case}");
            out.extend_from_slice(format!("E:{}:\"{text}\";", text.len()).as_bytes());
        }
    }
}

/// A float as PHP writes it with `serialize_precision = -1`: the shortest
/// digits that read back, in fixed notation for decimal exponents -4 to
/// 16, else as `1.5E-7` / `1.0E+25`.
fn php_float(f: f64) -> String {
    if f.is_nan() {
        return "NAN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "INF" } else { "-INF" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: `-1.2345e17`.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').expect("{:e} writes an exponent");
    let exp: i32 = exp.parse().expect("{:e} writes an integer exponent");
    if (-4..17).contains(&exp) {
        // Fixed notation, no trailing `.0`: what `{}` writes for these.
        return format!("{f}");
    }
    let mantissa = if mantissa.contains('.') {
        mantissa.to_owned()
    } else {
        format!("{mantissa}.0")
    };
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}E{sign}{}", exp.unsigned_abs())
}

/// A class name PHP accepts: `App\Jobs\ProcessReport`.
fn valid_class(name: &str) -> bool {
    !name.is_empty()
        && name.split('\\').all(|part| {
            !part.is_empty()
                && !part.starts_with(|c: char| c.is_ascii_digit())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii())
        })
}

impl PhpValue {
    /// The object a JSON description stands for, as `to_json` shows one:
    /// `{"__class": "App\\Jobs\\ProcessReport", "reportId": 42}` is an
    /// object of that class with a public property `reportId`. Inside it,
    /// objects with a `__class` are objects too; other objects and lists
    /// are PHP arrays, integers ints, other numbers floats. Properties a
    /// JSON object does not give keep their class defaults when PHP reads
    /// it (`unserialize()` sets only those it finds).
    pub fn from_json(json: &Json) -> Result<PhpValue, String> {
        match json {
            Json::Object(map) if map.contains_key("__class") => Ok(value(json, 0)?),
            _ => Err("a command is a JSON object with a `__class`, like \
                 {\"__class\": \"App\\\\Jobs\\\\ProcessReport\", \"reportId\": 42}"
                .into()),
        }
    }
}

fn value(json: &Json, depth: usize) -> Result<PhpValue, String> {
    if depth >= super::MAX_DEPTH {
        return Err(format!("nested deeper than {} levels", super::MAX_DEPTH));
    }
    Ok(match json {
        Json::Null => PhpValue::Null,
        Json::Bool(b) => PhpValue::Bool(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => PhpValue::Int(i),
            None => PhpValue::Float(
                n.as_f64()
                    .ok_or_else(|| format!("the number {n} is not one PHP can hold"))?,
            ),
        },
        Json::String(s) => PhpValue::String(s.as_bytes().to_vec()),
        Json::Array(items) => PhpValue::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| Ok((Key::Int(i as i64), value(v, depth + 1)?)))
                .collect::<Result<_, String>>()?,
        ),
        Json::Object(map) => match map.get("__class") {
            Some(Json::String(class)) if valid_class(class) => PhpValue::Object(Object {
                class: class.clone(),
                properties: map
                    .iter()
                    .filter(|(k, _)| *k != "__class")
                    .map(|(k, v)| {
                        Ok(Property {
                            name: k.clone(),
                            visibility: Visibility::Public,
                            value: value(v, depth + 1)?,
                        })
                    })
                    .collect::<Result<_, String>>()?,
            }),
            Some(other) => {
                return Err(format!(
                    "`__class` {other} is not a PHP class name like \"App\\\\Jobs\\\\ProcessReport\""
                ));
            }
            None => PhpValue::Array(
                map.iter()
                    .map(|(k, v)| {
                        // PHP turns numeric string keys into int keys.
                        let key = match k.parse::<i64>() {
                            Ok(i) if i.to_string() == *k => Key::Int(i),
                            _ => Key::String(k.as_bytes().to_vec()),
                        };
                        Ok((key, value(v, depth + 1)?))
                    })
                    .collect::<Result<_, String>>()?,
            ),
        },
    })
}

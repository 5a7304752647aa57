//! PHP's `serialize()` format, decoded into a [`PhpValue`] tree.
//!
//! Laravel queues a job as a JSON payload whose `data.command` is the job
//! object passed through PHP's `serialize()`:
//!
//! ```text
//! O:22:"App\Jobs\ProcessReport":2:{s:8:"reportId";i:42;s:9:"\0*\0format";s:3:"pdf";}
//! ```
//!
//! [`unserialize`] reads that text so that templates and `extract` can use
//! the job's properties (`job.command.reportId`) instead of a regex over the
//! raw body. It runs no PHP and knows no classes: an object is its class
//! name and its properties, nothing is instantiated, so no `__wakeup` or
//! `__destruct` "gadget" can run, whatever the input says.
//!
//! ```
//! use sluice::formats::php::{self, PhpValue, Visibility};
//!
//! let command = br#"O:22:"App\Jobs\ProcessReport":1:{s:8:"reportId";i:42;}"#;
//! let value = php::unserialize(command)?;
//! let PhpValue::Object(job) = &value else { panic!("a job is an object") };
//! assert_eq!(job.class, r"App\Jobs\ProcessReport");
//! assert_eq!(job.properties[0].visibility, Visibility::Public);
//! assert_eq!(job.get("reportId"), Some(&PhpValue::Int(42)));
//! // What templates and JSON pointers see:
//! assert_eq!(value.to_json()["reportId"], 42);
//! # Ok::<(), php::UnserializeError>(())
//! ```
//!
//! # The format
//!
//! | text                              | value                                         |
//! |-----------------------------------|-----------------------------------------------|
//! | `N;`                              | [`PhpValue::Null`]                            |
//! | `b:0;` `b:1;`                     | [`PhpValue::Bool`]                            |
//! | `i:-12;`                          | [`PhpValue::Int`] (64 bits; more is an error) |
//! | `d:0.5;` `d:1.0E+25;` `d:INF;` `d:-INF;` `d:NAN;` | [`PhpValue::Float`]           |
//! | `s:LEN:"bytes";`                  | [`PhpValue::String`]: `LEN` *bytes*, any bytes (quotes, `;`, NUL, not UTF-8) |
//! | `a:N:{key;value;…}`               | [`PhpValue::Array`]: `N` pairs, keys `i:` or `s:` |
//! | `O:LEN:"Class":N:{name;value;…}`  | [`PhpValue::Object`], names unmangled (below) |
//! | `C:LEN:"Class":LEN:{raw}`         | [`PhpValue::Custom`] (`Serializable`): the raw payload, kept |
//! | `E:LEN:"Enum:Case";`              | [`PhpValue::Enum`]                            |
//! | `r:N;` `R:N;`                     | the value numbered `N` (below)                |
//!
//! Property names carry their visibility: `name` is public, `\0*\0name`
//! protected and `\0Class\0name` private to `Class`; [`Property`] has the
//! plain name and the [`Visibility`] apart.
//!
//! # References
//!
//! PHP writes a value it has already written (an object held twice: `r:N;`,
//! a PHP reference `&$x`: `R:N;`) as the number of its first occurrence.
//! Numbering (as `var_push` in php-src's `var_unserializer.re` does it):
//! every value counts, in the order its text starts, from 1 for the whole
//! input, *except* array keys, property names and `R:` itself; an `r:` does
//! take a number. Arrays and objects are numbered before their contents.
//! So in `a:2:{s:1:"k";O:8:"stdClass":0:{}i:1;r:2;}` the array is 1, the
//! object 2, the `r:` 3 and the key `"k"` nothing.
//!
//! A reference is expanded into a copy of what it names, so the tree has no
//! sharing. A reference back into a value that contains it (an object that
//! holds itself, an array holding a reference to itself) would be infinite;
//! it becomes [`PhpValue::Recursion`] (PHP's `var_dump` shows `*RECURSION*`).
//!
//! # As JSON
//!
//! [`PhpValue::to_json`] gives what templates and JSON pointers see:
//!
//! | value                 | JSON                                                        |
//! |-----------------------|-------------------------------------------------------------|
//! | null, bool, int       | the same                                                    |
//! | float                 | a number; `INF`, `-INF` and `NAN` become those strings      |
//! | string                | a string; bytes that are not UTF-8 become U+FFFD            |
//! | array with keys `0..n` in order | a list (`a:0:{}` is `[]`, as `json_encode` gives) |
//! | any other array       | an object; integer keys as their digits; a repeated key: the last wins |
//! | object                | `{"__class": "App\\Jobs\\…", "prop": value, …}` by plain property name; a property named `__class`, or two with one name (private ones of a parent class), the last wins |
//! | `C:` custom object    | `{"__class": …, "__serialized": "raw payload"}`             |
//! | enum case             | `{"__class": "App\\Enums\\Status", "name": "Active"}`, as `$case->name` in PHP |
//! | recursion             | `null` (as `json_encode` with `JSON_PARTIAL_OUTPUT_ON_ERROR`) |
//!
//! Laravel's `SerializesModels` writes an Eloquent model as an
//! `Illuminate\Contracts\Database\ModelIdentifier` object (properties
//! `class`, `id`, `relations`, `connection`, `collectionClass`), so a job's
//! `protected $user` reads in a template as `job.command.user.class`
//! (`App\Models\User`) and `job.command.user.id` (its key, or the list of
//! keys for a collection). [`PhpValue::model_identifier`] reads the same in
//! Rust.
//!
//! # Limits
//!
//! Input is untrusted: anything malformed is an [`UnserializeError`] that
//! says what was expected at which byte offset, never a panic, and nothing
//! is sized from a declared length or count before the input has shown it
//! can hold that much.
//!
//! - Arrays and objects nest at most [`MAX_DEPTH`] deep, in the input and
//!   in the tree once references are expanded (PHP's own default is 4096;
//!   a job's command nests a handful).
//! - References may copy at most [`MAX_COPIED_VALUES`] values and
//!   [`MAX_COPIED_BYTES`] bytes beyond what the input spells out, which
//!   stops a "billion laughs" input of references to references.
//! - A reference to a value that does not come before it is an error, and
//!   so is an `r:` to something that is not an object (PHP refuses both).
//! - A `C:` payload is opaque: its class's `unserialize()` may have read
//!   values of its own that PHP numbered, so a reference to a number after
//!   a `C:` value cannot be resolved and is an error (PHP 8.1 deprecated
//!   `Serializable`; Laravel's own jobs do not use it).
//! - The deprecated `S:` escaped-string form, which `serialize()` never
//!   writes, is not read.
//! - Class and property names that are not UTF-8 are read lossily (PHP's
//!   class names are ASCII in practice); string values keep their bytes.
//! - Bytes after the value are ignored, as `unserialize()` does (PHP 8.3
//!   warns about them).

mod build;
mod parse;
#[cfg(test)]
mod tests;
mod write;

pub use write::{serialize, serialize_into};

use std::fmt;

use serde_json::{Map, Value as Json};

/// How deep arrays and objects may nest, counting the outermost as 1.
pub const MAX_DEPTH: usize = 128;

/// How many values expanding references may add to the tree.
pub const MAX_COPIED_VALUES: usize = 65_536;

/// How many bytes (strings, names) expanding references may copy.
pub const MAX_COPIED_BYTES: usize = 1 << 20;

/// The class Laravel's `SerializesModels` writes in place of a model.
pub const MODEL_IDENTIFIER_CLASS: &str = r"Illuminate\Contracts\Database\ModelIdentifier";

/// Decodes the output of PHP's `serialize()`.
///
/// References are expanded (see the [module docs](crate::formats::php)); the tree holds
/// no shared parts.
pub fn unserialize(input: &[u8]) -> Result<PhpValue, UnserializeError> {
    let (nodes, root) = parse::parse(input)?;
    build::build(input, &nodes, root)
}

/// A PHP value, as `serialize()` wrote it.
#[derive(Clone, Debug, PartialEq)]
pub enum PhpValue {
    /// `N;`
    Null,
    /// `b:0;`, `b:1;`
    Bool(bool),
    /// `i:…;`, a 64-bit PHP integer.
    Int(i64),
    /// `d:…;`, including infinities and NaN.
    Float(f64),
    /// `s:…;`: PHP strings are bytes, not necessarily UTF-8.
    String(Vec<u8>),
    /// `a:…`: an ordered map, in the order written (keys may repeat in
    /// hand-made input; all pairs are kept).
    Array(Vec<(Key, PhpValue)>),
    /// `O:…`
    Object(Object),
    /// `C:…`: an object of a class implementing `Serializable`, whose
    /// `serialize()` wrote `raw` in a format of its own.
    Custom {
        /// The class name.
        class: String,
        /// The payload between the braces, as written.
        raw: Vec<u8>,
    },
    /// `E:…`: a case of an enum (PHP 8.1).
    Enum {
        /// The enum's class name.
        class: String,
        /// The case's name.
        case: String,
    },
    /// A reference back into a value that contains it (a cycle), where the
    /// tree stops.
    Recursion,
}

/// An array key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Key {
    /// `i:…;`
    Int(i64),
    /// `s:…;`
    String(Vec<u8>),
}

/// A PHP object: its class and properties, in the order written.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// The class name, as written (`App\Jobs\SendEmail`).
    pub class: String,
    /// The properties.
    pub properties: Vec<Property>,
}

/// One property of an [`Object`].
#[derive(Clone, Debug, PartialEq)]
pub struct Property {
    /// The plain name, without the mangling that marks its visibility.
    pub name: String,
    /// Who may see it.
    pub visibility: Visibility,
    /// Its value.
    pub value: PhpValue,
}

/// A property's visibility, as its mangled name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// `name`
    Public,
    /// `\0*\0name`
    Protected,
    /// `\0Class\0name`: private to `class` (which may be a parent class of
    /// the object's).
    Private {
        /// The declaring class.
        class: String,
    },
}

/// What Laravel's `SerializesModels` writes for an Eloquent model or a
/// collection of them: enough to load it again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelIdentifier<'a> {
    /// The model's class (`App\Models\User`).
    pub class: &'a str,
    /// The model's key, or a list of keys for a collection.
    pub id: &'a PhpValue,
    /// The relations to load with it.
    pub relations: Option<&'a PhpValue>,
    /// The database connection's name.
    pub connection: Option<&'a str>,
    /// For a collection, its class.
    pub collection_class: Option<&'a str>,
}

impl PhpValue {
    /// The string's text, when it is one and is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PhpValue::String(bytes) => std::str::from_utf8(bytes).ok(),
            _ => None,
        }
    }

    /// The object, when this is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            PhpValue::Object(object) => Some(object),
            _ => None,
        }
    }

    /// The model this value stands for, when it is a Laravel
    /// `ModelIdentifier`.
    pub fn model_identifier(&self) -> Option<ModelIdentifier<'_>> {
        self.as_object()?.model_identifier()
    }

    /// The value as templates and JSON pointers see it (the mapping is in
    /// the [module docs](crate::formats::php)).
    pub fn to_json(&self) -> Json {
        match self {
            PhpValue::Null | PhpValue::Recursion => Json::Null,
            PhpValue::Bool(b) => Json::Bool(*b),
            PhpValue::Int(n) => Json::from(*n),
            PhpValue::Float(f) => float_json(*f),
            PhpValue::String(bytes) => Json::String(lossy(bytes)),
            PhpValue::Array(entries) if is_list(entries) => {
                Json::Array(entries.iter().map(|(_, v)| v.to_json()).collect())
            }
            PhpValue::Array(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_json()))
                    .collect(),
            ),
            PhpValue::Object(object) => {
                let mut map = Map::new();
                map.insert("__class".into(), Json::String(object.class.clone()));
                for p in &object.properties {
                    map.insert(p.name.clone(), p.value.to_json());
                }
                Json::Object(map)
            }
            PhpValue::Custom { class, raw } => {
                let mut map = Map::new();
                map.insert("__class".into(), Json::String(class.clone()));
                map.insert("__serialized".into(), Json::String(lossy(raw)));
                Json::Object(map)
            }
            PhpValue::Enum { class, case } => {
                let mut map = Map::new();
                map.insert("__class".into(), Json::String(class.clone()));
                map.insert("name".into(), Json::String(case.clone()));
                Json::Object(map)
            }
        }
    }
}

impl Object {
    /// A property's value by its plain name (the last, if several share it).
    pub fn get(&self, name: &str) -> Option<&PhpValue> {
        self.properties
            .iter()
            .rev()
            .find(|p| p.name == name)
            .map(|p| &p.value)
    }

    /// The model this object stands for, when it is a Laravel
    /// `ModelIdentifier` with a string `class` and an `id`.
    pub fn model_identifier(&self) -> Option<ModelIdentifier<'_>> {
        // PHP class names are case-insensitive.
        if !self.class.eq_ignore_ascii_case(MODEL_IDENTIFIER_CLASS) {
            return None;
        }
        Some(ModelIdentifier {
            class: self.get("class")?.as_str()?,
            id: self.get("id")?,
            relations: self.get("relations"),
            connection: self.get("connection").and_then(PhpValue::as_str),
            collection_class: self.get("collectionClass").and_then(PhpValue::as_str),
        })
    }
}

impl fmt::Display for Key {
    /// The key as a JSON object key: digits, or the (lossy) text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(n) => write!(f, "{n}"),
            Key::String(bytes) => f.write_str(&String::from_utf8_lossy(bytes)),
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn float_json(f: f64) -> Json {
    match serde_json::Number::from_f64(f) {
        Some(n) => Json::Number(n),
        // JSON has no infinities or NaN; PHP's own spelling keeps them visible.
        None if f.is_nan() => Json::String("NAN".into()),
        None if f > 0.0 => Json::String("INF".into()),
        None => Json::String("-INF".into()),
    }
}

/// Keys `0, 1, …, n-1` in order: what `json_encode` writes as a list.
fn is_list(entries: &[(Key, PhpValue)]) -> bool {
    entries
        .iter()
        .enumerate()
        .all(|(i, (k, _))| matches!(k, Key::Int(n) if usize::try_from(*n) == Ok(i)))
}

/// Why bytes are not PHP `serialize()` output. Each says where (a byte
/// offset into the input) and what was wrong there; the input is either
/// cut short, was changed after PHP wrote it, or is not serialized PHP at
/// all (an encrypted Laravel command is base64 JSON and fails at byte 0).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnserializeError {
    /// The input ends inside a value.
    #[error("PHP serialized data is cut short at byte {offset}: expected {expected}")]
    Truncated {
        /// The input's length.
        offset: usize,
        /// What should have come next.
        expected: &'static str,
    },
    /// A byte that the format does not allow there.
    #[error(
        "PHP serialized data has {} at byte {offset} where {expected} was expected",
        shown(.found)
    )]
    Unexpected {
        /// Where.
        offset: usize,
        /// The byte found.
        found: u8,
        /// What should have been there.
        expected: &'static str,
    },
    /// A string, class name or custom payload declares more bytes than
    /// the input has left.
    #[error(
        "PHP serialized data declares {declared} bytes at byte {offset}, but only {remaining} \
         follow (a wrong length, or the data is cut short)"
    )]
    LengthPastEnd {
        /// Where the length is written.
        offset: usize,
        /// The length written.
        declared: usize,
        /// The bytes left after the opening quote or brace.
        remaining: usize,
    },
    /// An array or object declares more elements than the input could hold.
    #[error(
        "PHP serialized data declares {declared} elements at byte {offset}, more than the \
         {remaining} bytes after it can hold"
    )]
    CountTooLarge {
        /// Where the array or object starts.
        offset: usize,
        /// The count written.
        declared: usize,
        /// The bytes left after the opening brace.
        remaining: usize,
    },
    /// A number that does not fit in 64 bits.
    #[error("PHP serialized data has a number at byte {offset} that does not fit in 64 bits")]
    NumberOutOfRange {
        /// Where the number starts.
        offset: usize,
    },
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    #[error(
        "PHP serialized data nests arrays and objects more than {max} deep at byte {offset}",
        max = MAX_DEPTH
    )]
    TooDeep {
        /// The array or object one level too deep, or the reference that
        /// made the tree that deep.
        offset: usize,
    },
    /// An array key or property name that is neither `i:` nor `s:`.
    #[error(
        "PHP serialized data has a key starting with {} at byte {offset}; keys are integers \
         (`i:`) or strings (`s:`)",
        shown(.found)
    )]
    BadKey {
        /// Where the key starts.
        offset: usize,
        /// Its first byte.
        found: u8,
    },
    /// A property name that starts with NUL but is not `\0*\0name` or
    /// `\0Class\0name`.
    #[error(
        "PHP serialized data has a malformed property name at byte {offset} (one starting with \
         NUL must be `\\0*\\0name` or `\\0Class\\0name`)"
    )]
    BadPropertyName {
        /// Where the name starts.
        offset: usize,
    },
    /// A class name PHP would not accept (empty, starting with `\`, or
    /// with characters outside `A-Z a-z 0-9 _ \` and bytes 0x80-0xff).
    #[error("PHP serialized data has an invalid class name at byte {offset}")]
    BadClassName {
        /// Where the name's length is written.
        offset: usize,
    },
    /// An enum that is not `Class:Case`.
    #[error("PHP serialized data has an enum at byte {offset} that is not `Class:Case`")]
    BadEnum {
        /// Where the enum starts.
        offset: usize,
    },
    /// `r:N;` or `R:N;` where no value numbered `N` comes before.
    #[error(
        "PHP serialized data refers at byte {offset} to value {number}, but only {available} \
         values come before it"
    )]
    NoSuchValue {
        /// Where the reference starts.
        offset: usize,
        /// The number it names.
        number: usize,
        /// How many values it could name.
        available: usize,
    },
    /// `r:N;` naming something other than an object.
    #[error(
        "PHP serialized data has an object reference at byte {offset} to value {number}, which \
         is not an object"
    )]
    NotAnObject {
        /// Where the reference starts.
        offset: usize,
        /// The number it names.
        number: usize,
    },
    /// A reference to a value numbered after a `C:` object, whose payload
    /// may hold numbered values that cannot be counted.
    #[error(
        "PHP serialized data refers at byte {offset} to value {number}, which comes after the \
         custom-serialized (`C:`) object numbered {custom}: its payload may hold numbered values \
         of its own, so the reference cannot be resolved"
    )]
    AfterCustom {
        /// Where the reference starts.
        offset: usize,
        /// The number it names.
        number: usize,
        /// The number of the first `C:` object.
        custom: usize,
    },
    /// Expanding references would copy more than [`MAX_COPIED_VALUES`]
    /// values or [`MAX_COPIED_BYTES`] bytes.
    #[error(
        "PHP serialized data has references that expand to more than {values} copied values or \
         {bytes} copied bytes (at byte {offset}); a reference bomb?",
        values = MAX_COPIED_VALUES,
        bytes = MAX_COPIED_BYTES
    )]
    TooManyCopies {
        /// The reference being expanded when the limit was reached.
        offset: usize,
    },
}

impl UnserializeError {
    /// The byte offset into the input the error is about.
    pub fn offset(&self) -> usize {
        match *self {
            UnserializeError::Truncated { offset, .. }
            | UnserializeError::Unexpected { offset, .. }
            | UnserializeError::LengthPastEnd { offset, .. }
            | UnserializeError::CountTooLarge { offset, .. }
            | UnserializeError::NumberOutOfRange { offset }
            | UnserializeError::TooDeep { offset }
            | UnserializeError::BadKey { offset, .. }
            | UnserializeError::BadPropertyName { offset }
            | UnserializeError::BadClassName { offset }
            | UnserializeError::BadEnum { offset }
            | UnserializeError::NoSuchValue { offset, .. }
            | UnserializeError::NotAnObject { offset, .. }
            | UnserializeError::AfterCustom { offset, .. }
            | UnserializeError::TooManyCopies { offset } => offset,
        }
    }
}

/// A byte for an error message: itself when printable, else its hex.
fn shown(byte: &u8) -> String {
    match *byte {
        b' '..=b'~' => format!("`{}`", char::from(*byte)),
        other => format!("byte 0x{other:02x}"),
    }
}

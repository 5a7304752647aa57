use serde_json::json;

use super::*;

/// A fixture as PHP prints it, `\0` standing for the NUL byte around
/// mangled property names (no class name has a `\0` in it: a namespace
/// segment cannot start with a digit).
fn php(text: &str) -> Vec<u8> {
    text.replace("\\0", "\0").into_bytes()
}

fn parse(text: &str) -> PhpValue {
    unserialize(&php(text)).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn json_of(text: &str) -> serde_json::Value {
    parse(text).to_json()
}

fn error(input: &[u8]) -> UnserializeError {
    let e = unserialize(input).expect_err(&String::from_utf8_lossy(input));
    let message = e.to_string();
    assert!(
        message.contains(&format!("at byte {}", e.offset())),
        "{message}"
    );
    e
}

fn object(value: &PhpValue) -> &Object {
    value.as_object().expect("an object")
}

/// A Laravel 8 job (`SerializesModels::__serialize`): own properties of
/// every visibility, then the `Queueable` ones.
const SEND_EMAIL: &str = r#"O:18:"App\Jobs\SendEmail":13:{s:6:"userId";i:42;s:10:"\0*\0payload";a:2:{s:2:"to";s:13:"a@example.com";s:2:"cc";a:2:{i:0;s:13:"b@example.com";i:1;s:13:"c@example.com";}}s:27:"\0App\Jobs\SendEmail\0attempt";i:1;s:3:"job";N;s:10:"connection";N;s:5:"queue";s:6:"emails";s:15:"chainConnection";N;s:10:"chainQueue";N;s:19:"chainCatchCallbacks";N;s:5:"delay";N;s:11:"afterCommit";N;s:10:"middleware";a:0:{}s:7:"chained";a:0:{}}"#;

/// A job holding a model and a collection of models, which
/// `SerializesModels` writes as `ModelIdentifier`s.
const PROCESS_PODCAST: &str = r#"O:23:"App\Jobs\ProcessPodcast":12:{s:10:"\0*\0podcast";O:45:"Illuminate\Contracts\Database\ModelIdentifier":5:{s:5:"class";s:18:"App\Models\Podcast";s:2:"id";i:7;s:9:"relations";a:0:{}s:10:"connection";s:5:"mysql";s:15:"collectionClass";N;}s:12:"\0*\0listeners";O:45:"Illuminate\Contracts\Database\ModelIdentifier":5:{s:5:"class";s:15:"App\Models\User";s:2:"id";a:2:{i:0;i:3;i:1;i:5;}s:9:"relations";a:0:{}s:10:"connection";s:5:"mysql";s:15:"collectionClass";s:39:"Illuminate\Database\Eloquent\Collection";}s:3:"job";N;s:10:"connection";N;s:15:"chainConnection";N;s:10:"chainQueue";N;s:19:"chainCatchCallbacks";N;s:5:"delay";N;s:11:"afterCommit";N;s:10:"middleware";a:0:{}s:7:"chained";a:0:{}s:5:"queue";N;}"#;

#[test]
fn scalars() {
    for (text, value) in [
        ("N;", PhpValue::Null),
        ("b:0;", PhpValue::Bool(false)),
        ("b:1;", PhpValue::Bool(true)),
        ("i:0;", PhpValue::Int(0)),
        ("i:-12;", PhpValue::Int(-12)),
        ("i:+7;", PhpValue::Int(7)),
        ("i:-0;", PhpValue::Int(0)),
        ("i:9223372036854775807;", PhpValue::Int(i64::MAX)),
        ("i:-9223372036854775808;", PhpValue::Int(i64::MIN)),
        ("i:007;", PhpValue::Int(7)),
        ("d:0.5;", PhpValue::Float(0.5)),
        ("d:-1.25;", PhpValue::Float(-1.25)),
        ("d:3;", PhpValue::Float(3.0)),
        ("d:1.0E+25;", PhpValue::Float(1.0e25)),
        ("d:1.0E-10;", PhpValue::Float(1.0e-10)),
        ("d:2e3;", PhpValue::Float(2000.0)),
        ("d:.5;", PhpValue::Float(0.5)),
        ("d:5.;", PhpValue::Float(5.0)),
        ("d:+1.5;", PhpValue::Float(1.5)),
        ("d:0.1;", PhpValue::Float(0.1)),
        ("d:INF;", PhpValue::Float(f64::INFINITY)),
        ("d:-INF;", PhpValue::Float(f64::NEG_INFINITY)),
        ("s:0:\"\";", PhpValue::String(Vec::new())),
        ("s:5:\"hello\";", PhpValue::String(b"hello".to_vec())),
        // The length counts bytes: é is two.
        ("s:6:\"h\u{e9}llo\";", PhpValue::String("h\u{e9}llo".into())),
        (
            "E:23:\"App\\Enums\\Status:Active\";",
            PhpValue::Enum {
                class: r"App\Enums\Status".into(),
                case: "Active".into(),
            },
        ),
    ] {
        assert_eq!(parse(text), value, "{text}");
    }
    let PhpValue::Float(nan) = parse("d:NAN;") else {
        panic!("a float")
    };
    assert!(nan.is_nan());
    let PhpValue::Float(zero) = parse("d:-0;") else {
        panic!("a float")
    };
    assert!(zero == 0.0 && zero.is_sign_negative());
}

#[test]
fn scalars_as_json() {
    assert_eq!(json_of("N;"), json!(null));
    assert_eq!(json_of("b:1;"), json!(true));
    assert_eq!(json_of("i:-12;"), json!(-12));
    assert_eq!(json_of("d:0.5;"), json!(0.5));
    assert_eq!(json_of("d:INF;"), json!("INF"));
    assert_eq!(json_of("d:-INF;"), json!("-INF"));
    assert_eq!(json_of("d:NAN;"), json!("NAN"));
    assert_eq!(
        json_of(r#"E:23:"App\Enums\Status:Active";"#),
        json!({"__class": r"App\Enums\Status", "name": "Active"})
    );
}

#[test]
fn strings_are_byte_counted_and_may_hold_anything() {
    // `a";` then 0xff then `"`: quotes and a semicolon inside, not UTF-8.
    let v = unserialize(b"s:5:\"a\";\xff\"\";").unwrap();
    assert_eq!(v, PhpValue::String(b"a\";\xff\"".to_vec()));
    assert_eq!(v.as_str(), None);
    assert_eq!(v.to_json(), json!("a\";\u{fffd}\""));
    // NUL bytes and braces too.
    let v = unserialize(b"s:4:\"\0}{\0\";").unwrap();
    assert_eq!(v, PhpValue::String(b"\0}{\0".to_vec()));
}

#[test]
fn a_laravel_job_with_properties_of_every_visibility() {
    let value = parse(SEND_EMAIL);
    let job = object(&value);
    assert_eq!(job.class, r"App\Jobs\SendEmail");
    assert_eq!(job.properties.len(), 13);
    let names: Vec<_> = job
        .properties
        .iter()
        .map(|p| (p.name.as_str(), p.visibility.clone()))
        .take(4)
        .collect();
    assert_eq!(
        names,
        [
            ("userId", Visibility::Public),
            ("payload", Visibility::Protected),
            (
                "attempt",
                Visibility::Private {
                    class: r"App\Jobs\SendEmail".into()
                }
            ),
            ("job", Visibility::Public),
        ]
    );
    assert_eq!(job.get("userId"), Some(&PhpValue::Int(42)));
    assert_eq!(job.get("queue").and_then(PhpValue::as_str), Some("emails"));
    assert_eq!(value.model_identifier(), None);

    let json = value.to_json();
    assert_eq!(json["__class"], r"App\Jobs\SendEmail");
    assert_eq!(json["userId"], 42);
    assert_eq!(json["attempt"], 1);
    assert_eq!(json["payload"]["to"], "a@example.com");
    assert_eq!(
        json["payload"]["cc"],
        json!(["b@example.com", "c@example.com"])
    );
    assert_eq!(json.pointer("/payload/cc/1"), Some(&json!("c@example.com")));
    assert_eq!(json["job"], json!(null));
    assert_eq!(json["middleware"], json!([]));
}

#[test]
fn model_identifiers_expose_class_and_id() {
    let value = parse(PROCESS_PODCAST);
    let job = object(&value);
    let podcast = job.get("podcast").unwrap().model_identifier().unwrap();
    assert_eq!(
        podcast,
        ModelIdentifier {
            class: r"App\Models\Podcast",
            id: &PhpValue::Int(7),
            relations: Some(&PhpValue::Array(Vec::new())),
            connection: Some("mysql"),
            collection_class: None,
        }
    );
    let listeners = job.get("listeners").unwrap().model_identifier().unwrap();
    assert_eq!(listeners.class, r"App\Models\User");
    assert_eq!(
        listeners.collection_class,
        Some(r"Illuminate\Database\Eloquent\Collection")
    );

    let json = value.to_json();
    assert_eq!(json["podcast"]["class"], r"App\Models\Podcast");
    assert_eq!(json["podcast"]["id"], 7);
    assert_eq!(json["podcast"]["__class"], MODEL_IDENTIFIER_CLASS);
    assert_eq!(json["listeners"]["id"], json!([3, 5]));
    assert_eq!(json.pointer("/listeners/id/1"), Some(&json!(5)));
}

#[test]
fn nested_arrays_become_lists_or_maps() {
    assert_eq!(json_of("a:0:{}"), json!([]));
    assert_eq!(
        json_of(r#"a:2:{i:0;s:1:"a";i:1;a:1:{i:0;a:1:{s:1:"x";b:1;}}}"#),
        json!(["a", [{"x": true}]])
    );
    // Out of order, a gap, or a string key: a map.
    assert_eq!(
        json_of(r#"a:2:{i:1;s:1:"a";i:0;s:1:"b";}"#),
        json!({"1": "a", "0": "b"})
    );
    assert_eq!(json_of("a:2:{i:0;N;i:2;N;}"), json!({"0": null, "2": null}));
    assert_eq!(
        json_of(r#"a:2:{i:0;i:1;s:1:"k";i:-3;}"#),
        json!({"0": 1, "k": -3})
    );
    // A repeated key (hand-made input): kept in the tree, the last in JSON.
    let v = parse("a:2:{i:5;i:1;i:5;i:2;}");
    assert_eq!(
        v,
        PhpValue::Array(vec![
            (Key::Int(5), PhpValue::Int(1)),
            (Key::Int(5), PhpValue::Int(2))
        ])
    );
    assert_eq!(v.to_json(), json!({"5": 2}));
}

#[test]
fn objects_carry_their_class_and_custom_objects_their_payload() {
    assert_eq!(
        json_of(r#"O:8:"stdClass":1:{i:3;s:1:"x";}"#),
        json!({"__class": "stdClass", "3": "x"})
    );
    // A property named `__class` wins over the class.
    assert_eq!(
        json_of(r#"O:8:"stdClass":1:{s:7:"__class";i:1;}"#),
        json!({"__class": 1})
    );
    let v = parse(r#"C:11:"ArrayObject":21:{x:i:0;a:0:{};m:a:0:{}}"#);
    assert_eq!(
        v,
        PhpValue::Custom {
            class: "ArrayObject".into(),
            raw: b"x:i:0;a:0:{};m:a:0:{}".to_vec(),
        }
    );
    assert_eq!(
        v.to_json(),
        json!({"__class": "ArrayObject", "__serialized": "x:i:0;a:0:{};m:a:0:{}"})
    );
    // Carbon as Laravel writes it.
    let v = json_of(
        r#"O:13:"Carbon\Carbon":3:{s:4:"date";s:26:"2024-05-01 12:00:00.000000";s:13:"timezone_type";i:3;s:8:"timezone";s:3:"UTC";}"#,
    );
    assert_eq!(v["date"], "2024-05-01 12:00:00.000000");
}

#[test]
fn references_follow_phps_numbering() {
    // 1 the array, 2 "abc" (the key "x" has no number), 3 the inner array,
    // 4 the 9.
    let v = json_of(r#"a:3:{s:1:"x";s:3:"abc";i:5;a:1:{i:0;i:9;}i:6;R:2;}"#);
    assert_eq!(v, json!({"x": "abc", "5": [9], "6": "abc"}));
    let v = json_of(r#"a:3:{s:1:"x";s:3:"abc";i:5;a:1:{i:0;i:9;}i:6;R:4;}"#);
    assert_eq!(v["6"], 9);
    // Property names have no number either: 1 the object, 2 "v".
    let v = json_of(r#"O:8:"stdClass":2:{s:1:"a";s:1:"v";s:1:"b";R:2;}"#);
    assert_eq!(v["b"], "v");
    // An `r:` takes a number (3 here), so `R:3` is the object it named.
    let v = json_of(r#"a:3:{i:0;O:8:"stdClass":0:{}i:1;r:2;i:2;R:3;}"#);
    let empty = json!({"__class": "stdClass"});
    assert_eq!(v, json!([empty, empty, empty]));
    // An `R:` does not: the 7 is 3.
    let v = json_of(r#"a:4:{i:0;O:8:"stdClass":0:{}i:1;R:2;i:2;i:7;i:3;R:3;}"#);
    assert_eq!(v[3], 7);
    // An object held twice, as PHP writes a shared Carbon.
    let v =
        json_of(r#"O:8:"stdClass":2:{s:5:"start";O:8:"stdClass":1:{s:1:"t";i:1;}s:3:"end";r:2;}"#);
    assert_eq!(v["end"], json!({"__class": "stdClass", "t": 1}));
    // A reference to a reference is to what that one names.
    let v = json_of(r#"a:3:{i:0;O:1:"A":0:{}i:1;r:2;i:2;r:3;}"#);
    assert_eq!(v[2], json!({"__class": "A"}));
    // The numbers run on through nested values.
    let v = json_of(r#"a:2:{i:0;a:2:{i:0;s:1:"p";i:1;s:1:"q";}i:1;R:4;}"#);
    assert_eq!(v[1], "q");
}

#[test]
fn cycles_stop_at_recursion() {
    // `$o->self = $o;`
    let v = parse(r#"O:8:"stdClass":1:{s:4:"self";r:1;}"#);
    assert_eq!(object(&v).get("self"), Some(&PhpValue::Recursion));
    assert_eq!(v.to_json(), json!({"__class": "stdClass", "self": null}));
    // An array holding a reference to itself.
    let v = parse("a:2:{i:0;i:1;i:1;R:1;}");
    assert_eq!(v.to_json(), json!([1, null]));
    // Through a copy: the inner array refers to the outer one, and the
    // outer one to the inner one again; each copy stops at the outer one.
    let v = json_of("a:2:{i:0;a:1:{i:0;R:1;}i:1;R:2;}");
    assert_eq!(v, json!([[null], [null]]));
}

#[test]
fn errors_say_what_and_where() {
    use UnserializeError as E;
    let cases: &[(&[u8], UnserializeError)] = &[
        (
            b"",
            E::Truncated {
                offset: 0,
                expected: "",
            },
        ),
        (
            b"i:42",
            E::Truncated {
                offset: 4,
                expected: "",
            },
        ),
        (
            b"x:1;",
            E::Unexpected {
                offset: 0,
                found: b'x',
                expected: "",
            },
        ),
        (
            b"b:2;",
            E::Unexpected {
                offset: 2,
                found: b'2',
                expected: "",
            },
        ),
        (
            b"i:;",
            E::Unexpected {
                offset: 2,
                found: b';',
                expected: "",
            },
        ),
        (
            b"i:1x;",
            E::Unexpected {
                offset: 3,
                found: b'x',
                expected: "",
            },
        ),
        (
            b"d:;",
            E::Unexpected {
                offset: 2,
                found: b';',
                expected: "",
            },
        ),
        (
            b"d:1e;",
            E::Unexpected {
                offset: 4,
                found: b';',
                expected: "",
            },
        ),
        (
            b"d:inf;",
            E::Unexpected {
                offset: 2,
                found: b'i',
                expected: "",
            },
        ),
        (
            b"d:+INF;",
            E::Unexpected {
                offset: 3,
                found: b'I',
                expected: "",
            },
        ),
        // Wrong lengths: too short, too long.
        (
            b"s:2:\"abc\";",
            E::Unexpected {
                offset: 7,
                found: b'c',
                expected: "",
            },
        ),
        (
            b"s:5:\"abc\";",
            E::Truncated {
                offset: 10,
                expected: "",
            },
        ),
        (
            b"s:4:\"abc\";N;",
            E::Unexpected {
                offset: 9,
                found: b';',
                expected: "",
            },
        ),
        // Counts: more than written, fewer than written.
        (
            b"a:2:{i:0;i:1;}",
            E::Unexpected {
                offset: 13,
                found: b'}',
                expected: "",
            },
        ),
        (
            b"a:1:{i:0;i:1;i:1;i:2;}",
            E::Unexpected {
                offset: 13,
                found: b'i',
                expected: "",
            },
        ),
        (
            b"a:1:{b:1;i:1;}",
            E::BadKey {
                offset: 5,
                found: b'b',
            },
        ),
        (
            b"a:1:{N;i:1;}",
            E::BadKey {
                offset: 5,
                found: b'N',
            },
        ),
        (b"i:9223372036854775808;", E::NumberOutOfRange { offset: 2 }),
        (
            b"i:-9223372036854775809;",
            E::NumberOutOfRange { offset: 2 },
        ),
        (
            b"s:99999999999999999999999:\"a\";",
            E::NumberOutOfRange { offset: 2 },
        ),
        (b"O:0:\"\":0:{}", E::BadClassName { offset: 2 }),
        (b"O:4:\"\\Foo\":0:{}", E::BadClassName { offset: 2 }),
        (b"O:3:\"a b\":0:{}", E::BadClassName { offset: 2 }),
        (
            b"O:1:\"A\":1:{s:1:\"\0\";N;}",
            E::BadPropertyName { offset: 11 },
        ),
        (
            b"O:1:\"A\":1:{s:3:\"\0\0x\";N;}",
            E::BadPropertyName { offset: 11 },
        ),
        (
            b"O:1:\"A\":1:{s:4:\"\0abc\";N;}",
            E::BadPropertyName { offset: 11 },
        ),
        (
            b"O:1:\"A\":1:{s:3:\"\0A\0\";N;}",
            E::BadPropertyName { offset: 11 },
        ),
        (b"E:6:\"Status\";", E::BadEnum { offset: 0 }),
        (b"E:7:\"Status:\";", E::BadEnum { offset: 0 }),
        (b"E:7:\":Active\";", E::BadEnum { offset: 0 }),
        (
            b"C:1:\"A\":5:{abc}",
            E::LengthPastEnd {
                offset: 8,
                declared: 5,
                remaining: 4,
            },
        ),
        (
            b"C:1:\"A\":2:{abc}",
            E::Unexpected {
                offset: 13,
                found: b'c',
                expected: "",
            },
        ),
    ];
    for (input, expected) in cases {
        let got = error(input);
        let same = match (&got, expected) {
            // What was expected is prose; the kind and place are the test.
            (E::Truncated { offset: a, .. }, E::Truncated { offset: b, .. }) => a == b,
            (
                E::Unexpected {
                    offset: a,
                    found: f,
                    ..
                },
                E::Unexpected {
                    offset: b,
                    found: g,
                    ..
                },
            ) => a == b && f == g,
            (got, expected) => got == expected,
        };
        assert!(
            same,
            "{}: got {got:?}, expected {expected:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn every_prefix_of_a_job_is_an_error() {
    let full = php(SEND_EMAIL);
    for end in 0..full.len() {
        let e = error(&full[..end]);
        assert!(e.offset() <= end, "{end}: {e}");
    }
    assert!(unserialize(&full).is_ok());
    // Bytes after the value are ignored, as PHP does.
    let mut more = full.clone();
    more.extend_from_slice(b"garbage");
    assert_eq!(unserialize(&more).unwrap(), unserialize(&full).unwrap());
}

#[test]
fn declared_sizes_are_checked_against_the_input() {
    let e = error(b"s:99999999999:\"abc\";");
    assert_eq!(
        e,
        UnserializeError::LengthPastEnd {
            offset: 2,
            declared: 99_999_999_999,
            remaining: 5
        }
    );
    assert!(e.to_string().contains("99999999999 bytes at byte 2"), "{e}");
    let e = error(b"a:99999999:{i:0;N;}");
    assert!(
        matches!(
            e,
            UnserializeError::CountTooLarge {
                offset: 0,
                declared: 99_999_999,
                ..
            }
        ),
        "{e:?}"
    );
    let e = error(b"O:8:\"stdClass\":4000000000:{}");
    assert!(matches!(e, UnserializeError::CountTooLarge { .. }), "{e:?}");
    let e = error(b"C:1:\"A\":18446744073709551615:{}");
    assert!(matches!(e, UnserializeError::LengthPastEnd { .. }), "{e:?}");
    let e = error(b"O:18446744073709551615:\"A\":0:{}");
    assert!(matches!(e, UnserializeError::LengthPastEnd { .. }), "{e:?}");
}

fn nested(levels: usize, inner: &str) -> String {
    format!(
        "{}{inner}{}",
        "a:1:{i:0;".repeat(levels),
        "}".repeat(levels)
    )
}

#[test]
fn nesting_is_capped() {
    let deepest = parse(&nested(MAX_DEPTH, "N;"));
    assert!(deepest.to_json().is_array());
    let e = error(nested(MAX_DEPTH + 1, "N;").as_bytes());
    assert_eq!(
        e,
        UnserializeError::TooDeep {
            offset: 9 * MAX_DEPTH
        }
    );
    // A bomb far deeper than any stack: an error, not an overflow.
    let e = error(nested(1_000_000, "N;").as_bytes());
    assert!(matches!(e, UnserializeError::TooDeep { .. }), "{e:?}");
    let e = error("O:1:\"A\":1:{s:1:\"a\";".repeat(200).as_bytes());
    assert!(matches!(e, UnserializeError::TooDeep { .. }), "{e:?}");
}

#[test]
fn references_may_not_nest_the_tree_too_deep() {
    // Element 0 is 100 arrays deep (numbers 2..=101, its null 102); element
    // 1 is 100 deep again with a reference to element 0 at the bottom.
    let a = nested(100, "N;");
    let b = nested(100, "R:2;");
    let text = format!("a:2:{{i:0;{a}i:1;{b}}}");
    let e = error(text.as_bytes());
    let reference_at = text.find("R:2;").unwrap();
    assert_eq!(
        e,
        UnserializeError::TooDeep {
            offset: reference_at
        }
    );
}

#[test]
fn references_must_name_an_earlier_value() {
    use UnserializeError as E;
    let e = error(b"a:1:{i:0;R:5;}");
    assert_eq!(
        e,
        E::NoSuchValue {
            offset: 9,
            number: 5,
            available: 1
        }
    );
    assert!(e.to_string().contains("refers at byte 9 to value 5"), "{e}");
    assert!(matches!(
        error(b"a:1:{i:0;R:0;}"),
        E::NoSuchValue { number: 0, .. }
    ));
    // Alone, there is nothing to name; an `r:` may not name itself.
    assert!(matches!(
        error(b"R:1;"),
        E::NoSuchValue { available: 0, .. }
    ));
    assert!(matches!(
        error(b"r:1;"),
        E::NoSuchValue { available: 0, .. }
    ));
    assert!(matches!(
        error(b"a:1:{i:0;r:2;}"),
        E::NoSuchValue { available: 1, .. }
    ));
    // `r:` is for objects only (PHP refuses the rest).
    assert_eq!(
        error(b"a:2:{i:0;i:5;i:1;r:2;}"),
        E::NotAnObject {
            offset: 17,
            number: 2
        }
    );
    assert!(matches!(error(b"a:1:{i:0;r:1;}"), E::NotAnObject { .. }));
    // `R:` may name anything, the array around it included.
    assert!(unserialize(b"a:1:{i:0;R:1;}").is_ok());
    // An object, a custom object or an enum may be named by `r:`.
    assert!(unserialize(br#"a:2:{i:0;E:3:"A:B";i:1;r:2;}"#).is_ok());
    assert!(unserialize(br#"a:2:{i:0;C:1:"A":0:{}i:1;r:2;}"#).is_ok());
}

#[test]
fn numbers_after_a_custom_object_are_not_guessed() {
    // The `C:` is 2; its payload may have held numbered values in PHP, so
    // 3 and on are unknowable.
    let custom = r#"C:11:"ArrayObject":21:{x:i:0;a:0:{};m:a:0:{}}"#;
    let ok = format!("a:3:{{i:0;s:1:\"x\";i:1;{custom}i:2;r:3;}}");
    assert_eq!(
        json_of(&ok)[2]["__class"],
        "ArrayObject",
        "numbers up to the `C:` hold"
    );
    let e = error(format!("a:3:{{i:0;{custom}i:1;i:5;i:2;R:3;}}").as_bytes());
    assert!(
        matches!(
            e,
            UnserializeError::AfterCustom {
                number: 3,
                custom: 2,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn a_reference_bomb_is_stopped() {
    // Element 0 holds two ints; element k holds two references to element
    // k - 1, so element 40 would expand to 2^41 values.
    let mut text = String::from("a:41:{i:0;a:2:{i:0;i:1;i:1;i:1;}");
    for k in 1..=40 {
        // Element 0 is number 2 (its ints 3 and 4); element k >= 1 is 4 + k.
        let previous = if k == 1 { 2 } else { 3 + k };
        text += &format!("i:{k};a:2:{{i:0;R:{previous};i:1;R:{previous};}}");
    }
    text += "}";
    let e = error(text.as_bytes());
    assert!(matches!(e, UnserializeError::TooManyCopies { .. }), "{e:?}");
    assert_eq!(text.as_bytes()[e.offset()], b'R', "{e}");

    // Bytes are budgeted too: a few references to one long string.
    let long = "x".repeat(MAX_COPIED_BYTES / 2);
    let mut text = format!("a:4:{{i:0;s:{}:\"{long}\";", long.len());
    for k in 1..4 {
        text += &format!("i:{k};R:2;");
    }
    text += "}";
    let e = error(text.as_bytes());
    assert!(matches!(e, UnserializeError::TooManyCopies { .. }), "{e:?}");
    // Within the budget, the copies are made.
    let text = format!("a:2:{{i:0;s:{}:\"{long}\";i:1;R:2;}}", long.len());
    assert_eq!(json_of(&text)[1].as_str().map(str::len), Some(long.len()));
}

// --- Property tests -------------------------------------------------------

/// Reads random bytes as choices; zeros once they run out.
struct Draw<'a>(&'a [u8]);

impl Draw<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |n, _| (n << 8) | u64::from(self.byte()))
    }

    fn bytes(&mut self) -> Vec<u8> {
        let n = self.below(12);
        (0..n).map(|_| self.byte()).collect()
    }

    /// A character of `first`, then more of `rest`.
    fn word(&mut self, first: &[u8], rest: &[u8], min: u8) -> String {
        // `min` and up to 7 more
        let n = min + self.below(8);
        (0..n)
            .map(|i| {
                let set = if i == 0 { first } else { rest };
                char::from(set[usize::from(self.byte()) % set.len()])
            })
            .collect()
    }

    fn class(&mut self) -> String {
        self.word(b"ABCXYZabz_", b"ABCabz019_\\", 1)
    }

    fn value(&mut self, depth: u8) -> PhpValue {
        // Mostly arrays and objects until 4 deep, then only scalars.
        let kinds = if depth >= 4 { 6 } else { 12 };
        match self.below(kinds) {
            0 => PhpValue::Null,
            1 => PhpValue::Bool(self.byte() & 1 == 1),
            2 => PhpValue::Int(self.u64() as i64),
            3 => PhpValue::Float(f64::from_bits(self.u64())),
            4 => PhpValue::String(self.bytes()),
            5 => PhpValue::Enum {
                class: self.class(),
                case: self.word(b"AZaz_", b"AZaz09_", 1),
            },
            6..=8 => PhpValue::Array(
                (0..self.below(5))
                    .map(|_| {
                        let key = if self.byte() & 1 == 0 {
                            Key::Int(self.u64() as i64)
                        } else {
                            Key::String(self.bytes())
                        };
                        (key, self.value(depth + 1))
                    })
                    .collect(),
            ),
            9 | 10 => PhpValue::Object(Object {
                class: self.class(),
                properties: (0..self.below(5))
                    .map(|_| Property {
                        // Not empty: `\0*\0` alone is no name, for PHP either.
                        name: self.word(b"abcXYZ_ *", b"abcXYZ09_ *\\", 1),
                        visibility: match self.below(3) {
                            0 => Visibility::Public,
                            1 => Visibility::Protected,
                            _ => Visibility::Private {
                                class: self.class(),
                            },
                        },
                        value: self.value(depth + 1),
                    })
                    .collect(),
            }),
            _ => PhpValue::Custom {
                class: self.class(),
                raw: self.bytes(),
            },
        }
    }
}

fn serialize(value: &PhpValue, out: &mut Vec<u8>) {
    super::serialize_into(value, out);
}

#[test]
fn the_test_serializer_writes_what_php_writes() {
    let mut out = Vec::new();
    serialize(&parse(SEND_EMAIL), &mut out);
    assert_eq!(out, php(SEND_EMAIL));
    out.clear();
    serialize(&parse(PROCESS_PODCAST), &mut out);
    assert_eq!(out, php(PROCESS_PODCAST));
}

/// Random bytes, and bytes that start like serialized PHP: never a panic,
/// and whatever decodes converts to JSON.
#[test]
fn random_input_never_panics() {
    bolero::check!()
        .with_iterations(3_000)
        .for_each(|input: &[u8]| {
            for prefix in [
                &b""[..],
                b"a:2:{i:0;",
                b"O:1:\"A\":1:{s:1:\"a\";",
                b"a:1:{i:0;R:",
            ] {
                let mut bytes = prefix.to_vec();
                bytes.extend_from_slice(input);
                match unserialize(&bytes) {
                    Ok(value) => {
                        let _ = value.to_json();
                    }
                    Err(e) => assert!(e.offset() <= bytes.len(), "{e}"),
                }
            }
        });
}

/// A generated value, serialized, decodes to itself; the same text cut
/// short or with one byte changed never panics.
#[test]
fn generated_values_round_trip() {
    bolero::check!()
        .with_iterations(3_000)
        .for_each(|input: &[u8]| {
            let mut draw = Draw(input);
            let value = draw.value(0);
            let mut text = Vec::new();
            serialize(&value, &mut text);
            let back = unserialize(&text)
                .unwrap_or_else(|e| panic!("{e} in {}", String::from_utf8_lossy(&text)));
            // Debug compares floats by their digits, so NaN equals NaN.
            assert_eq!(format!("{back:?}"), format!("{value:?}"));
            let _ = back.to_json();

            let cut = usize::from(draw.byte()) * text.len() / 256;
            assert!(unserialize(&text[..cut]).is_err());
            if !text.is_empty() {
                let at = draw.u64() as usize % text.len();
                text[at] = draw.byte();
                if let Ok(value) = unserialize(&text) {
                    let _ = value.to_json();
                }
            }
        });
}

/// The command the repository's SQS and corpus fixtures carry (their
/// class-name lengths were 22 for a 19-byte name until this decoder
/// refused them).
#[test]
fn the_fixtures_send_report_command_decodes() {
    let command = br#"O:19:"App\Jobs\SendReport":1:{s:4:"file";s:14:"report-42.json";}"#;
    let value = unserialize(command).unwrap();
    assert_eq!(value.to_json()["file"], "report-42.json");
    assert!(
        unserialize(br#"O:22:"App\Jobs\SendReport":1:{s:4:"file";s:14:"report-42.json";}"#)
            .is_err()
    );
}

#[test]
fn floats_serialize_as_php_writes_them() {
    // php -r 'echo serialize($f);' for each.
    for (f, php) in [
        (1.0, "d:1;"),
        (0.75, "d:0.75;"),
        (1e25, "d:1.0E+25;"),
        (1.5e-7, "d:1.5E-7;"),
        (123456789012345678.0, "d:1.2345678901234568E+17;"),
        (-0.0, "d:-0;"),
        (0.1 + 0.2, "d:0.30000000000000004;"),
        (1e15, "d:1000000000000000;"),
        (1e16, "d:10000000000000000;"),
        (0.0001, "d:0.0001;"),
        (0.00001, "d:1.0E-5;"),
        (-2.5e300, "d:-2.5E+300;"),
        (f64::INFINITY, "d:INF;"),
        (f64::NAN, "d:NAN;"),
    ] {
        assert_eq!(
            String::from_utf8(super::serialize(&PhpValue::Float(f))).unwrap(),
            php,
            "{f}"
        );
    }
}

#[test]
fn json_becomes_the_command_object_php_would_serialize() {
    let v: serde_json::Value = serde_json::json!({
        "__class": "App\\Jobs\\ProcessReport",
        "reportId": 42,
        "ratio": 0.75,
        "tags": ["a", "b"],
        "range": {"from": 1},
        "owner": {"__class": "App\\Models\\User", "name": "é"},
        "note": null,
        "urgent": true
    });
    let php = PhpValue::from_json(&v).unwrap();
    let bytes = super::serialize(&php);
    // serde_json's objects keep their keys sorted: so do the properties.
    let expected = concat!(
        r#"O:22:"App\Jobs\ProcessReport":7:{s:4:"note";N;"#,
        r#"s:5:"owner";O:15:"App\Models\User":1:{s:4:"name";s:2:"é";}"#,
        r#"s:5:"range";a:1:{s:4:"from";i:1;}s:5:"ratio";d:0.75;s:8:"reportId";i:42;"#,
        r#"s:4:"tags";a:2:{i:0;s:1:"a";i:1;s:1:"b";}s:6:"urgent";b:1;}"#,
    );
    assert_eq!(String::from_utf8(bytes.clone()).unwrap(), expected);
    assert_eq!(unserialize(&bytes).unwrap(), php, "reads back");
    for bad in [
        serde_json::json!({"reportId": 1}),
        serde_json::json!([1]),
        serde_json::json!({"__class": ""}),
        serde_json::json!({"__class": "A B"}),
        serde_json::json!({"__class": 3}),
    ] {
        assert!(PhpValue::from_json(&bad).is_err(), "{bad}");
    }
}

//! The decryptor against fixtures the real Laravel 8 Encrypter made.

use super::*;

// Fixtures made by Laravel 8's own Encrypter and Queue (PHP 8.2): a
// container with `new Encrypter($key, $cipher)`, and
// `Queue::createPayload` of `new App\Jobs\SendReport(42)`, a job
// that implements ShouldBeEncrypted (uses Queueable, `public $reportId`,
// `protected $format = 'pdf'`). The keys are made for these tests.
pub(crate) const KEY_256: &str = "base64:nJIa8iFdRPL9gJfHcyO0U4miID676Tvfc4FbdenR8Tc=";
pub(crate) const KEY_128: &str = "base64:Lfv2+erzxcFazoIlbC7pdw==";
/// The whole payload Laravel queued, AES-256-CBC with [`KEY_256`].
pub(crate) const PAYLOAD_256_CBC: &str = r#"{"uuid":"7227beeb-797c-4fed-94a6-28cc60299055","displayName":"App\\Jobs\\SendReport","job":"Illuminate\\Queue\\CallQueuedHandler@call","maxTries":null,"maxExceptions":null,"failOnTimeout":false,"backoff":null,"timeout":null,"retryUntil":null,"data":{"commandName":"App\\Jobs\\SendReport","command":"eyJpdiI6Ik4xdEh5RmdBMzJ6cndCd2RzTElURXc9PSIsInZhbHVlIjoiODYzYnp6VXpMV2hKRHRPMnIwcE5kR09SdUM4V2NMVGZOTDVaNU02OTZ1YXF6OEhGT0RQdnF6eXVsbnJNZTFxbGYzSGlkR0tSY05RMk5tUk5kWk8xajZTblJhaUVRTW1xTnUrZS8vaFVCMmRTdTViTmxFRElwNDF6TnhRK3RnRlZET20wcUgzUjZrREZyWmhQRmNRazhxNmdyVy90cThDRHpmeHBYSTFFRHRMKzdxQUlYVy9wbDhWQ2JRMmtxdUk3c3lrRGlVREczY2MzTm1YTXhFdUw2eVVUK1FWODBHRXNJWm95YVkzMGVPTkxPUldFbjhlSWJwdFl1T3M0S3RPYXhhQ1J2RU1WYkx6ZDJ6dXFZZUljUEc0OVpYc09LN0YvcHljQzhYTWR0VzBQTUFkcGcyckw4VFhiRmFqSnVvM1ExdE43QzZBSHpmcS9SZ0dMOTVtNTB0TmtTWUwyNy85NVcvbnlPMUFwVm5mVkRqOEpWMEdmemZ5SGZtejhreGZuIiwibWFjIjoiNGM4NDM5MWZkYmQzY2UyN2E0MmU5NTU1YjAwMjg0MjcxZGI4MDQ0ZWU1ZjMyMTg2OTNmYmVlZjY4YzUwZDU0ZiIsInRhZyI6IiJ9"}}"#;
pub(crate) const COMMAND_256_CBC: &str = "eyJpdiI6Ik4xdEh5RmdBMzJ6cndCd2RzTElURXc9PSIsInZhbHVlIjoiODYzYnp6VXpMV2hKRHRPMnIwcE5kR09SdUM4V2NMVGZOTDVaNU02OTZ1YXF6OEhGT0RQdnF6eXVsbnJNZTFxbGYzSGlkR0tSY05RMk5tUk5kWk8xajZTblJhaUVRTW1xTnUrZS8vaFVCMmRTdTViTmxFRElwNDF6TnhRK3RnRlZET20wcUgzUjZrREZyWmhQRmNRazhxNmdyVy90cThDRHpmeHBYSTFFRHRMKzdxQUlYVy9wbDhWQ2JRMmtxdUk3c3lrRGlVREczY2MzTm1YTXhFdUw2eVVUK1FWODBHRXNJWm95YVkzMGVPTkxPUldFbjhlSWJwdFl1T3M0S3RPYXhhQ1J2RU1WYkx6ZDJ6dXFZZUljUEc0OVpYc09LN0YvcHljQzhYTWR0VzBQTUFkcGcyckw4VFhiRmFqSnVvM1ExdE43QzZBSHpmcS9SZ0dMOTVtNTB0TmtTWUwyNy85NVcvbnlPMUFwVm5mVkRqOEpWMEdmemZ5SGZtejhreGZuIiwibWFjIjoiNGM4NDM5MWZkYmQzY2UyN2E0MmU5NTU1YjAwMjg0MjcxZGI4MDQ0ZWU1ZjMyMTg2OTNmYmVlZjY4YzUwZDU0ZiIsInRhZyI6IiJ9";
const COMMAND_128_CBC: &str = "eyJpdiI6IjdubDVHTGxoU0RBZ3Z0RTRrbXVjbVE9PSIsInZhbHVlIjoiaUFVbThDaWI0UndPZkl4SGRGUGdhbkVXSVRuTHJvMndCTVBreGJzNWdmOXA0OGpISHhoYVZMYzR6V1JkQVdac3RwRXkybzVOOTJUVWNzbGNVK1FBbmFXRWdrbDhxMmIxZ082MHpsS0NSVHNSY29Vbjd1Ui82NTJLTWM3K21NVHJSWXY0VmlqelVjRnh2VkcrVzFOVEtXSWtzZWhtdmd4ZGc5UlJkWmkyL3dQMW5QT1QzVC90eVZEbWtkenJIc2ZoeXdyeTZHZmtZYVQwRlR6WmxwWUYyS2pzSy9JbE5ST2lWc0VlVXhMaHZPL0FYZ1RuZ2phMmFBSGJXYXJubDhkeHk5L2dXeHRUemVaZ0hvSmFzcTlPUENPUmFMUUZlOFlGSzh5Vi9iQzNJMkwwVW5saVRkZkowdzcwbFZtcy82eERnZHFNL3huREp0UmwwT2pjTWg5d3BGR0hKUDRoVzNsNy9vblhMcnMwVDRGYXp3T3JGSVBNU1lnNDYzQk5SWklUIiwibWFjIjoiNDc5NjlmZDJlM2I2YjM3ZmUyMmUyYWU1MTYzYjMzODgyNTRmNTJmZWZjYzE3NTZmYjA2OTU4MjkzNzZjZDI1MiIsInRhZyI6IiJ9";
const COMMAND_256_GCM: &str = "eyJpdiI6Ill0TGd3b1RUOXlMSWJjbGQiLCJ2YWx1ZSI6IjUwUXF3YllaSGNwakxOM1Z0NzV4YXM5TU1rZ3ZYWmZkVkxmdnZEMENnekNLUW1pb291bCtLblRIZUdNdnpzc3I2SkFkSVdsLzRZVnpZdThCNFJ4MzNsR0oxWjJLQWhPdGU0YjFhMldlbk9STmFab3JMa0xLL1VQV3JnZk1veGwxbVArWUJPb3NXWjFueit3dmc2OXFlVjdSN2QyaEk0NGFpaW5RMCtlTmduMGZWdWJqaFVpS2dWNlRpOWFjeVo5R1Uvbkt3L0VTZzdXcC9qOERlV1VuVmtrVk5nREsrTXJTelc2QitlTm1BakI4eStSWnVqNnhSUUZrc2ZzM3hmTEV2WkowaWpEUlprb05FcGJuL05vWVJROElnUThpcVB0aU1mZHFvU2U1WE1TZmNUbFRLbi9jQ3VuVlAwZHdtYjhWSk55RGFkYlFQVUdDbmRYbE5zZUhQMjl3dEZ2bEQreEJ6cVppbGVCNy9YeG9udz09IiwibWFjIjoiIiwidGFnIjoiRzg3N0licW9XTlRRcXZ3WEcxVG5Cdz09In0=";
const COMMAND_128_GCM: &str = "eyJpdiI6InA0TSswT2hzWkdvSjRDNEUiLCJ2YWx1ZSI6InlJR3RNWGFWZ1IzNC9hZm9EajZOUUduVURLTVVPM3V3N3dmYi93LzFkUWpiOUFzOXFOMkp2dm13eEJ3ZFBhS1F2NGNzZDhYd2kwWlR2b2JsaXNhOWZDeW1iQnU0UzAwdHd3ZjdMVTl1ZnNZT3RsQ1FMcnpYSDBtZTkwUFdmWU5EakF4RUFSc2UzR3ZGaW03TDc4Z3lpcFdtdzJ5TmQyZ0hKOXBHUXFsU2p3SjRPVnFBRUlQOVg3VE1DbmtqZFRpS1A3Z3NGS1dKTDhPNVlQekdaVDZ3OTdXUFBpYXB4eVcyaFN1QUtXYjZkNW9ZaXRwR1NrYmxTTnlaN3UyOGFOMkNQR0YxSWpwQUlSMmNJam1vbnlaZDJmdVEzV3RTd3ArTXhLYXh6R0lyRnVSellWR2RONnBIM2FJMnlPb0p6eVE0dWFBZitjQVhrdVI3RGlHaU1XTEQ3WmVWUUdCMjlMWW10WXc3dUpJNVB1eDVvQT09IiwibWFjIjoiIiwidGFnIjoiSG0ydW85R1dKTGs5QjluTTRidU9RZz09In0=";
/// What each decrypts to: `serialize(serialize($job))`.
const PLAIN: &[u8] = b"s:265:\"O:19:\"App\\Jobs\\SendReport\":11:{s:8:\"reportId\";i:42;s:9:\"\0*\0format\";s:3:\"pdf\";s:10:\"connection\";N;s:5:\"queue\";N;s:15:\"chainConnection\";N;s:10:\"chainQueue\";N;s:19:\"chainCatchCallbacks\";N;s:5:\"delay\";N;s:11:\"afterCommit\";N;s:10:\"middleware\";a:0:{}s:7:\"chained\";a:0:{}}\";";

fn keys(cipher: Cipher, current: &str, previous: &[&str]) -> AppKeys {
    let previous = previous.iter().map(|k| AppKey::parse(k).unwrap()).collect();
    AppKeys::new(cipher, AppKey::parse(current).unwrap(), previous).unwrap()
}

/// A key of `len` bytes that is not the fixtures'.
fn other_key(len: usize) -> String {
    format!("base64:{}", STANDARD.encode(vec![7u8; len]))
}

/// `command`'s JSON, changed by `edit`, encoded again.
fn edited(command: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value =
        serde_json::from_slice(&STANDARD.decode(command).unwrap()).unwrap();
    edit(&mut v);
    STANDARD.encode(serde_json::to_vec(&v).unwrap())
}

/// The hex MAC Laravel would write for `iv` and `value` under `key`.
fn mac(key: &str, iv: &str, value: &str) -> String {
    let key = AppKey::parse(key).unwrap();
    let mut m = Hmac::<Sha256>::new_from_slice(&key.0).unwrap();
    m.update(iv.as_bytes());
    m.update(value.as_bytes());
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn decrypts_what_laravel_encrypted_with_each_cipher() {
    for (cipher, key, command) in [
        (Cipher::Aes256Cbc, KEY_256, COMMAND_256_CBC),
        (Cipher::Aes128Cbc, KEY_128, COMMAND_128_CBC),
        (Cipher::Aes256Gcm, KEY_256, COMMAND_256_GCM),
        (Cipher::Aes128Gcm, KEY_128, COMMAND_128_GCM),
    ] {
        let plain = keys(cipher, key, &[]).decrypt(command);
        assert_eq!(plain.as_deref(), Ok(PLAIN), "{cipher}");
    }
    let payload: serde_json::Value = serde_json::from_str(PAYLOAD_256_CBC).unwrap();
    assert_eq!(payload["data"]["command"], COMMAND_256_CBC);
}

#[test]
fn a_wrong_key_is_a_mac_mismatch_that_names_the_fix() {
    let k = keys(Cipher::Aes256Cbc, &other_key(32), &[]);
    let e = k.decrypt(COMMAND_256_CBC).unwrap_err();
    assert_eq!(e, DecryptError::MacMismatch { tried: 1 });
    let text = e.to_string();
    assert!(
        text.contains("set [pipeline.laravel] app_key to the app's APP_KEY"),
        "{text}"
    );
    let k = keys(Cipher::Aes256Gcm, &other_key(32), &[]);
    assert_eq!(
        k.decrypt(COMMAND_256_GCM),
        Err(DecryptError::TagMismatch { tried: 1 })
    );
}

#[test]
fn previous_keys_are_tried_after_the_current_one() {
    let k = keys(
        Cipher::Aes256Cbc,
        &other_key(32),
        &[&format!("base64:{}", STANDARD.encode([1u8; 32])), KEY_256],
    );
    assert_eq!(k.decrypt(COMMAND_256_CBC).as_deref(), Ok(PLAIN));
    let k = keys(Cipher::Aes128Gcm, &other_key(16), &[KEY_128]);
    assert_eq!(k.decrypt(COMMAND_128_GCM).as_deref(), Ok(PLAIN));
    let k = keys(Cipher::Aes256Cbc, &other_key(32), &[&other_key(32)]);
    assert_eq!(
        k.decrypt(COMMAND_256_CBC),
        Err(DecryptError::MacMismatch { tried: 2 })
    );
}

#[test]
fn a_tampered_mac_value_or_iv_does_not_decrypt() {
    let k = keys(Cipher::Aes256Cbc, KEY_256, &[]);
    let flip = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        b[3] = if b[3] == b'a' { b'b' } else { b'a' };
        String::from_utf8(b).unwrap()
    };
    for field in ["mac", "value", "iv"] {
        let tampered = edited(COMMAND_256_CBC, |v| {
            v[field] = flip(v[field].as_str().unwrap()).into();
        });
        assert_eq!(
            k.decrypt(&tampered),
            Err(DecryptError::MacMismatch { tried: 1 }),
            "{field}"
        );
    }
    let no_mac = edited(COMMAND_256_CBC, |v| v["mac"] = "".into());
    assert_eq!(
        k.decrypt(&no_mac),
        Err(DecryptError::MacMismatch { tried: 1 })
    );
    let k = keys(Cipher::Aes256Gcm, KEY_256, &[]);
    for field in ["tag", "value", "iv"] {
        let tampered = edited(COMMAND_256_GCM, |v| {
            v[field] = flip(v[field].as_str().unwrap()).into();
        });
        assert!(
            matches!(
                k.decrypt(&tampered),
                Err(DecryptError::TagMismatch { .. } | DecryptError::NotAPayload(_))
            ),
            "{field}"
        );
    }
}

#[test]
fn a_valid_mac_over_a_bad_ciphertext_is_an_error_not_a_panic() {
    let k = keys(Cipher::Aes256Cbc, KEY_256, &[]);
    let iv = STANDARD.encode([0u8; 16]);
    for len in [0, 5, 16, 33, 64] {
        let value = STANDARD.encode(vec![0x5a; len]);
        let forged = edited(COMMAND_256_CBC, |v| {
            v["mac"] = mac(KEY_256, &iv, &value).into();
            v["iv"] = iv.clone().into();
            v["value"] = value.clone().into();
        });
        // A 16-byte block may unpad by chance: only an Ok or BadPadding.
        match k.decrypt(&forged) {
            Ok(_) | Err(DecryptError::BadPadding) => {}
            other => panic!("{len}: {other:?}"),
        }
    }
}

#[test]
fn a_payload_of_the_other_cipher_says_to_set_cipher() {
    let e = keys(Cipher::Aes256Gcm, KEY_256, &[])
        .decrypt(COMMAND_256_CBC)
        .unwrap_err();
    assert_eq!(
        e,
        DecryptError::OtherCipher {
            written: "AES-CBC",
            configured: Cipher::Aes256Gcm
        }
    );
    assert!(e.to_string().contains("config('app.cipher')"), "{e}");
    let e = keys(Cipher::Aes256Cbc, KEY_256, &[])
        .decrypt(COMMAND_256_GCM)
        .unwrap_err();
    assert!(
        matches!(
            e,
            DecryptError::OtherCipher {
                written: "AES-GCM",
                ..
            }
        ),
        "{e}"
    );
    // AES-128 and AES-256 look alike: the MAC tells.
    assert_eq!(
        keys(Cipher::Aes128Cbc, KEY_128, &[]).decrypt(COMMAND_256_CBC),
        Err(DecryptError::MacMismatch { tried: 1 })
    );
}

#[test]
fn what_is_not_a_payload_says_so() {
    let k = keys(Cipher::Aes256Cbc, KEY_256, &[]);
    for (payload, says) in [
        ("%%%", "not base64"),
        ("eyJpdiI6IjEyMyJ9", "not JSON with string"),
        ("", "not JSON"),
        (
            &STANDARD.encode(r#"{"iv":"!","value":"","mac":""}"#),
            "`iv` is not base64",
        ),
        (
            &STANDARD.encode(r#"{"iv":"AAAA","value":"","mac":""}"#),
            "`iv` is not the cipher's length",
        ),
        (
            &STANDARD.encode(r#"{"iv":1,"value":"","mac":""}"#),
            "not JSON with string",
        ),
    ] {
        let e = k.decrypt(payload).unwrap_err();
        assert!(
            matches!(e, DecryptError::NotAPayload(_)) && e.to_string().contains(says),
            "{payload}: {e}"
        );
    }
}

#[test]
fn keys_parse_as_laravel_reads_them() {
    assert_eq!(AppKey::parse(KEY_256).unwrap().len(), 32);
    assert_eq!(AppKey::parse(KEY_128).unwrap().len(), 16);
    let raw = "0123456789abcdef0123456789abcdef";
    assert_eq!(AppKey::parse(raw).unwrap().0, raw.as_bytes());
    assert_eq!(AppKey::parse(""), Err(KeyError::Empty));
    assert_eq!(AppKey::parse("base64:not*base64"), Err(KeyError::NotBase64));
    let e = AppKeys::new(Cipher::Aes256Cbc, AppKey::parse(KEY_128).unwrap(), vec![]).unwrap_err();
    assert_eq!(
        e,
        KeyError::WrongLength {
            len: 16,
            cipher: Cipher::Aes256Cbc
        }
    );
    assert!(
        e.to_string().contains("php artisan key:generate --show"),
        "{e}"
    );
    assert_eq!(Cipher::parse("aes-128-gcm"), Some(Cipher::Aes128Gcm));
    assert_eq!(Cipher::parse("AES-192-CBC"), None);
}

#[test]
fn keys_never_show_in_debug_or_errors() {
    let k = keys(Cipher::Aes256Cbc, KEY_256, &[KEY_256]);
    let shown = format!("{k:?} {:?}", AppKey::parse(KEY_256).unwrap());
    assert_eq!(
        shown,
        "AppKeys { cipher: Aes256Cbc, keys: 2 } AppKey(32 bytes, [redacted])"
    );
    let wrong = keys(Cipher::Aes256Cbc, &other_key(32), &[]);
    let e = wrong.decrypt(COMMAND_256_CBC).unwrap_err().to_string();
    assert!(!e.contains(&other_key(32)[7..]), "{e}");
}

/// Random payloads, and well-formed ones around random bytes (with
/// a MAC that matches, so the bytes reach AES): never a panic.
#[test]
fn random_input_never_panics() {
    let all = [
        keys(Cipher::Aes256Cbc, KEY_256, &[KEY_256]),
        keys(Cipher::Aes128Cbc, KEY_128, &[]),
        keys(Cipher::Aes256Gcm, KEY_256, &[]),
        keys(Cipher::Aes128Gcm, KEY_128, &[KEY_128]),
    ];
    bolero::check!()
        .with_iterations(3_000)
        .with_type::<(String, Vec<u8>, Vec<u8>, Option<Vec<u8>>, bool)>()
        .for_each(|(text, iv, value, tag, sign)| {
            let iv = STANDARD.encode(iv);
            let value = STANDARD.encode(value);
            let mac = if *sign {
                mac(KEY_256, &iv, &value)
            } else {
                text.clone()
            };
            let json = serde_json::json!({
                "iv": iv,
                "value": value,
                "mac": mac,
                "tag": tag.as_ref().map(|t| STANDARD.encode(t)),
            });
            let payload = STANDARD.encode(json.to_string());
            for k in &all {
                let _ = k.decrypt(text);
                let _ = k.decrypt(&payload);
                let _ = k.decrypt(&payload[..payload.len() / 2]);
            }
        });
}

//! Laravel's `Encrypter`, read side: the commands of jobs that implement
//! `ShouldBeEncrypted`.
//!
//! Laravel 8+ queues such a job with `data.command` set to
//! `Crypt::encrypt(serialize($job))` instead of `serialize($job)`: base64 of
//! the JSON `{"iv", "value", "mac", "tag"}`, where `value` is the base64 of
//! the ciphertext of `serialize(serialize($job))` (`encrypt` serializes its
//! argument once more). With the app's `APP_KEY` in
//! [`[pipeline.laravel]`](crate::formats::laravel::LaravelConfig), the
//! `laravel` format decrypts it and `job.command` is there as for any job.
//!
//! | cipher (`config('app.cipher')`) | key      | iv       | integrity                                             |
//! |---------------------------------|----------|----------|-------------------------------------------------------|
//! | `AES-256-CBC` (Laravel's default) | 32 bytes | 16 bytes | `mac`: hex HMAC-SHA256(key, `iv` . `value`), both as base64 text |
//! | `AES-128-CBC`                   | 16 bytes | 16 bytes | the same                                              |
//! | `AES-256-GCM`, `AES-128-GCM`    | 32, 16   | 12 bytes | `tag`: GCM's 16-byte tag, base64; `mac` is empty      |
//!
//! As Laravel 11 does with `APP_PREVIOUS_KEYS`, each key is tried in turn,
//! the current one first: with CBC, the first whose MAC matches (compared in
//! constant time) decrypts; with GCM, the first whose tag verifies.
//!
//! ```
//! use sluice::formats::encrypted::{AppKey, AppKeys, Cipher};
//!
//! let key = AppKey::parse("base64:Lfv2+erzxcFazoIlbC7pdw==")?;
//! let keys = AppKeys::new(Cipher::Aes128Cbc, key, Vec::new())?;
//! let err = keys.decrypt("eyJpdiI6IjEyMyJ9").unwrap_err();
//! assert!(err.to_string().contains("not in Laravel's encrypted format"), "{err}");
//! # Ok::<(), sluice::formats::encrypted::KeyError>(())
//! ```
//!
//! Keys never appear in a `Debug` rendering or an error.

use std::fmt;

use aes::{Aes128, Aes256};
use aes_gcm::{AeadInOut, Aes128Gcm, Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, KeyIvInit};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// A cipher Laravel's `Encrypter` supports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cipher {
    Aes128Cbc,
    /// Laravel's default.
    #[default]
    Aes256Cbc,
    Aes128Gcm,
    Aes256Gcm,
}

impl Cipher {
    const ALL: [Cipher; 4] = [
        Cipher::Aes256Cbc,
        Cipher::Aes128Cbc,
        Cipher::Aes256Gcm,
        Cipher::Aes128Gcm,
    ];

    /// The name Laravel's config uses (`config('app.cipher')`).
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Cbc => "AES-128-CBC",
            Cipher::Aes256Cbc => "AES-256-CBC",
            Cipher::Aes128Gcm => "AES-128-GCM",
            Cipher::Aes256Gcm => "AES-256-GCM",
        }
    }

    /// The cipher of that name, any case.
    pub fn parse(name: &str) -> Option<Cipher> {
        Cipher::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The key length in bytes.
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Cbc | Cipher::Aes128Gcm => 16,
            Cipher::Aes256Cbc | Cipher::Aes256Gcm => 32,
        }
    }

    fn is_gcm(self) -> bool {
        matches!(self, Cipher::Aes128Gcm | Cipher::Aes256Gcm)
    }

    /// `openssl_cipher_iv_length()`.
    fn iv_len(self) -> usize {
        if self.is_gcm() { 12 } else { 16 }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Cipher {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cipher, D::Error> {
        let name = String::deserialize(d)?;
        Cipher::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{name}` is not a cipher of Laravel's Encrypter: write the app's \
                 config('app.cipher'): AES-256-CBC (the default), AES-128-CBC, AES-256-GCM or \
                 AES-128-GCM"
            ))
        })
    }
}

/// One key: the bytes `APP_KEY` stands for.
#[derive(Clone, PartialEq, Eq)]
pub struct AppKey(Vec<u8>);

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AppKey({} bytes, {})",
            self.0.len(),
            crate::redact::REDACTED
        )
    }
}

impl AppKey {
    /// Reads a key as Laravel's `EncryptionServiceProvider::parseKey` does:
    /// `base64:` and the base64 of the key (what `php artisan key:generate`
    /// writes), or else the key's bytes themselves.
    pub fn parse(text: &str) -> Result<AppKey, KeyError> {
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        match text.strip_prefix("base64:") {
            Some(b64) => STANDARD
                .decode(b64.trim())
                .map(AppKey)
                .map_err(|_| KeyError::NotBase64),
            None => Ok(AppKey(text.as_bytes().to_vec())),
        }
    }

    /// The key's length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for a key of no bytes (which [`AppKey::parse`] refuses).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a key cannot be used. No variant holds the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error(
        "is empty: set it to the app's APP_KEY (`php artisan key:generate --show` makes a new one)"
    )]
    Empty,
    #[error(
        "starts with `base64:` but the rest is not valid base64: copy the app's APP_KEY whole \
         (`php artisan key:generate --show` makes a new one)"
    )]
    NotBase64,
    #[error(
        "is {len} bytes long, but {cipher} needs a {need}-byte key: set it to the app's APP_KEY \
         (`base64:` and 44 characters for AES-256; `php artisan key:generate --show` makes one), \
         and `cipher` to the app's config('app.cipher')",
        need = cipher.key_len()
    )]
    WrongLength { len: usize, cipher: Cipher },
}

/// The keys a pipeline decrypts commands with: the app's `APP_KEY`, then
/// its previous keys, for one cipher.
#[derive(Clone)]
pub struct AppKeys {
    cipher: Cipher,
    /// The current key first; never empty.
    keys: Vec<AppKey>,
}

impl fmt::Debug for AppKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppKeys")
            .field("cipher", &self.cipher)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Which of the keys given to [`AppKeys::new`] has the wrong length.
#[derive(Debug, PartialEq, Eq)]
pub enum WhichKey {
    Current,
    /// The previous key at this index.
    Previous(usize),
}

impl AppKeys {
    /// `current`, then `previous` in order, each checked against `cipher`'s
    /// key length.
    pub fn new(
        cipher: Cipher,
        current: AppKey,
        previous: Vec<AppKey>,
    ) -> Result<AppKeys, KeyError> {
        AppKeys::checked(cipher, current, previous).map_err(|(_, e)| e)
    }

    /// As [`AppKeys::new`], saying which key is wrong.
    pub(crate) fn checked(
        cipher: Cipher,
        current: AppKey,
        previous: Vec<AppKey>,
    ) -> Result<AppKeys, (WhichKey, KeyError)> {
        let keys: Vec<AppKey> = std::iter::once(current).chain(previous).collect();
        for (i, k) in keys.iter().enumerate() {
            if k.len() != cipher.key_len() {
                let which = match i {
                    0 => WhichKey::Current,
                    n => WhichKey::Previous(n - 1),
                };
                let e = KeyError::WrongLength {
                    len: k.len(),
                    cipher,
                };
                return Err((which, e));
            }
        }
        Ok(AppKeys { cipher, keys })
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Decrypts what Laravel's `Encrypter::encrypt` wrote (with
    /// `$serialize` or without: the bytes are returned as they were
    /// encrypted).
    pub fn decrypt(&self, payload: &str) -> Result<Vec<u8>, DecryptError> {
        let p = Payload::parse(payload)?;
        let iv = STANDARD
            .decode(&p.iv)
            .map_err(|_| DecryptError::NotAPayload("its `iv` is not base64"))?;
        let tag = match p.tag.as_deref() {
            None | Some("") => None,
            Some(t) => Some(
                STANDARD
                    .decode(t)
                    .map_err(|_| DecryptError::NotAPayload("its `tag` is not base64"))?,
            ),
        };
        // Which cipher wrote it shows in the iv's length and in which of
        // `mac` and `tag` it set.
        let written_by_gcm = iv.len() == 12 || (tag.is_some() && p.mac.is_empty());
        if written_by_gcm != self.cipher.is_gcm() {
            return Err(DecryptError::OtherCipher {
                written: if written_by_gcm { "AES-GCM" } else { "AES-CBC" },
                configured: self.cipher,
            });
        }
        if iv.len() != self.cipher.iv_len() {
            return Err(DecryptError::NotAPayload(
                "its `iv` is not the cipher's length",
            ));
        }
        let ciphertext = STANDARD
            .decode(&p.value)
            .map_err(|_| DecryptError::NotAPayload("its `value` is not base64"))?;
        if self.cipher.is_gcm() {
            let tag = tag.ok_or(DecryptError::NotAPayload("it has no `tag`"))?;
            if tag.len() != 16 {
                return Err(DecryptError::NotAPayload("its `tag` is not 16 bytes"));
            }
            self.keys
                .iter()
                .find_map(|k| gcm_decrypt(self.cipher, &k.0, &iv, &ciphertext, &tag))
                .ok_or(DecryptError::TagMismatch {
                    tried: self.keys.len(),
                })
        } else {
            let mac = decode_hex(&p.mac);
            let mut matched = false;
            for k in &self.keys {
                if !mac_matches(&k.0, &p.iv, &p.value, mac.as_deref()) {
                    continue;
                }
                matched = true;
                if let Some(plain) = cbc_decrypt(self.cipher, &k.0, &iv, &ciphertext) {
                    return Ok(plain);
                }
            }
            Err(if matched {
                DecryptError::BadPadding
            } else {
                DecryptError::MacMismatch {
                    tried: self.keys.len(),
                }
            })
        }
    }
}

/// Why an encrypted value does not decrypt. Says what to change; never
/// holds a key or the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecryptError {
    #[error(
        "it is not in Laravel's encrypted format ({0}): Laravel writes base64 of JSON with \
         `iv`, `value` and `mac`"
    )]
    NotAPayload(&'static str),
    #[error(
        "it was encrypted with {written}, but [pipeline.laravel] cipher is {configured}: set \
         `cipher` to the app's config('app.cipher')"
    )]
    OtherCipher {
        written: &'static str,
        configured: Cipher,
    },
    #[error(
        "the MAC does not match any app_key ({tried} tried): set [pipeline.laravel] app_key to \
         the app's APP_KEY, and previous_keys to the keys it replaced"
    )]
    MacMismatch { tried: usize },
    #[error(
        "no app_key decrypts it (the GCM tag does not verify; {tried} tried): set \
         [pipeline.laravel] app_key to the app's APP_KEY, and previous_keys to the keys it \
         replaced"
    )]
    TagMismatch { tried: usize },
    #[error(
        "its MAC matches an app_key but it does not decrypt (bad padding): it was not written by \
         Laravel's Encrypter"
    )]
    BadPadding,
}

/// The JSON inside the base64, as `Encrypter::validPayload` wants it.
#[derive(Deserialize)]
struct Payload {
    iv: String,
    value: String,
    mac: String,
    #[serde(default)]
    tag: Option<String>,
}

impl Payload {
    fn parse(payload: &str) -> Result<Payload, DecryptError> {
        // PHP's `base64_decode` is not strict about padding.
        const LENIENT: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let json = LENIENT
            .decode(payload.trim())
            .map_err(|_| DecryptError::NotAPayload("not base64"))?;
        serde_json::from_slice(&json)
            .map_err(|_| DecryptError::NotAPayload("not JSON with string `iv`, `value`, `mac`"))
    }
}

fn mac_matches(key: &[u8], iv_b64: &str, value_b64: &str, mac: Option<&[u8]>) -> bool {
    let (Some(mac), Ok(mut hmac)) = (mac, Hmac::<Sha256>::new_from_slice(key)) else {
        return false;
    };
    hmac.update(iv_b64.as_bytes());
    hmac.update(value_b64.as_bytes());
    // Constant time, as `hash_equals`.
    hmac.verify_slice(mac).is_ok()
}

fn cbc_decrypt(cipher: Cipher, key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let mut buf = ciphertext.to_vec();
    let len = match cipher {
        Cipher::Aes128Cbc => cbc::Decryptor::<Aes128>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded::<Pkcs7>(&mut buf)
            .ok()?
            .len(),
        Cipher::Aes256Cbc => cbc::Decryptor::<Aes256>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded::<Pkcs7>(&mut buf)
            .ok()?
            .len(),
        Cipher::Aes128Gcm | Cipher::Aes256Gcm => return None,
    };
    buf.truncate(len);
    Some(buf)
}

fn gcm_decrypt(
    cipher: Cipher,
    key: &[u8],
    iv: &[u8],
    ciphertext: &[u8],
    tag: &[u8],
) -> Option<Vec<u8>> {
    let nonce = iv.try_into().ok()?;
    let tag = tag.try_into().ok()?;
    let mut buf = ciphertext.to_vec();
    match cipher {
        Cipher::Aes128Gcm => Aes128Gcm::new_from_slice(key)
            .ok()?
            .decrypt_inout_detached(nonce, b"", buf.as_mut_slice().into(), tag)
            .ok()?,
        Cipher::Aes256Gcm => Aes256Gcm::new_from_slice(key)
            .ok()?
            .decrypt_inout_detached(nonce, b"", buf.as_mut_slice().into(), tag)
            .ok()?,
        Cipher::Aes128Cbc | Cipher::Aes256Cbc => return None,
    }
    Some(buf)
}

/// `hash_hmac`'s lowercase hex (any case accepted); `None` if not hex.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;

//! Standard Webhooks signing (<https://www.standardwebhooks.com/>): the
//! receiver checks `webhook-signature` = `v1,` + base64(HMAC-SHA256(key,
//! "{webhook-id}.{webhook-timestamp}.{body}")), with the key being the
//! base64 secret after its `whsec_` prefix.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signing key, decoded from its `whsec_...` form.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// Parses `whsec_<base64>` (the prefix is optional).
    pub fn parse(secret: &str) -> Result<SigningKey, String> {
        let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
        let key = STANDARD
            .decode(b64)
            .map_err(|e| format!("the secret is not `whsec_` followed by base64: {e}"))?;
        if key.len() < 16 {
            return Err(format!(
                "the secret is {} bytes; Standard Webhooks wants 24 to 64 random bytes",
                key.len()
            ));
        }
        Ok(SigningKey(key))
    }

    /// The `webhook-signature` header value for one message.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the Standard Webhooks reference libraries' tests.
    #[test]
    fn matches_the_reference_vector() {
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rejects_secrets_that_are_not_base64() {
        assert!(SigningKey::parse("whsec_not base64!").is_err());
        assert!(SigningKey::parse("whsec_c2hvcnQ=").is_err());
    }
}

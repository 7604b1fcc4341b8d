//! [`KeySet`]: the decoding keys a token may be verified with, parsed once (from a secret, a
//! PEM file or a JSON Web Key Set) and looked up by `kid` per request.

use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;

use super::config::JwtAlgorithm;

/// Decoding keys with their `kid`s. A key without a `kid` (a secret, a PEM file, a JWKS
/// entry without one) serves tokens that name none.
#[derive(Clone)]
pub(crate) struct KeySet {
    keys: Vec<(Option<String>, Arc<DecodingKey>)>,
}

impl std::fmt::Debug for KeySet {
    /// The kids, never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(kid, _)| kid))
            .finish()
    }
}

/// The outcome of looking a token's `kid` up.
pub(crate) enum Lookup {
    Found(Arc<DecodingKey>),
    /// The `kid` is not in the set.
    UnknownKid,
    /// The token names no key and the set holds this many.
    NoKid(usize),
}

/// A JWKS document: only `keys` is read, each key on its own so one this server cannot use
/// (another algorithm, an encryption key, a type it does not know) is skipped rather than
/// failing the set.
#[derive(Deserialize)]
struct JwksDocument {
    keys: Vec<serde_json::Value>,
}

impl KeySet {
    /// One key, used whatever `kid` a token names: a secret or a PEM file.
    pub(crate) fn single(key: DecodingKey) -> KeySet {
        KeySet {
            keys: vec![(None, Arc::new(key))],
        }
    }

    /// The HS256 secret (its bytes as given).
    pub(crate) fn secret(secret: &str) -> Result<KeySet, String> {
        DecodingKey::from_secret(secret.as_bytes())
            .map(KeySet::single)
            .map_err(|e| format!("the secret is not usable: {e}"))
    }

    /// The public key of a PEM file, for RS256 or ES256.
    pub(crate) fn pem(algorithm: JwtAlgorithm, pem: &[u8]) -> Result<KeySet, String> {
        let key = match algorithm {
            JwtAlgorithm::RS256 => DecodingKey::from_rsa_pem(pem),
            JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(pem),
            JwtAlgorithm::HS256 => return Err("HS256 takes a secret, not a PEM file".into()),
        };
        key.map(KeySet::single).map_err(|e| {
            format!(
                "not a PEM {} public key ({e}); expected `-----BEGIN PUBLIC KEY-----`",
                match algorithm {
                    JwtAlgorithm::ES256 => "P-256 EC",
                    _ => "RSA",
                }
            )
        })
    }

    /// The keys of a JWKS document usable with `algorithm`: right key type (and curve),
    /// `use` absent or `sig`, `alg` absent or `algorithm`. None usable is an error saying
    /// what the document held.
    pub(crate) fn jwks(algorithm: JwtAlgorithm, json: &[u8]) -> Result<KeySet, String> {
        let document: JwksDocument = serde_json::from_slice(json)
            .map_err(|e| format!("not a JSON Web Key Set (`{{\"keys\": [...]}}`): {e}"))?;
        let total = document.keys.len();
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for value in document.keys {
            match usable(algorithm, value) {
                Ok((kid, key)) => keys.push((kid, Arc::new(key))),
                Err(why) => skipped.push(why),
            }
        }
        if keys.is_empty() {
            let why = if skipped.is_empty() {
                String::new()
            } else {
                format!(" ({})", skipped.join("; "))
            };
            return Err(format!(
                "no key usable for {} among its {total}{why}",
                algorithm.as_str()
            ));
        }
        if !skipped.is_empty() {
            tracing::debug!(skipped = ?skipped, "JWKS keys skipped");
        }
        Ok(KeySet { keys })
    }

    /// How many keys the set holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key for a token's `kid`. A set of one key without a `kid` serves any token.
    pub(crate) fn find(&self, kid: Option<&str>) -> Lookup {
        if let [(None, key)] = self.keys.as_slice() {
            return Lookup::Found(key.clone());
        }
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|(k, _)| k.as_deref() == Some(kid))
                .map_or(Lookup::UnknownKid, |(_, key)| Lookup::Found(key.clone())),
            None => match self.keys.as_slice() {
                [(_, key)] => Lookup::Found(key.clone()),
                keys => Lookup::NoKid(keys.len()),
            },
        }
    }
}

/// One JWKS entry as a decoding key for `algorithm`, with its kid; or why it is skipped.
fn usable(
    algorithm: JwtAlgorithm,
    value: serde_json::Value,
) -> Result<(Option<String>, DecodingKey), String> {
    let jwk: Jwk = serde_json::from_value(value).map_err(|e| format!("unreadable key: {e}"))?;
    let kid = jwk.common.key_id.clone();
    let name = kid.as_deref().unwrap_or("without kid").to_owned();
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return Err(format!("{name}: not a signing key"));
    }
    let wanted = match algorithm {
        JwtAlgorithm::HS256 => KeyAlgorithm::HS256,
        JwtAlgorithm::RS256 => KeyAlgorithm::RS256,
        JwtAlgorithm::ES256 => KeyAlgorithm::ES256,
    };
    if let Some(alg) = jwk.common.key_algorithm {
        if alg != wanted {
            return Err(format!("{name}: for {alg:?}"));
        }
    }
    let fits = match (&jwk.algorithm, algorithm) {
        (AlgorithmParameters::OctetKey(_), JwtAlgorithm::HS256) => true,
        (AlgorithmParameters::RSA(_), JwtAlgorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), JwtAlgorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        _ => false,
    };
    if !fits {
        return Err(format!("{name}: another key type"));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{name}: {e}"))?;
    Ok((kid, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rsa_jwk(kid: &str) -> serde_json::Value {
        // A syntactically valid RSA key (n = 2^64 + 1 is no real modulus: only lookup is
        // tested here; signatures are tested end to end in tests/http_jwt.rs).
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": "AQAAAAAAAAAB", "e": "AQAB"})
    }

    #[test]
    fn unusable_keys_are_skipped_and_kids_are_looked_up() {
        let doc = json!({"keys": [
            rsa_jwk("a"),
            rsa_jwk("b"),
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "ps", "alg": "PS256", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AQAB", "y": "AQAB"},
            {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AQAB"},
            {"kty": "weird"}
        ]});
        let set = KeySet::jwks(JwtAlgorithm::RS256, doc.to_string().as_bytes()).expect("usable");
        assert_eq!(set.len(), 2);
        assert!(matches!(set.find(Some("a")), Lookup::Found(_)));
        assert!(matches!(set.find(Some("enc")), Lookup::UnknownKid));
        assert!(matches!(set.find(None), Lookup::NoKid(2)));
    }

    #[test]
    fn a_set_with_no_usable_key_says_what_it_held() {
        let doc = json!({"keys": [rsa_jwk("a")]});
        let err = KeySet::jwks(JwtAlgorithm::ES256, doc.to_string().as_bytes()).expect_err("none");
        assert!(err.contains("no key usable for ES256 among its 1"), "{err}");
        let err = KeySet::jwks(JwtAlgorithm::RS256, b"[]").expect_err("not a set");
        assert!(err.contains("not a JSON Web Key Set"), "{err}");
    }

    #[test]
    fn a_single_key_serves_any_kid() {
        let set = KeySet::secret("0123456789abcdef0123456789abcdef").expect("secret");
        assert!(matches!(set.find(Some("whatever")), Lookup::Found(_)));
        assert!(matches!(set.find(None), Lookup::Found(_)));
    }
}

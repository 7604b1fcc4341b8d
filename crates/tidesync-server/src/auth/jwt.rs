//! JWT auth: bearer tokens from the app's own sign-in (Supabase, Firebase Auth, Auth0,
//! Clerk, …) verified with the provider's keys and mapped to [`Grants`] by configuration.
//!
//! [`JwtVerifier::verify`] checks, in this order, each refusal a `401` with its own code
//! (docs/protocol.md, "Authentication"): the token's shape (`malformed_token`), its `alg`
//! against the one configured (`algorithm_not_allowed`: `none`, and HS256 signed with an
//! RSA public key's bytes, never pass), its `kid` (`unknown_key_id`), the signature
//! (`invalid_signature`), `exp` and `nbf` with the leeway (`token_expired`,
//! `token_not_yet_valid`), `iss` and `aud` when configured (`invalid_issuer`,
//! `invalid_audience`), then the claims that make the grants (`missing_claim`,
//! `invalid_claim`). Messages name the failed check, never key material.
//!
//! Everything is parsed once by [`JwtVerifier::new`]: the [`jsonwebtoken::Validation`], the
//! decoding keys (`keys`), the space templates (`claims`). Per request: one base64 and
//! JSON parse of the header, a key lookup, the signature check, the claims.
//!
//! What it does not do: issue tokens, check revocation (a JWT is good until `exp`), or
//! accept more than one algorithm or issuer at once.

mod claims;
mod config;
mod keys;
mod remote;

use std::sync::Arc;

use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use tidesync_protocol::ErrorCode;

pub use config::{JwtAlgorithm, JwtConfig, JwtConfigError, MIN_SECRET_BYTES};
pub use remote::JwksFetchError;

use crate::auth::Grants;
use crate::error::ApiError;
use claims::{ClaimMapping, Claims};
use config::KeySource;
use keys::{KeySet, Lookup};
use remote::RemoteKeys;

/// Verifies bearer JWTs and maps their claims to grants. Cheap to clone (one `Arc`); build
/// it once at start with [`JwtVerifier::new`].
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    algorithm: JwtAlgorithm,
    validation: Validation,
    keys: Keys,
    claims: ClaimMapping,
    audience: Option<String>,
    issuer: Option<String>,
    leeway_secs: u64,
}

/// Where the decoding keys are.
enum Keys {
    /// A secret, a PEM file or a JWKS file: read at start.
    Fixed(KeySet),
    /// A JWKS URL: fetched and cached.
    Remote(Arc<RemoteKeys>),
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.inner.keys {
            Keys::Fixed(set) => format!("{} fixed key(s)", set.len()),
            Keys::Remote(_) => "JWKS URL".to_owned(),
        };
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.inner.algorithm)
            .field("keys", &keys)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

/// The part of a token's header read before anything else.
#[derive(Deserialize)]
struct TokenHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl JwtVerifier {
    /// Checks `config` ([`JwtConfig::validate`]) and loads its keys: the secret, or the PEM
    /// or JWKS file, parsed now. A `jwks_url` is fetched on first use (or by
    /// [`JwtVerifier::fetch_keys`], which a server calls at start to fail early).
    pub fn new(config: &JwtConfig) -> Result<JwtVerifier, JwtConfigError> {
        config.validate()?;
        let algorithm = config.algorithm;
        let key_error = |what: &'static str, path: &std::path::Path| {
            let path = path.to_owned();
            move |message: String| JwtConfigError::Key {
                what,
                path,
                message,
            }
        };
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| JwtConfigError::Read {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let keys = match config.key_source()? {
            KeySource::Secret(secret) => {
                Keys::Fixed(KeySet::secret(secret).map_err(JwtConfigError::Invalid)?)
            }
            KeySource::PublicKeyFile(path) => {
                let pem = read("public_key_file", path)?;
                let keys = KeySet::pem(algorithm, &pem);
                Keys::Fixed(keys.map_err(key_error("public_key_file", path))?)
            }
            KeySource::JwksFile(path) => {
                let json = read("jwks_file", path)?;
                let keys = KeySet::jwks(algorithm, &json);
                Keys::Fixed(keys.map_err(key_error("jwks_file", path))?)
            }
            KeySource::JwksUrl => {
                let url = config
                    .jwks_url()?
                    .ok_or_else(|| JwtConfigError::Invalid("jwks_url is not set".into()))?;
                let remote =
                    RemoteKeys::new(url, algorithm, config.jwks_refresh, config.jwks_min_refresh);
                Keys::Remote(Arc::new(remote.map_err(JwtConfigError::Invalid)?))
            }
        };
        let claims = ClaimMapping::new(
            &config.user_claim,
            &config.spaces,
            config.spaces_claim.as_deref(),
        )
        .map_err(|why| JwtConfigError::Invalid(format!("spaces: {why}")))?;

        let mut validation = Validation::new(algorithm.to_jsonwebtoken());
        validation.leeway = config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match &config.issuer {
            Some(issuer) => {
                validation.set_issuer(&[issuer]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);

        Ok(JwtVerifier {
            inner: Arc::new(Inner {
                algorithm,
                validation,
                keys,
                claims,
                audience: config.audience.clone(),
                issuer: config.issuer.clone(),
                leeway_secs: config.leeway.as_secs(),
            }),
        })
    }

    /// With a `jwks_url`: fetches the key set now and returns how many usable keys it
    /// holds. Without one: the number of keys loaded. A server calls it at start, so that a
    /// wrong URL shows in its log before the first request.
    pub async fn fetch_keys(&self) -> Result<usize, JwksFetchError> {
        match &self.inner.keys {
            Keys::Fixed(set) => Ok(set.len()),
            Keys::Remote(remote) => remote.fetch_now().await,
        }
    }

    /// The grants of a bearer JWT, or the refusal naming the check it failed (see the
    /// module docs). `503 unavailable` when the key set cannot be fetched and none is
    /// cached.
    pub async fn verify(&self, token: &str) -> Result<Grants, ApiError> {
        let inner = &*self.inner;
        let header = parse_header(token)?;
        if header.alg != inner.algorithm.as_str() {
            let alg: String = header.alg.chars().take(16).collect();
            return Err(ApiError::new(
                ErrorCode::AlgorithmNotAllowed,
                format!(
                    "the token is signed with {alg:?}; this server accepts only {}",
                    inner.algorithm.as_str()
                ),
            ));
        }
        let key = self.key(header.kid.as_deref()).await?;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &inner.validation)
            .map_err(|err| self.refusal_of(err.into_kind()))?;
        inner.claims.grants(&data.claims)
    }

    /// The decoding key for a token's `kid`.
    async fn key(&self, kid: Option<&str>) -> Result<Arc<DecodingKey>, ApiError> {
        let lookup = match &self.inner.keys {
            Keys::Fixed(set) => set.find(kid),
            Keys::Remote(remote) => remote.find(kid).await.map_err(|err| {
                tracing::warn!(error = %err, "no JWT keys to verify with");
                ApiError::unavailable(
                    "the server could not fetch the keys to verify this token with; retry later",
                )
            })?,
        };
        match lookup {
            Lookup::Found(key) => Ok(key),
            Lookup::UnknownKid => {
                let kid: String = kid.unwrap_or_default().chars().take(64).collect();
                Err(ApiError::new(
                    ErrorCode::UnknownKeyId,
                    format!(
                        "the token's key id (kid) {kid:?} is not in the server's key set; \
                         was it signed by another project or provider?"
                    ),
                ))
            }
            Lookup::NoKid(count) => Err(ApiError::new(
                ErrorCode::UnknownKeyId,
                format!(
                    "the token names no key (no kid in its header) and the server's key set \
                     holds {count}; sign it with a kid"
                ),
            )),
        }
    }

    /// The refusal for a failed `jsonwebtoken::decode`.
    fn refusal_of(&self, kind: ErrorKind) -> ApiError {
        let inner = &*self.inner;
        let leeway = inner.leeway_secs;
        match kind {
            ErrorKind::InvalidSignature => ApiError::new(
                ErrorCode::InvalidSignature,
                "the token's signature does not verify with the server's key (tampered, or \
                 signed by another key)",
            ),
            ErrorKind::ExpiredSignature => ApiError::new(
                ErrorCode::TokenExpired,
                format!(
                    "the token expired (exp) more than {leeway} s ago; get a new one from the \
                     app's sign-in"
                ),
            ),
            ErrorKind::ImmatureSignature => ApiError::new(
                ErrorCode::TokenNotYetValid,
                format!(
                    "the token is not valid yet (nbf more than {leeway} s ahead); check the \
                     clocks of the issuer and the server"
                ),
            ),
            ErrorKind::InvalidAudience => ApiError::new(
                ErrorCode::InvalidAudience,
                format!(
                    "the token's audience (aud) is not {:?}",
                    inner.audience.as_deref().unwrap_or_default()
                ),
            ),
            ErrorKind::InvalidIssuer => ApiError::new(
                ErrorCode::InvalidIssuer,
                format!(
                    "the token's issuer (iss) is not {:?}",
                    inner.issuer.as_deref().unwrap_or_default()
                ),
            ),
            ErrorKind::MissingRequiredClaim(claim) => ApiError::new(
                ErrorCode::MissingClaim,
                format!("the token has no `{claim}` claim (of the right type), which this server requires"),
            ),
            ErrorKind::InvalidClaimFormat(claim) => ApiError::new(
                ErrorCode::InvalidClaim,
                format!("the token's `{claim}` claim has the wrong type"),
            ),
            ErrorKind::InvalidAlgorithm => ApiError::new(
                ErrorCode::AlgorithmNotAllowed,
                format!(
                    "the token's algorithm does not fit the server's key ({})",
                    inner.algorithm.as_str()
                ),
            ),
            ErrorKind::Json(err) if err.is_data() => ApiError::new(
                ErrorCode::MalformedToken,
                "the token's payload is not a JSON object of claims",
            ),
            other => {
                tracing::debug!(error = ?other, "JWT refused as malformed");
                ApiError::new(
                    ErrorCode::MalformedToken,
                    "the bearer token is not a readable JWT (three base64url parts: header, \
                     claims, signature)",
                )
            }
        }
    }
}

/// The header of a compact JWT, read without trusting it (only to choose the check).
fn parse_header(token: &str) -> Result<TokenHeader, ApiError> {
    let malformed = |what: &str| {
        ApiError::new(
            ErrorCode::MalformedToken,
            format!(
                "the bearer token is not a JWT: {what} (expected three base64url parts: \
                 header, claims, signature)"
            ),
        )
    };
    let mut parts = token.split('.');
    let (Some(header), Some(_claims), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three dot-separated parts"));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| malformed("its header is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| malformed("its header is not a JSON object with `alg`"))
}

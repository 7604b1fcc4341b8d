//! [`JwtConfig`]: the `[auth.jwt]` section, as the config file spells it, and its checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::claims::SpaceTemplate;
use serde::Deserialize;

/// The longest leeway accepted: more is a typo (`"60d"` for `"60s"`) that would accept
/// tokens expired for months.
const MAX_LEEWAY: Duration = Duration::from_secs(3600);

/// The shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: at least the hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// The `[auth.jwt]` section: how bearer JWTs from the app's own sign-in (Supabase, Firebase
/// Auth, Auth0, Clerk, …) are verified and what they grant. Documented in
/// docs/operations.md ("JWT auth").
///
/// ```toml
/// [auth.jwt]
/// algorithm = "RS256"
/// jwks_url = "https://www.googleapis.com/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com"
/// issuer = "https://securetoken.google.com/my-project"
/// audience = "my-project"
/// user_claim = "user_id"
/// spaces = ["user:{user_id}"]
/// ```
///
/// Exactly one key source: `secret` (HS256), `public_key_file` (RS256, ES256), `jwks_file`
/// or `jwks_url`. Relative paths are resolved by [`JwtConfig::relative_to`]. Check it with
/// [`JwtConfig::validate`]; [`super::JwtVerifier::new`] does, and loads the keys.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The one algorithm tokens must be signed with; any other (`none` included) is refused.
    pub algorithm: JwtAlgorithm,
    /// HS256: the shared secret, as bytes of this string (Supabase's "JWT secret").
    #[serde(default)]
    pub secret: Option<String>,
    /// RS256/ES256: a PEM file holding the public key.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// A JSON Web Key Set file (`{"keys": [...]}`), read once at start.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JSON Web Key Set URL (https, or http on loopback), fetched and cached.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// When set, a token's `iss` must equal it.
    #[serde(default)]
    pub issuer: Option<String>,
    /// When set, a token's `aud` must be or contain it. When not set, `aud` is not checked.
    #[serde(default)]
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf` (default 60 s, at most 1 h).
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// The claim naming the user (default `sub`).
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Space templates, read and write: `{claim}` is replaced by that string claim
    /// (`user:{sub}`); a template without `{…}` is the same space for every token.
    #[serde(default)]
    pub spaces: Vec<String>,
    /// A claim holding an array of more space names (read and write). Absent from a token:
    /// no more spaces.
    #[serde(default)]
    pub spaces_claim: Option<String>,
    /// `jwks_url`: how old the cached key set may get before it is fetched again
    /// (default 10 min).
    #[serde(default = "default_jwks_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// `jwks_url`: the shortest time between two fetches. A token naming an unknown `kid`
    /// fetches the set again only when the last fetch is older than this (default 30 s), so
    /// made-up kids cannot hammer the provider.
    #[serde(default = "default_jwks_min_refresh", with = "humantime_serde")]
    pub jwks_min_refresh: Duration,
}

fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

fn default_user_claim() -> String {
    "sub".into()
}

fn default_jwks_refresh() -> Duration {
    Duration::from_secs(600)
}

fn default_jwks_min_refresh() -> Duration {
    Duration::from_secs(30)
}

/// The algorithms a server may be configured to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256, a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl JwtAlgorithm {
    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::ES256 => "ES256",
        }
    }

    pub(crate) fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            JwtAlgorithm::HS256 => jsonwebtoken::Algorithm::HS256,
            JwtAlgorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            JwtAlgorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// Where the keys come from, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeySource<'a> {
    Secret(&'a str),
    PublicKeyFile(&'a Path),
    JwksFile(&'a Path),
    JwksUrl,
}

/// Why a JWT configuration is refused or its keys could not be loaded. Each message says
/// what is wrong and how to fix it; none holds key material.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// A setting is missing, contradicts another or is out of range.
    #[error("[auth.jwt] {0}")]
    Invalid(String),
    /// A key file could not be read.
    #[error("[auth.jwt] cannot read {what} {path}: {source}")]
    Read {
        /// `public_key_file` or `jwks_file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key file was read but holds no usable key.
    #[error("[auth.jwt] {what} {path}: {message}")]
    Key {
        /// `public_key_file` or `jwks_file`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

impl std::fmt::Debug for JwtConfig {
    /// Everything but the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("public_key_file", &self.public_key_file)
            .field("jwks_file", &self.jwks_file)
            .field("jwks_url", &self.jwks_url)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("user_claim", &self.user_claim)
            .field("spaces", &self.spaces)
            .field("spaces_claim", &self.spaces_claim)
            .field("jwks_refresh", &self.jwks_refresh)
            .field("jwks_min_refresh", &self.jwks_min_refresh)
            .finish()
    }
}

impl JwtConfig {
    /// A configuration with `algorithm`, no key source yet, and every default: 60 s leeway,
    /// the user from `sub`, no spaces. Set a key source and spaces before use.
    pub fn new(algorithm: JwtAlgorithm) -> JwtConfig {
        JwtConfig {
            algorithm,
            secret: None,
            public_key_file: None,
            jwks_file: None,
            jwks_url: None,
            issuer: None,
            audience: None,
            leeway: default_leeway(),
            user_claim: default_user_claim(),
            spaces: Vec::new(),
            spaces_claim: None,
            jwks_refresh: default_jwks_refresh(),
            jwks_min_refresh: default_jwks_min_refresh(),
        }
    }

    /// The same configuration with relative `public_key_file` and `jwks_file` paths resolved
    /// against `dir` (the config file's directory).
    pub fn relative_to(mut self, dir: &Path) -> JwtConfig {
        for path in [&mut self.public_key_file, &mut self.jwks_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        self
    }

    /// Checks every setting without reading a file or the network.
    pub fn validate(&self) -> Result<(), JwtConfigError> {
        self.key_source()?;
        self.jwks_url()?;
        let invalid = |message: String| Err(JwtConfigError::Invalid(message));
        if self.leeway > MAX_LEEWAY {
            return invalid(format!(
                "leeway = {:?} is more than 1h: it would accept tokens that long expired; \
                 a minute (\"60s\") covers clock skew",
                self.leeway
            ));
        }
        for (name, claim, value) in [
            ("issuer", "iss", &self.issuer),
            ("audience", "aud", &self.audience),
        ] {
            if value.as_deref().is_some_and(str::is_empty) {
                return invalid(format!(
                    "{name} is empty: set the value tokens carry in `{claim}`, or remove the \
                     line to skip the check"
                ));
            }
        }
        if self.user_claim.is_empty() {
            return invalid(
                "user_claim is empty: name the claim holding the user (\"sub\")".into(),
            );
        }
        if self.spaces_claim.as_deref().is_some_and(str::is_empty) {
            return invalid(
                "spaces_claim is empty: name the claim holding more spaces, or remove the line"
                    .into(),
            );
        }
        if self.spaces.is_empty() && self.spaces_claim.is_none() {
            return invalid(
                "no spaces: a token would grant no space; set spaces = [\"user:{sub}\"] \
                 and/or spaces_claim = \"spaces\""
                    .into(),
            );
        }
        for template in &self.spaces {
            SpaceTemplate::parse(template).map_err(|why| {
                JwtConfigError::Invalid(format!("spaces: template {template:?} {why}"))
            })?;
        }
        if self.jwks_url.is_some() {
            if self.jwks_refresh < Duration::from_secs(1) {
                return invalid(format!(
                    "jwks_refresh = {:?} is under a second: that fetches the key set on \
                     almost every request; minutes (\"10m\") are usual",
                    self.jwks_refresh
                ));
            }
            if self.jwks_min_refresh > self.jwks_refresh {
                return invalid(format!(
                    "jwks_min_refresh ({:?}) is longer than jwks_refresh ({:?}); make it shorter",
                    self.jwks_min_refresh, self.jwks_refresh
                ));
            }
        }
        Ok(())
    }

    /// The one key source, or why there is not exactly one or it does not fit the
    /// algorithm.
    pub(crate) fn key_source(&self) -> Result<KeySource<'_>, JwtConfigError> {
        let set: Vec<(&str, KeySource<'_>)> = [
            self.secret
                .as_deref()
                .map(|s| ("secret", KeySource::Secret(s))),
            (self.public_key_file.as_deref())
                .map(|p| ("public_key_file", KeySource::PublicKeyFile(p))),
            (self.jwks_file.as_deref()).map(|p| ("jwks_file", KeySource::JwksFile(p))),
            self.jwks_url
                .as_ref()
                .map(|_| ("jwks_url", KeySource::JwksUrl)),
        ]
        .into_iter()
        .flatten()
        .collect();
        let source = match set.as_slice() {
            [(_, source)] => *source,
            [] => {
                return Err(JwtConfigError::Invalid(
                    "no key: set one of secret (HS256), public_key_file (RS256, ES256), \
                     jwks_file or jwks_url"
                        .into(),
                ))
            }
            several => {
                let names: Vec<&str> = several.iter().map(|(name, _)| *name).collect();
                return Err(JwtConfigError::Invalid(format!(
                    "{} are all set: keep exactly one key source",
                    names.join(" and ")
                )));
            }
        };
        let algorithm = self.algorithm.as_str();
        match (source, self.algorithm) {
            (KeySource::Secret(_), JwtAlgorithm::RS256 | JwtAlgorithm::ES256) => {
                Err(JwtConfigError::Invalid(format!(
                    "secret is for HS256, but algorithm = \"{algorithm}\": give its public key \
                     (public_key_file, jwks_file or jwks_url) instead"
                )))
            }
            (KeySource::PublicKeyFile(_), JwtAlgorithm::HS256) => Err(JwtConfigError::Invalid(
                "public_key_file is for RS256 and ES256, but algorithm = \"HS256\": \
                 give the shared secret instead"
                    .into(),
            )),
            (KeySource::Secret(secret), JwtAlgorithm::HS256) if secret.len() < MIN_SECRET_BYTES => {
                Err(JwtConfigError::Invalid(format!(
                    "secret is shorter than {MIN_SECRET_BYTES} bytes, which HS256 needs to be \
                     safe; use the provider's full secret, or make one with \
                     `openssl rand -base64 32`"
                )))
            }
            _ => Ok(source),
        }
    }

    /// `jwks_url` parsed and checked: https, or http to a loopback host (a local issuer).
    pub(crate) fn jwks_url(&self) -> Result<Option<reqwest::Url>, JwtConfigError> {
        let Some(raw) = &self.jwks_url else {
            return Ok(None);
        };
        let url = reqwest::Url::parse(raw)
            .map_err(|e| JwtConfigError::Invalid(format!("jwks_url {raw:?} is not a URL: {e}")))?;
        let host = url.host_str().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => Ok(Some(url)),
            "http" if loopback => Ok(Some(url)),
            _ => Err(JwtConfigError::Invalid(format!(
                "jwks_url {raw:?} must be https (plain http is accepted only on loopback): \
                 keys fetched in the clear could be replaced on the way"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_like: serde_json::Value) -> JwtConfig {
        serde_json::from_value(toml_like).expect("the section shape parses")
    }

    fn refusal(config: serde_json::Value) -> String {
        parse(config).validate().expect_err("refused").to_string()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn the_documented_section_parses_with_its_defaults() {
        let config = parse(serde_json::json!({
            "algorithm": "HS256", "secret": SECRET, "user_claim": "sub", "spaces": ["user:{sub}"]
        }));
        config.validate().expect("valid");
        assert_eq!(config.leeway, Duration::from_secs(60));
        assert_eq!(config.jwks_refresh, Duration::from_secs(600));
        let config = parse(serde_json::json!({
            "algorithm": "RS256", "jwks_url": "https://example.com/jwks.json",
            "issuer": "https://example.com", "audience": "authenticated", "leeway": "90s",
            "spaces": ["user:{sub}"], "spaces_claim": "spaces", "jwks_refresh": "10m"
        }));
        config.validate().expect("valid");
        assert_eq!(config.leeway, Duration::from_secs(90));
        assert!(serde_json::from_value::<JwtConfig>(serde_json::json!({
            "algorithm": "HS256", "secret": SECRET, "spaces": ["a"], "unknown": 1
        }))
        .is_err());
        assert!(serde_json::from_value::<JwtConfig>(serde_json::json!({
            "algorithm": "none", "secret": SECRET, "spaces": ["a"]
        }))
        .is_err());
    }

    #[test]
    fn each_wrong_setting_is_named_with_its_fix() {
        use serde_json::json;
        let cases = [
            (json!({"algorithm": "HS256", "spaces": ["a"]}), "no key"),
            (
                json!({"algorithm": "HS256", "secret": SECRET, "jwks_file": "k.json", "spaces": ["a"]}),
                "secret and jwks_file are all set",
            ),
            (
                json!({"algorithm": "RS256", "secret": SECRET, "spaces": ["a"]}),
                "secret is for HS256",
            ),
            (
                json!({"algorithm": "HS256", "public_key_file": "k.pem", "spaces": ["a"]}),
                "public_key_file is for RS256",
            ),
            (
                json!({"algorithm": "HS256", "secret": "short", "spaces": ["a"]}),
                "shorter than 32 bytes",
            ),
            (
                json!({"algorithm": "RS256", "jwks_url": "http://example.com/k", "spaces": ["a"]}),
                "must be https",
            ),
            (
                json!({"algorithm": "RS256", "jwks_url": "not a url", "spaces": ["a"]}),
                "is not a URL",
            ),
            (
                json!({"algorithm": "HS256", "secret": SECRET, "spaces": ["a"], "leeway": "60d"}),
                "more than 1h",
            ),
            (json!({"algorithm": "HS256", "secret": SECRET}), "no spaces"),
            (
                json!({"algorithm": "HS256", "secret": SECRET, "spaces": ["user:{sub"]}),
                "without its `}`",
            ),
            (
                json!({"algorithm": "HS256", "secret": SECRET, "spaces": ["bad name:{sub}"]}),
                "cannot make a valid space name",
            ),
            (
                json!({"algorithm": "HS256", "secret": SECRET, "spaces": ["a"], "audience": ""}),
                "audience is empty",
            ),
            (
                json!({"algorithm": "RS256", "jwks_url": "https://e.com/k", "spaces": ["a"],
                       "jwks_refresh": "1m", "jwks_min_refresh": "5m"}),
                "jwks_min_refresh",
            ),
        ];
        for (config, expected) in cases {
            let message = refusal(config.clone());
            assert!(message.contains(expected), "{config}: {message}");
            assert!(message.starts_with("[auth.jwt] "), "{message}");
            assert!(!message.contains(SECRET), "leaks the secret: {message}");
        }
        for loopback in [
            "http://127.0.0.1:9/k",
            "http://localhost/k",
            "http://[::1]:8/k",
        ] {
            let config =
                parse(json!({"algorithm": "RS256", "jwks_url": loopback, "spaces": ["a"]}));
            config.validate().expect(loopback);
        }
    }

    #[test]
    fn debug_never_shows_the_secret_and_paths_resolve_against_the_config_dir() {
        let mut config = JwtConfig::new(JwtAlgorithm::HS256);
        config.secret = Some(SECRET.into());
        assert!(!format!("{config:?}").contains(SECRET));
        let mut config = JwtConfig::new(JwtAlgorithm::RS256);
        config.public_key_file = Some("keys/pub.pem".into());
        config.jwks_file = Some("/abs/jwks.json".into());
        let config = config.relative_to(Path::new("/etc/tidesync"));
        assert_eq!(
            config.public_key_file.as_deref(),
            Some(Path::new("/etc/tidesync/keys/pub.pem"))
        );
        assert_eq!(
            config.jwks_file.as_deref(),
            Some(Path::new("/abs/jwks.json"))
        );
    }
}

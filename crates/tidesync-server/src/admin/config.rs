//! The `[admin]` settings and the admin token they name.
//!
//! ```toml
//! [admin]
//! token = "…"          # or: token_file = "admin-token.txt" (relative to the config file)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Fewest characters an admin token may have.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Longest admin token, in bytes (it travels in a header and a form field).
pub const MAX_TOKEN_BYTES: usize = 1024;

/// The `[admin]` section of the server configuration: exactly one of `token` and
/// `token_file`. Its `Debug` form never shows the token.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin token itself.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the admin token (surrounding whitespace, such as a final newline, is
    /// ignored). A relative path is resolved against the configuration file's directory.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl AdminConfig {
    /// The admin token the section names, reading `token_file` (resolved against
    /// `base_dir`, the configuration file's directory, when relative).
    pub fn token(&self, base_dir: &Path) -> Result<AdminToken, AdminConfigError> {
        match (&self.token, &self.token_file) {
            (Some(token), None) => AdminToken::new(token),
            (None, Some(file)) => {
                let path = base_dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|source| {
                    AdminConfigError::ReadFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                AdminToken::new(text.trim()).map_err(|e| AdminConfigError::InFile {
                    path,
                    problem: Box::new(e),
                })
            }
            (None, None) => Err(AdminConfigError::Missing),
            (Some(_), Some(_)) => Err(AdminConfigError::Both),
        }
    }
}

/// What is wrong with the admin settings; each message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum AdminConfigError {
    /// Neither `token` nor `token_file`.
    #[error("[admin] needs `token = \"…\"` or `token_file = \"…\"` (generate one with `openssl rand -hex 32`); remove the section to turn the dashboard off")]
    Missing,
    /// Both.
    #[error("[admin] has both `token` and `token_file`; keep one")]
    Both,
    /// Too short to resist guessing.
    #[error("the admin token has {chars} characters; use at least {MIN_TOKEN_CHARS} random ones (e.g. `openssl rand -hex 32`)")]
    TooShort {
        /// How many it has.
        chars: usize,
    },
    /// Too long to travel in a header.
    #[error("the admin token has {bytes} bytes; use at most {MAX_TOKEN_BYTES}")]
    TooLong {
        /// How many it has.
        bytes: usize,
    },
    /// Whitespace or control characters, which do not survive a header or a form.
    #[error("the admin token contains whitespace or control characters; use letters, digits and punctuation only (e.g. `openssl rand -hex 32`)")]
    BadCharacters,
    /// The token file cannot be read.
    #[error("cannot read the admin token file {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The token file holds no usable token.
    #[error("the admin token file {}: {problem}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its token.
        problem: Box<AdminConfigError>,
    },
}

/// A checked admin token. Only its SHA-256 is kept; presented tokens are compared in
/// constant time.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// Checks `token`: at least [`MIN_TOKEN_CHARS`] characters, at most
    /// [`MAX_TOKEN_BYTES`] bytes, no whitespace or control characters.
    pub fn new(token: &str) -> Result<AdminToken, AdminConfigError> {
        let chars = token.chars().count();
        if chars < MIN_TOKEN_CHARS {
            return Err(AdminConfigError::TooShort { chars });
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AdminConfigError::TooLong { bytes: token.len() });
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AdminConfigError::BadCharacters);
        }
        Ok(AdminToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        })
    }

    /// Whether `presented` is this token. Both sides are compared as SHA-256 digests in
    /// constant time, so neither the token's length nor a matching prefix shows in timing.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.digest.ct_eq(&presented).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123";

    /// A configuration file holding only the section.
    #[derive(Debug, Deserialize)]
    struct File {
        admin: AdminConfig,
    }

    #[test]
    fn the_section_deserializes_from_its_documented_toml_shape() {
        let file: File = toml::from_str(&format!("[admin]\ntoken = \"{GOOD}\"\n")).expect("token");
        assert!(file
            .admin
            .token(Path::new("."))
            .expect("valid")
            .matches(GOOD));
        assert!(
            !format!("{:?}", file.admin).contains(GOOD),
            "Debug hides the token"
        );
        let file: File = toml::from_str("[admin]\ntoken_file = \"admin.txt\"\n").expect("file");
        assert_eq!(file.admin.token_file, Some(PathBuf::from("admin.txt")));
        let unknown = toml::from_str::<File>(&format!("[admin]\ntokn = \"{GOOD}\"\n"))
            .expect_err("unknown fields are refused");
        assert!(unknown.to_string().contains("tokn"), "{unknown}");
    }

    #[test]
    fn a_token_file_is_read_relative_to_the_base_dir_and_trimmed() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("admin.txt"), format!("{GOOD}\n")).expect("write");
        let config = AdminConfig {
            token: None,
            token_file: Some("admin.txt".into()),
        };
        let token = config.token(dir.path()).expect("read");
        assert!(token.matches(GOOD));
        assert!(!token.matches(&format!("{GOOD}\n")));
        let missing = AdminConfig {
            token: None,
            token_file: Some("nope.txt".into()),
        };
        let err = missing.token(dir.path()).expect_err("missing file");
        assert!(err.to_string().contains("nope.txt"), "{err}");
    }

    #[test]
    fn weak_or_ambiguous_settings_are_refused_with_a_way_out() {
        let cases = [
            (AdminConfig::default(), "openssl rand"),
            (
                AdminConfig {
                    token: Some(GOOD.into()),
                    token_file: Some("f".into()),
                },
                "keep one",
            ),
            (
                AdminConfig {
                    token: Some("short".into()),
                    token_file: None,
                },
                "at least 16",
            ),
            (
                AdminConfig {
                    token: Some(format!("{GOOD} {GOOD}")),
                    token_file: None,
                },
                "whitespace",
            ),
        ];
        for (config, hint) in cases {
            let err = config.token(Path::new(".")).expect_err("refused");
            assert!(err.to_string().contains(hint), "{err}");
        }
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = AdminToken::new(GOOD).expect("valid");
        assert!(token.matches(GOOD));
        for other in ["", "0123456789abcdef012", "0123456789abcdef01234", "x"] {
            assert!(!token.matches(other), "{other:?}");
        }
    }
}

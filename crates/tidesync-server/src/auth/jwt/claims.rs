//! Verified claims to [`Grants`]: the user from `user_claim`, spaces from templates and from
//! `spaces_claim`. Pure: no keys, no time.
//!
//! A claim is named by its key (`sub`, `https://example.com/org`); when no claim has that
//! exact key, a dotted name walks into objects (`app_metadata.org` is `org` inside the
//! `app_metadata` object).

use std::collections::BTreeSet;

use serde_json::{Map, Value};
use tidesync_protocol::{ErrorCode, SpaceName};

use crate::auth::{check_user, Grants};
use crate::error::ApiError;

/// The claims of a verified token.
pub(crate) type Claims = Map<String, Value>;

/// How a verified token's claims become grants.
#[derive(Debug, Clone)]
pub(crate) struct ClaimMapping {
    user_claim: String,
    spaces: Vec<SpaceTemplate>,
    spaces_claim: Option<String>,
}

/// One piece of a space template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Claim(String),
}

/// A space template such as `org:{org_id}`, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpaceTemplate {
    source: String,
    parts: Vec<Part>,
}

impl SpaceTemplate {
    /// Parses `source`; the error completes "template … ".
    pub(crate) fn parse(source: &str) -> Result<SpaceTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err("has a `}` without its `{`".into());
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find(['{', '}'])
                .filter(|&i| after[i..].starts_with('}'))
                .ok_or("has a `{` without its `}`")?;
            let claim = after[..close].trim();
            if claim.is_empty() {
                return Err("has an empty `{}`: name a claim, as in \"user:{sub}\"".into());
            }
            parts.push(Part::Claim(claim.to_owned()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        // The literal parts must fit a space name whatever the claims hold: try them with
        // a plain value in every placeholder.
        let sample: String = parts
            .iter()
            .map(|part| match part {
                Part::Literal(text) => text.as_str(),
                Part::Claim(_) => "x",
            })
            .collect();
        SpaceName::new(sample)
            .map_err(|e| format!("cannot make a valid space name: {}", e.rule))?;
        Ok(SpaceTemplate {
            source: source.to_owned(),
            parts,
        })
    }

    /// The space these claims make, or the refusal naming the claim or the rule.
    fn render(&self, claims: &Claims) -> Result<SpaceName, ApiError> {
        let mut name = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => name.push_str(text),
                Part::Claim(claim) => {
                    let why = format!("which the space template {:?} needs", self.source);
                    name.push_str(string_claim(claims, claim, &why)?);
                }
            }
        }
        SpaceName::new(name).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidClaim,
                format!(
                    "the token's claims make the space {:?} (template {:?}), which is not a \
                     valid space name: {}",
                    e.value, self.source, e.rule
                ),
            )
        })
    }
}

impl ClaimMapping {
    /// The mapping of a validated configuration (its templates parse).
    pub(crate) fn new(
        user_claim: &str,
        templates: &[String],
        spaces_claim: Option<&str>,
    ) -> Result<ClaimMapping, String> {
        let spaces = templates
            .iter()
            .map(|t| SpaceTemplate::parse(t).map_err(|why| format!("template {t:?} {why}")))
            .collect::<Result<_, _>>()?;
        Ok(ClaimMapping {
            user_claim: user_claim.to_owned(),
            spaces,
            spaces_claim: spaces_claim.map(str::to_owned),
        })
    }

    /// The grants of a verified token: the user, and every space (read and write).
    pub(crate) fn grants(&self, claims: &Claims) -> Result<Grants, ApiError> {
        let user = string_claim(
            claims,
            &self.user_claim,
            "which this server reads the user from (user_claim)",
        )?;
        check_user(user).map_err(|rule| {
            ApiError::new(
                ErrorCode::InvalidClaim,
                format!(
                    "the token's `{}` claim is not a valid user: {rule}",
                    self.user_claim
                ),
            )
        })?;
        let mut write = BTreeSet::new();
        for template in &self.spaces {
            write.insert(template.render(claims)?);
        }
        if let Some(name) = &self.spaces_claim {
            write.extend(listed_spaces(claims, name)?);
        }
        Ok(Grants {
            user: user.to_owned(),
            read: BTreeSet::new(),
            write,
        })
    }
}

/// The spaces listed in the array claim `name` (none when the token lacks it).
fn listed_spaces(claims: &Claims, name: &str) -> Result<Vec<SpaceName>, ApiError> {
    let Some(value) = claim(claims, name) else {
        return Ok(Vec::new());
    };
    let not_a_list = || {
        ApiError::new(
            ErrorCode::InvalidClaim,
            format!("the token's `{name}` claim (spaces_claim) is not an array of space names"),
        )
    };
    let items = value.as_array().ok_or_else(not_a_list)?;
    items
        .iter()
        .map(|item| {
            let text = item.as_str().ok_or_else(not_a_list)?;
            SpaceName::new(text).map_err(|e| {
                ApiError::new(
                    ErrorCode::InvalidClaim,
                    format!("the token's `{name}` claim (spaces_claim) lists {e}"),
                )
            })
        })
        .collect()
}

/// The string claim `name`; `why` completes "the token has no `name` claim, …".
fn string_claim<'a>(claims: &'a Claims, name: &str, why: &str) -> Result<&'a str, ApiError> {
    match claim(claims, name) {
        None | Some(Value::Null) => Err(ApiError::new(
            ErrorCode::MissingClaim,
            format!("the token has no `{name}` claim, {why}"),
        )),
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidClaim,
            format!("the token's `{name}` claim is not a string, {why}"),
        )),
    }
}

/// The claim `name`: its exact key, or else a dotted path into objects.
fn claim<'a>(claims: &'a Claims, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut path = name.split('.');
    let first = claims.get(path.next()?)?;
    path.try_fold(first, |value, key| value.as_object()?.get(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        value.as_object().cloned().expect("an object")
    }

    fn mapping(templates: &[&str], spaces_claim: Option<&str>) -> ClaimMapping {
        let templates: Vec<String> = templates.iter().map(|t| t.to_string()).collect();
        ClaimMapping::new("sub", &templates, spaces_claim).expect("valid mapping")
    }

    fn spaces(grants: &Grants) -> Vec<&str> {
        grants.write.iter().map(SpaceName::as_str).collect()
    }

    #[test]
    fn templates_fill_in_string_claims_and_nested_ones() {
        let m = mapping(&["user:{sub}", "org:{app_metadata.org}", "public"], None);
        let g = m
            .grants(&claims(
                json!({"sub": "u1", "app_metadata": {"org": "acme"}}),
            ))
            .expect("grants");
        assert_eq!(g.user, "u1");
        assert_eq!(spaces(&g), ["org:acme", "public", "user:u1"]);
        assert!(g.read.is_empty());
    }

    #[test]
    fn an_exact_key_with_dots_wins_over_a_path() {
        let m = mapping(&["team:{https://example.com/team}"], None);
        let g = m
            .grants(&claims(
                json!({"sub": "u1", "https://example.com/team": "red"}),
            ))
            .expect("grants");
        assert_eq!(spaces(&g), ["team:red"]);
    }

    #[test]
    fn the_spaces_claim_adds_spaces_and_may_be_absent() {
        let m = mapping(&["user:{sub}"], Some("spaces"));
        let g = m
            .grants(&claims(
                json!({"sub": "u1", "spaces": ["team:a", "team:b"]}),
            ))
            .expect("grants");
        assert_eq!(spaces(&g), ["team:a", "team:b", "user:u1"]);
        let g = m.grants(&claims(json!({"sub": "u1"}))).expect("grants");
        assert_eq!(spaces(&g), ["user:u1"]);
    }

    #[test]
    fn missing_wrongly_typed_and_invalid_claims_are_refused_with_their_code() {
        let m = mapping(&["user:{sub}", "org:{org}"], Some("spaces"));
        let code = |value: Value| m.grants(&claims(value)).expect_err("refused").code();
        assert_eq!(code(json!({"org": "a"})), ErrorCode::MissingClaim);
        assert_eq!(
            code(json!({"sub": null, "org": "a"})),
            ErrorCode::MissingClaim
        );
        assert_eq!(code(json!({"sub": "u1"})), ErrorCode::MissingClaim);
        assert_eq!(code(json!({"sub": 7, "org": "a"})), ErrorCode::InvalidClaim);
        assert_eq!(
            code(json!({"sub": "u1", "org": ["a"]})),
            ErrorCode::InvalidClaim
        );
        // Auth0-style subjects hold characters a space name does not allow.
        let err = m
            .grants(&claims(json!({"sub": "auth0|42", "org": "a"})))
            .expect_err("refused");
        assert_eq!(err.code(), ErrorCode::InvalidClaim);
        assert!(
            err.message().contains("\"user:auth0|42\""),
            "{}",
            err.message()
        );
        assert_eq!(
            code(json!({"sub": "u1", "org": "a", "spaces": "team:a"})),
            ErrorCode::InvalidClaim
        );
        assert_eq!(
            code(json!({"sub": "u1", "org": "a", "spaces": ["bad space"]})),
            ErrorCode::InvalidClaim
        );
        assert_eq!(
            code(json!({"sub": "", "org": "a"})),
            ErrorCode::InvalidClaim
        );
    }

    #[test]
    fn templates_are_checked_when_parsed() {
        for bad in [
            "user:{sub",
            "user:sub}",
            "user:{}",
            "us er:{sub}",
            "{a}{b",
            ":{sub}",
        ] {
            assert!(SpaceTemplate::parse(bad).is_err(), "{bad}");
        }
        for good in ["user:{sub}", "{sub}", "shared", "t:{a}-{b}"] {
            assert!(SpaceTemplate::parse(good).is_ok(), "{good}");
        }
    }
}

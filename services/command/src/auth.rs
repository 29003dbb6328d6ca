//! Who is calling: bearer tokens from a configured list, each standing for an actor with roles.
//! (Authentication proper — OIDC, mTLS — comes with the security work; every action already
//! carries its actor, so nothing else changes then.)

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use axum::http::HeaderMap;
use figment::providers::Format as _;
use secrecy::ExposeSecret as _;
use serde::Deserialize;

use crate::config::TokenEntry;
use crate::error::ApiErr;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    /// Proposes changes.
    Operator,
    /// Approves or rejects others' proposals.
    Approver,
    /// Confirms and revokes device keys; everything an operator does.
    Admin,
    /// Registers its own keys (enrollment).
    Device,
    /// Another service (analytics) proposing corrections.
    Service,
}

impl Role {
    pub(crate) const ALL: [Role; 5] = [
        Role::Operator,
        Role::Approver,
        Role::Admin,
        Role::Device,
        Role::Service,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Admin => "admin",
            Role::Device => "device",
            Role::Service => "service",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// The caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub(crate) actor: String,
    pub(crate) roles: Vec<Role>,
}

impl Caller {
    pub(crate) fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Refused (403) unless the caller has one of `roles`.
    pub(crate) fn require(&self, roles: &[Role], action: &str) -> Result<(), ApiErr> {
        if roles.iter().any(|r| self.has(*r)) {
            return Ok(());
        }
        let needs: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiErr::forbidden(
            "missing_role",
            format!(
                "{} may not {action}: it needs the role {}",
                self.actor,
                needs.join(" or ")
            ),
        )
        .with("needs", serde_json::json!(needs)))
    }
}

/// The configured tokens, kept by their SHA-256 digest: a lookup's timing can only tell an
/// attacker about digests, which say nothing of a token (no byte-by-byte guessing), and the
/// tokens themselves are not kept in memory once loaded.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tokens(Arc<HashMap<[u8; 32], Caller>>);

fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

pub(crate) fn check_entry(t: &TokenEntry) -> Result<(), String> {
    if t.token.as_ref().is_none_or(|s| s.expose_secret().len() < 8) {
        return Err(format!(
            "token of {:?}: a token of at least 8 characters is required",
            t.actor
        ));
    }
    if t.actor.trim().is_empty() {
        return Err("a token's actor must not be empty".into());
    }
    for r in &t.roles {
        if Role::parse(r).is_none() {
            return Err(format!(
                "token of {:?}: unknown role {r:?} (known: operator, approver, admin, device, service)",
                t.actor
            ));
        }
    }
    Ok(())
}

impl Tokens {
    /// The inline tokens plus those of `file`; a bad entry is named.
    pub(crate) fn load(inline: &[TokenEntry], file: Option<&Path>) -> Result<Tokens, String> {
        let mut entries = inline.to_vec();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("command.tokens_file {}: {e}", path.display()))?;
            let parsed: TokensFile = if path.extension().is_some_and(|e| e == "json") {
                serde_json::from_str(&text)
                    .map_err(|e| format!("command.tokens_file {}: {e}", path.display()))?
            } else {
                figment::Figment::from(figment::providers::Toml::string(&text))
                    .extract()
                    .map_err(|e| format!("command.tokens_file {}: {e}", path.display()))?
            };
            entries.extend(parsed.tokens);
        }
        let mut map = HashMap::new();
        for t in &entries {
            check_entry(t)?;
            let token = digest(t.token.as_ref().map_or("", |s| s.expose_secret()));
            let caller = Caller {
                actor: t.actor.clone(),
                roles: t.roles.iter().filter_map(|r| Role::parse(r)).collect(),
            };
            if map.insert(token, caller).is_some() {
                return Err(format!("token of {:?} is given twice", t.actor));
            }
        }
        Ok(Tokens(Arc::new(map)))
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The caller named by `Authorization: Bearer <token>`; 401 with the reason otherwise.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiErr> {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Err(ApiErr::unauthorized(
                "missing_token",
                "an Authorization: Bearer <token> header is required",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiErr::unauthorized(
                    "malformed_token",
                    "the Authorization header must be Bearer <token>",
                )
            })?;
        self.0
            .get(&digest(token))
            .cloned()
            .ok_or_else(|| ApiErr::unauthorized("unknown_token", "the token is not known"))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn tokens_come_from_toml_or_json_files_and_name_their_actor() {
        let dir = tempfile::tempdir().unwrap();
        let toml = dir.path().join("tokens.toml");
        std::fs::write(
            &toml,
            "[[tokens]]\ntoken = \"secret-olga-1\"\nactor = \"olga\"\nroles = [\"operator\"]\n",
        )
        .unwrap();
        let json = dir.path().join("tokens.json");
        std::fs::write(
            &json,
            r#"{"tokens": [{"token": "secret-anna-1", "actor": "anna", "roles": ["approver", "admin"]}]}"#,
        )
        .unwrap();
        let t = Tokens::load(&[], Some(&toml)).unwrap();
        let olga = t.caller(&headers("Bearer secret-olga-1")).unwrap();
        assert_eq!(
            (olga.actor.as_str(), olga.roles.as_slice()),
            ("olga", &[Role::Operator][..])
        );
        let t = Tokens::load(&[], Some(&json)).unwrap();
        let anna = t.caller(&headers("Bearer secret-anna-1")).unwrap();
        assert!(anna.has(Role::Admin) && anna.has(Role::Approver) && !anna.has(Role::Operator));
        assert!(anna.require(&[Role::Operator], "propose").is_err());

        for (value, reason) in [
            ("Bearer nope-nope-nope", "unknown_token"),
            ("Basic abc", "malformed_token"),
        ] {
            assert_eq!(t.caller(&headers(value)).unwrap_err().reason(), reason);
        }
        assert_eq!(
            t.caller(&HeaderMap::new()).unwrap_err().reason(),
            "missing_token"
        );

        std::fs::write(
            &toml,
            "[[tokens]]\ntoken = \"secret-x-123\"\nactor = \"x\"\nroles = [\"king\"]\n",
        )
        .unwrap();
        assert!(Tokens::load(&[], Some(&toml)).unwrap_err().contains("king"));
        assert!(
            Tokens::load(&[], Some(&dir.path().join("missing.toml")))
                .unwrap_err()
                .contains("missing.toml")
        );
    }
}

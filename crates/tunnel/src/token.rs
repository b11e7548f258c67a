//! `TUNNEL_TOKEN` parsing (tunnel.md §1).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Credentials of one named tunnel, decoded from a tunnel token.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelToken {
    /// Account tag (`a`).
    pub account_tag: String,
    /// Raw secret bytes (`s`, base64-decoded). Sent as-is in `TunnelAuth.tunnelSecret`.
    pub secret: Vec<u8>,
    /// Tunnel id (`t`).
    pub tunnel_id: Uuid,
    /// Optional endpoint/region (`e`), which changes the SRV service name.
    pub endpoint: Option<String>,
}

/// Why a token was rejected. The message names the bad part and never contains the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("tunnel token is empty")]
    Empty,
    #[error("tunnel token is not valid standard base64")]
    Base64,
    #[error("tunnel token does not decode to a JSON object: {0}")]
    Json(String),
    #[error("tunnel token is missing field `{0}`")]
    MissingField(&'static str),
    #[error("tunnel token field `t` is not a UUID")]
    TunnelId,
    #[error("tunnel token field `s` (secret) is not valid standard base64")]
    Secret,
}

#[derive(Deserialize, Serialize)]
struct Wire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e: Option<String>,
}

impl TunnelToken {
    /// Decodes a token: trims whitespace, base64 (standard, padded), JSON `a`/`s`/`t`/optional `e`.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let json = STANDARD.decode(token).map_err(|_| TokenError::Base64)?;
        let wire: Wire = serde_json::from_slice(&json).map_err(|e| TokenError::Json(e.to_string()))?;
        let account_tag = wire
            .a
            .filter(|a| !a.is_empty())
            .ok_or(TokenError::MissingField("a"))?;
        let secret = wire
            .s
            .filter(|s| !s.is_empty())
            .ok_or(TokenError::MissingField("s"))?;
        let tunnel_id = wire
            .t
            .filter(|t| !t.is_empty())
            .ok_or(TokenError::MissingField("t"))?;
        let tunnel_id = Uuid::parse_str(&tunnel_id).map_err(|_| TokenError::TunnelId)?;
        let secret = STANDARD.decode(secret).map_err(|_| TokenError::Secret)?;
        Ok(Self {
            account_tag,
            secret,
            tunnel_id,
            endpoint: wire.e.filter(|e| !e.is_empty()),
        })
    }

    /// Fresh random credentials, as `cloudflared tunnel create` would make (used by the emulator).
    pub fn generate() -> Self {
        Self::generate_with(&mut rand::rng())
    }

    /// [`TunnelToken::generate`] with the caller's random source (a seeded one gives the same token every time).
    pub fn generate_with(rng: &mut impl rand::Rng) -> Self {
        let account: [u8; 16] = rng.random();
        let secret: [u8; 32] = rng.random();
        Self {
            account_tag: account.iter().map(|b| format!("{b:02x}")).collect(),
            secret: secret.to_vec(),
            tunnel_id: uuid::Builder::from_random_bytes(rng.random()).into_uuid(),
            endpoint: None,
        }
    }

    /// Encodes the token in the form `TUNNEL_TOKEN` expects.
    pub fn encode(&self) -> String {
        let wire = Wire {
            a: Some(self.account_tag.clone()),
            s: Some(STANDARD.encode(&self.secret)),
            t: Some(self.tunnel_id.to_string()),
            e: self.endpoint.clone(),
        };
        // Serialising a struct of strings cannot fail.
        STANDARD.encode(serde_json::to_vec(&wire).unwrap_or_default())
    }
}

impl std::fmt::Debug for TunnelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelToken")
            .field("account_tag", &self.account_tag)
            .field("tunnel_id", &self.tunnel_id)
            .field("endpoint", &self.endpoint)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(json: &str) -> String {
        STANDARD.encode(json)
    }

    #[test]
    fn parses_a_token_and_round_trips() {
        let t = TunnelToken::generate();
        let parsed = TunnelToken::parse(&format!("  {}\n", t.encode())).unwrap();
        assert_eq!(parsed, t);
        assert_eq!(parsed.secret.len(), 32);
    }

    #[test]
    fn endpoint_is_optional() {
        let t = tok(r#"{"a":"abc","s":"AAEC","t":"6ff42ae2-765d-4adf-8112-31c55c1551ef","e":"fed"}"#);
        let t = TunnelToken::parse(&t).unwrap();
        assert_eq!(t.endpoint.as_deref(), Some("fed"));
        assert_eq!(t.secret, vec![0, 1, 2]);
    }

    #[test]
    fn each_bad_part_is_named() {
        assert_eq!(TunnelToken::parse(" "), Err(TokenError::Empty));
        assert_eq!(TunnelToken::parse("not base64!"), Err(TokenError::Base64));
        assert!(matches!(TunnelToken::parse(&tok("[1")), Err(TokenError::Json(_))));
        assert_eq!(
            TunnelToken::parse(&tok(r#"{"s":"AA==","t":"6ff42ae2-765d-4adf-8112-31c55c1551ef"}"#)),
            Err(TokenError::MissingField("a"))
        );
        assert_eq!(
            TunnelToken::parse(&tok(r#"{"a":"x","t":"6ff42ae2-765d-4adf-8112-31c55c1551ef"}"#)),
            Err(TokenError::MissingField("s"))
        );
        assert_eq!(
            TunnelToken::parse(&tok(r#"{"a":"x","s":"AA=="}"#)),
            Err(TokenError::MissingField("t"))
        );
        assert_eq!(
            TunnelToken::parse(&tok(r#"{"a":"x","s":"AA==","t":"nope"}"#)),
            Err(TokenError::TunnelId)
        );
        assert_eq!(
            TunnelToken::parse(&tok(
                r#"{"a":"x","s":"%%","t":"6ff42ae2-765d-4adf-8112-31c55c1551ef"}"#
            )),
            Err(TokenError::Secret)
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = TunnelToken::generate();
        let shown = format!("{t:?}");
        assert!(!shown.contains(&STANDARD.encode(&t.secret)));
        assert!(shown.contains("redacted"));
    }
}

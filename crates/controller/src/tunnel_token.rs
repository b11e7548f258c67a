//! The tunnel token (controller.md §8) as far as the controller needs it: the tunnel id, for Gateway
//! `status.addresses` (`<tunnel-id>.cfargotunnel.com`), and the account tag, for the Cloudflare API (§9). The token
//! is never logged.

use base64::Engine as _;

/// Why a tunnel token could not be read. The message never contains the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TunnelTokenError {
    #[error("the tunnel token is not base64")]
    Base64,
    #[error("the tunnel token is not a JSON object with a string field \"t\" (the tunnel id)")]
    Shape,
}

/// The ids a tunnel token names; the account tag is optional because only the Cloudflare API needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelIds {
    /// `a`: the account tag.
    pub account_id: Option<String>,
    /// `t`: the tunnel UUID.
    pub tunnel_id: String,
}

/// The tunnel id (`t`) of a cloudflared tunnel token: base64 of `{"a": account, "t": tunnel id, "s": secret}`.
pub fn tunnel_id(token: &str) -> Result<String, TunnelTokenError> {
    tunnel_ids(token).map(|ids| ids.tunnel_id)
}

/// The account tag (`a`, when present) and tunnel id (`t`) of a tunnel token.
pub fn tunnel_ids(token: &str) -> Result<TunnelIds, TunnelTokenError> {
    let token = token.trim();
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines
        .iter()
        .find_map(|e| e.decode(token).ok())
        .ok_or(TunnelTokenError::Base64)?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| TunnelTokenError::Shape)?;
    let id = value
        .get("t")
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or(TunnelTokenError::Shape)?;
    let account = value
        .get("a")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    Ok(TunnelIds {
        account_id: account,
        tunnel_id: id.to_owned(),
    })
}

/// The Gateway address a tunnel answers on.
pub fn tunnel_hostname(tunnel_id: &str) -> String {
    format!("{tunnel_id}.cfargotunnel.com")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tunnel_id() {
        let json = r#"{"a":"0123456789abcdef0123456789abcdef","t":"6ff42ae2-765d-4adf-8112-31c55c1551ef","s":"c2VjcmV0"}"#;
        let token = base64::engine::general_purpose::STANDARD.encode(json);
        assert_eq!(tunnel_id(&token).unwrap(), "6ff42ae2-765d-4adf-8112-31c55c1551ef");
        let ids = tunnel_ids(&token).unwrap();
        assert_eq!(
            ids.account_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        let no_account = base64::engine::general_purpose::STANDARD.encode(r#"{"t":"x"}"#);
        assert_eq!(tunnel_ids(&no_account).unwrap().account_id, None);
        assert_eq!(tunnel_hostname("x"), "x.cfargotunnel.com");
    }

    #[test]
    fn rejects_garbage_without_echoing_it() {
        assert_eq!(tunnel_id("not base64 !!"), Err(TunnelTokenError::Base64));
        let token = base64::engine::general_purpose::STANDARD.encode(r#"{"a":"x"}"#);
        assert_eq!(tunnel_id(&token), Err(TunnelTokenError::Shape));
        assert!(!TunnelTokenError::Shape.to_string().contains(&token));
    }
}

//! Scripted faults (tunnel.md §13.5). A rule is JSON:
//! `{"trigger":"register"|"request"|"after_ms", "connIndex":n?, "attempt":n?, "pathPrefix":"/x"?, "ms":n?,
//!   "action":{...}, "times":n?}`.

use serde::Deserialize;
use serde_json::Value;

/// What fires a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    Register {
        conn_index: Option<u8>,
        attempt: Option<u8>,
    },
    Request {
        path_prefix: Option<String>,
        conn_index: Option<u8>,
    },
    AfterMs {
        ms: u64,
        conn_index: Option<u8>,
    },
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    // registration replies
    Duplicate,
    Retryable { cause: String, retry_after_ms: u64 },
    Permanent(String),
    Exception(String),
    DelayMs(u64),
    NoReply,
    // transport
    DropUdp,
    RefuseTcp,
    CloseConnection,
    BlackholeConnection,
    CloseAllAfterMs(u64),
    // data streams
    ResetAfterBytes(u64),
    DelayConnectMs(u64),
    BarePathDest,
    LowercaseMethod,
    KeepHopHeaders,
    BadSignature,
    UnknownMetadataKey,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub trigger: Trigger,
    pub action: Action,
    /// How many times it may fire; `None` = unlimited.
    pub times: Option<u32>,
}

/// A rule that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid fault rule: {0}")]
pub struct FaultError(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wire {
    trigger: String,
    #[serde(default)]
    conn_index: Option<u8>,
    #[serde(default)]
    attempt: Option<u8>,
    #[serde(default)]
    path_prefix: Option<String>,
    #[serde(default)]
    ms: Option<u64>,
    action: serde_json::Map<String, Value>,
    #[serde(default)]
    times: Option<u32>,
}

fn num(v: &Value, what: &str) -> Result<u64, FaultError> {
    v.as_u64()
        .ok_or_else(|| FaultError(format!("{what} must be a non-negative integer")))
}

fn text(v: &Value, what: &str) -> Result<String, FaultError> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| FaultError(format!("{what} must be a string")))
}

fn parse_action(map: &serde_json::Map<String, Value>) -> Result<Action, FaultError> {
    let get = |k: &str| map.get(k);
    if let Some(v) = get("error") {
        return match v.as_str() {
            Some("EDUPCONN") => Ok(Action::Duplicate),
            _ => Err(FaultError("action.error supports only \"EDUPCONN\"".into())),
        };
    }
    if let Some(v) = get("retryable") {
        let retry_after_ms = get("retryAfterMs")
            .map(|v| num(v, "retryAfterMs"))
            .transpose()?
            .unwrap_or(0);
        return Ok(Action::Retryable {
            cause: text(v, "retryable")?,
            retry_after_ms,
        });
    }
    let key = map
        .keys()
        .next()
        .ok_or_else(|| FaultError("action is empty".into()))?
        .as_str();
    let v = &map[key];
    Ok(match key {
        "permanent" => Action::Permanent(text(v, key)?),
        "exception" => Action::Exception(text(v, key)?),
        "delayMs" => Action::DelayMs(num(v, key)?),
        "noReply" => Action::NoReply,
        "drop_udp" => Action::DropUdp,
        "refuse_tcp" => Action::RefuseTcp,
        "close_connection" => Action::CloseConnection,
        "blackhole_connection" => Action::BlackholeConnection,
        "close_all_after_ms" => Action::CloseAllAfterMs(num(v, key)?),
        "reset_after_bytes" => Action::ResetAfterBytes(num(v, key)?),
        "delay_connect_ms" => Action::DelayConnectMs(num(v, key)?),
        "bare_path_dest" => Action::BarePathDest,
        "lowercase_method" => Action::LowercaseMethod,
        "keep_hop_headers" => Action::KeepHopHeaders,
        "bad_signature" => Action::BadSignature,
        "unknown_metadata_key" => Action::UnknownMetadataKey,
        other => return Err(FaultError(format!("unknown action {other:?}"))),
    })
}

impl FaultRule {
    /// Parses one rule.
    pub fn from_json(v: &Value) -> Result<Self, FaultError> {
        let w: Wire = serde_json::from_value(v.clone()).map_err(|e| FaultError(e.to_string()))?;
        let trigger = match w.trigger.as_str() {
            "register" => Trigger::Register {
                conn_index: w.conn_index,
                attempt: w.attempt,
            },
            "request" => Trigger::Request {
                path_prefix: w.path_prefix,
                conn_index: w.conn_index,
            },
            "after_ms" => Trigger::AfterMs {
                ms: w.ms.unwrap_or(0),
                conn_index: w.conn_index,
            },
            other => return Err(FaultError(format!("unknown trigger {other:?}"))),
        };
        Ok(Self {
            trigger,
            action: parse_action(&w.action)?,
            times: w.times,
        })
    }

    /// Parses a script: a JSON array of rules.
    pub fn script_from_json(text: &str) -> Result<Vec<Self>, FaultError> {
        let v: Value = serde_json::from_str(text).map_err(|e| FaultError(e.to_string()))?;
        let arr = v
            .as_array()
            .ok_or_else(|| FaultError("a script is a JSON array of rules".into()))?;
        arr.iter()
            .enumerate()
            .map(|(i, r)| Self::from_json(r).map_err(|e| FaultError(format!("rule {i}: {}", e.0))))
            .collect()
    }

    /// Whether a registration attempt matches.
    pub fn matches_register(&self, conn_index: u8, attempt: u8) -> bool {
        matches!(&self.trigger, Trigger::Register { conn_index: c, attempt: a }
            if c.is_none_or(|c| c == conn_index) && a.is_none_or(|a| a == attempt))
    }

    /// Whether an eyeball request matches.
    pub fn matches_request(&self, path: &str, conn_index: u8) -> bool {
        matches!(&self.trigger, Trigger::Request { path_prefix: p, conn_index: c }
            if p.as_deref().is_none_or(|p| path.starts_with(p)) && c.is_none_or(|c| c == conn_index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_each_trigger_and_the_spec_action_shapes() {
        let r = FaultRule::from_json(&json!({"trigger":"register","connIndex":0,"attempt":0,"action":{"retryable":"busy","retryAfterMs":250},"times":1})).unwrap();
        assert_eq!(
            r.action,
            Action::Retryable {
                cause: "busy".into(),
                retry_after_ms: 250
            }
        );
        assert!(r.matches_register(0, 0));
        assert!(!r.matches_register(0, 1));
        assert!(!r.matches_register(1, 0));
        let r = FaultRule::from_json(
            &json!({"trigger":"request","pathPrefix":"/bad","action":{"bad_signature":true}}),
        )
        .unwrap();
        assert!(r.matches_request("/bad/x", 3));
        assert!(!r.matches_request("/good", 3));
        let r = FaultRule::from_json(&json!({"trigger":"register","action":{"error":"EDUPCONN"}})).unwrap();
        assert_eq!(r.action, Action::Duplicate);
        let script =
            FaultRule::script_from_json(r#"[{"trigger":"after_ms","ms":10,"action":{"drop_udp":true}}]"#)
                .unwrap();
        assert_eq!(
            script[0].trigger,
            Trigger::AfterMs {
                ms: 10,
                conn_index: None
            }
        );
    }

    #[test]
    fn bad_rules_are_explained() {
        assert!(FaultRule::from_json(&json!({"trigger":"sometimes","action":{"noReply":true}})).is_err());
        assert!(FaultRule::from_json(&json!({"trigger":"register","action":{"explode":true}})).is_err());
        assert!(FaultRule::from_json(&json!({"trigger":"register","action":{}})).is_err());
        let e =
            FaultRule::script_from_json(r#"[{"trigger":"register","action":{"delayMs":"x"}}]"#).unwrap_err();
        assert!(e.0.starts_with("rule 0"), "{e}");
    }
}

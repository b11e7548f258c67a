//! Decoding a document from JSON or YAML, with the JSON path of the first error.

mod split;

use serde::Deserialize as _;

use crate::Config;

/// A syntax or type error in a document, located by JSON path (`rules[2].timeouts.request`) when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// Short lowercase reason, prefixed `invalid JSON:` or `invalid YAML:`.
    pub message: String,
    /// The JSON path from the document root, when the error is about a field.
    pub path: Option<String>,
}

impl Config {
    /// Decodes a JSON document. Unknown fields are ignored; trailing whitespace is allowed, any other trailing
    /// bytes are an error; duplicate keys are an error.
    pub fn from_json_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        // serde_json skips the bytes of ignored (unknown) fields without checking their encoding; the document as
        // a whole must still be UTF-8.
        let text = std::str::from_utf8(bytes).map_err(|e| DecodeError {
            message: format!("invalid JSON: not valid UTF-8 at byte {}", e.valid_up_to()),
            path: None,
        })?;
        // A derived struct also deserialises from a JSON array (fields by position), so `[]` would decode as an
        // empty version-0 document and wipe every route. The document is an object.
        if !text.trim_start().starts_with('{') {
            return Err(DecodeError {
                message: "invalid JSON: the document must be a JSON object".to_owned(),
                path: None,
            });
        }
        // A large document's rules are decoded on several threads; the result is the same document.
        if text.len() >= split::MIN_PARALLEL_BYTES
            && let Some(config) = split::decode(text)
        {
            return Ok(config);
        }
        // Fast path: plain serde_json. Tracking the JSON path costs a wrapper around every value (a third of
        // the decode time of a 10,000-rule document), so the path is recovered only for a document that fails,
        // by decoding it again with tracking; both passes see the same bytes and stop at the same error.
        let mut de = serde_json::Deserializer::from_str(text);
        if let Ok(config) = Config::deserialize(&mut de)
            && de.end().is_ok()
        {
            return Ok(config);
        }
        Err(Self::json_error(text))
    }

    /// The first error of a document that does not decode, with its JSON path.
    fn json_error(text: &str) -> DecodeError {
        let mut de = serde_json::Deserializer::from_str(text);
        match serde_path_to_error::deserialize::<_, Config>(&mut de) {
            Err(e) => DecodeError {
                path: path_of(e.path()),
                message: format!("invalid JSON: {}", short_reason(&e.inner().to_string())),
            },
            Ok(_) => match de.end() {
                Err(e) => DecodeError {
                    message: format!("invalid JSON: {}", short_reason(&e.to_string())),
                    path: None,
                },
                // Both decoders run the same `Deserialize` impls over the same bytes; reaching this would mean
                // they disagree, which is still reported as a decode failure rather than trusted.
                Ok(()) => DecodeError {
                    message: "invalid JSON: the document could not be decoded".to_owned(),
                    path: None,
                },
            },
        }
    }

    /// Decodes a YAML document with the same schema (one document).
    pub fn from_yaml_str(text: &str) -> Result<Self, DecodeError> {
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| DecodeError {
            path: path_of(e.path()),
            message: format!("invalid YAML: {}", short_reason(&e.inner().to_string())),
        })
    }

    /// Decodes JSON when the text starts with `{` (after whitespace), YAML otherwise.
    pub fn from_json_or_yaml(bytes: &[u8]) -> Result<Self, DecodeError> {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first == Some(&b'{') {
            return Self::from_json_slice(bytes);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError {
            message: "invalid YAML: not valid UTF-8".to_owned(),
            path: None,
        })?;
        Self::from_yaml_str(text)
    }

    /// The document as compact JSON.
    pub fn to_json_vec(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail: every map key is a string.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn path_of(path: &serde_path_to_error::Path) -> Option<String> {
    let p = path.to_string();
    (p != "." && !p.is_empty()).then_some(p)
}

/// serde messages end with " at line L column C"; the position is useful, keep it, but drop a trailing period
/// and lowercase the first letter.
fn short_reason(msg: &str) -> String {
    let msg = msg.trim().trim_end_matches('.');
    let mut chars = msg.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

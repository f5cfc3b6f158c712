//! Strict parsing of query strings and conditional headers: anything unknown or malformed is
//! a 400 with a stable code, never silently ignored.

use std::collections::HashMap;

use axum::http::HeaderMap;
use axum::http::header;

use crate::command::Condition;
use crate::error::ApiError;
use crate::service::Consistency;

/// Query parameters, checked against the names an endpoint accepts.
pub struct Params(HashMap<String, String>);

impl Params {
    pub fn new(raw: HashMap<String, String>, allowed: &[&str]) -> Result<Self, ApiError> {
        if let Some(unknown) = raw.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(
                "unknown_parameter",
                format!("unknown query parameter {unknown:?}; accepted: {}", allowed.join(", ")),
            ));
        }
        Ok(Params(raw))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn consistency(&self) -> Result<Consistency, ApiError> {
        self.str("consistency").map_or(Ok(Consistency::Linearizable), str::parse)
    }

    /// A positive integer parameter within `max`.
    pub fn number(&self, name: &str, code: &str, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(raw) = self.str(name) else {
            return Ok(None);
        };
        match raw.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(ApiError::bad_request(code, format!("{name} must be an integer from 1 to {max}, not {raw:?}"))),
        }
    }
}

/// Longest TTL accepted: ten years.
pub const MAX_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// `If-Match: "<revision>"` / `If-None-Match: *` → the write's precondition.
pub fn condition(headers: &HeaderMap, allow_if_none_match: bool) -> Result<Condition, ApiError> {
    let text = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
        headers
            .get(&name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_string())
                    .map_err(|_| ApiError::bad_request("invalid_precondition", format!("{name} is not valid text")))
            })
            .transpose()
    };
    let if_match = text(header::IF_MATCH)?;
    let if_none_match = text(header::IF_NONE_MATCH)?;
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("invalid_precondition", "use either If-Match or If-None-Match, not both"))
        }
        (Some(m), None) => {
            let rev = m.trim_matches('"');
            match rev.parse::<u64>() {
                Ok(r) if r > 0 && !m.starts_with("W/") => Ok(Condition::ModRevision(r)),
                _ => Err(ApiError::bad_request(
                    "invalid_precondition",
                    format!("If-Match must be a revision in quotes, like \"42\"; got {m:?}"),
                )),
            }
        }
        (None, Some(n)) if allow_if_none_match && n == "*" => Ok(Condition::Absent),
        (None, Some(n)) => Err(ApiError::bad_request(
            "invalid_precondition",
            format!("only If-None-Match: * is supported on PUT; got {n:?}"),
        )),
        (None, None) => Ok(Condition::None),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn conditions_parse_strictly() {
        let mut h = HeaderMap::new();
        assert_eq!(condition(&h, true).unwrap(), Condition::None);
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"42\""));
        assert_eq!(condition(&h, true).unwrap(), Condition::ModRevision(42));
        h.insert(header::IF_MATCH, HeaderValue::from_static("abc"));
        assert_eq!(condition(&h, true).unwrap_err().code, "invalid_precondition");
        h.insert(header::IF_MATCH, HeaderValue::from_static("W/\"4\""));
        assert!(condition(&h, true).is_err());
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert_eq!(condition(&h, true).unwrap(), Condition::Absent);
        assert!(condition(&h, false).is_err());
        h.insert(header::IF_MATCH, HeaderValue::from_static("\"1\""));
        assert!(condition(&h, true).is_err());
    }

    #[test]
    fn params_reject_unknown_and_bad_numbers() {
        let raw = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(Params::new(raw(&[("bogus", "1")]), &["ttl"]).err().unwrap().code, "unknown_parameter");
        let p = Params::new(raw(&[("ttl", "0")]), &["ttl"]).unwrap();
        assert_eq!(p.number("ttl", "invalid_ttl", 10).unwrap_err().code, "invalid_ttl");
        let p = Params::new(raw(&[("ttl", "5"), ("consistency", "weird")]), &["ttl", "consistency"]).unwrap();
        assert_eq!(p.number("ttl", "invalid_ttl", 10).unwrap(), Some(5));
        assert_eq!(p.consistency().unwrap_err().code, "invalid_consistency");
    }
}

//! Decoding of `/api` JSON bodies field by field, so that every error names its field
//! (`max_calls: invalid type: string "x", expected u32`, `[3].username: unknown field`,
//! `cidrs[1]: must be a string`) — serde's derive reports the problem but not where it is.
//!
//! Owns: JSON syntax and type errors. Whether a value is acceptable (a realm exists, a CIDR is
//! well formed) is the store's business (`store::validate`).

use super::api::ApiError;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The request body as JSON; an empty or malformed body is a 400 naming `body`.
pub fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("body", "a JSON body is required"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("body", format!("invalid JSON: {e}")))
}

/// The members of one JSON object, taken out one by one.
pub struct Fields {
    map: Map<String, Value>,
    /// Prepended to field names: `""`, `"[2]."` in a list body, `"route."` in a nested object.
    prefix: String,
}

impl Fields {
    /// `value` must be an object whose members are all in `allowed`; `fixed` members are
    /// recognised but refused (`name: cannot be changed`), for the identity of a PATCH target.
    pub fn object(
        value: Value,
        prefix: &str,
        allowed: &[&str],
        fixed: &[&str],
    ) -> Result<Fields, ApiError> {
        let Value::Object(map) = value else {
            let what = prefix.trim_end_matches('.');
            let what = if what.is_empty() { "body" } else { what };
            return Err(ApiError::bad_request(what, "must be a JSON object"));
        };
        for key in map.keys() {
            let field = format!("{prefix}{key}");
            if fixed.contains(&key.as_str()) {
                return Err(ApiError::bad_request(
                    &field,
                    "cannot be changed (delete and create instead)",
                ));
            }
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::bad_request(
                    &field,
                    format!("unknown field (known: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(Fields {
            map,
            prefix: prefix.to_string(),
        })
    }

    pub fn field(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn decode<T: DeserializeOwned>(&self, name: &str, v: Value) -> Result<T, ApiError> {
        serde_json::from_value(v).map_err(|e| ApiError::bad_request(&self.field(name), e))
    }

    /// Absent or `null`: None.
    pub fn optional<T: DeserializeOwned>(&mut self, name: &str) -> Result<Option<T>, ApiError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => self.decode(name, v).map(Some),
        }
    }

    /// Absent: None; `null`: `Some(None)` (clear it); else `Some(Some(value))`.
    pub fn nullable<T: DeserializeOwned>(
        &mut self,
        name: &str,
    ) -> Result<Option<Option<T>>, ApiError> {
        match self.map.remove(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => self.decode(name, v).map(|x| Some(Some(x))),
        }
    }

    pub fn required<T: DeserializeOwned>(&mut self, name: &str) -> Result<T, ApiError> {
        self.optional(name)?
            .ok_or_else(|| ApiError::bad_request(&self.field(name), "required"))
    }

    /// A list of strings; a bad element is named by its index (`cidrs[1]`). Absent or `null`:
    /// None.
    pub fn strings(&mut self, name: &str) -> Result<Option<Vec<String>>, ApiError> {
        let field = self.field(name);
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(ApiError::bad_request(
                        &format!("{field}[{i}]"),
                        "must be a string",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(ApiError::bad_request(&field, "must be a list of strings")),
        }
    }

    /// A nested object (e.g. `route`), decoded with its own field prefix. Absent or `null`:
    /// None.
    pub fn object_field(
        &mut self,
        name: &str,
        allowed: &[&str],
    ) -> Result<Option<Fields>, ApiError> {
        let prefix = format!("{}.", self.field(name));
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Fields::object(v, &prefix, allowed, &[]).map(Some),
        }
    }

    /// An object of string values (a number's `headers`), in key order; a non-string value is
    /// named `headers.Name`. Absent or `null`: None.
    pub fn string_map(&mut self, name: &str) -> Result<Option<Vec<(String, String)>>, ApiError> {
        let field = self.field(name);
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k, s)),
                    _ => Err(ApiError::bad_request(
                        &format!("{field}.{k}"),
                        "must be a string",
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(ApiError::bad_request(
                &field,
                "must be an object of header names to string values",
            )),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.get(name).is_some_and(|v| !v.is_null())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(e: ApiError) -> String {
        e.message().to_string()
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            message(parse(b"").unwrap_err()),
            "body: a JSON body is required"
        );
        assert!(message(parse(b"{").unwrap_err()).starts_with("body: invalid JSON"));
        assert_eq!(
            message(Fields::object(json!([1]), "", &[], &[]).err().unwrap()),
            "body: must be a JSON object"
        );
        assert!(message(
            Fields::object(json!({"x": 1}), "[2].", &["a"], &[])
                .err()
                .unwrap()
        )
        .starts_with("[2].x: unknown field"));
        assert_eq!(
            message(
                Fields::object(json!({"name": 1}), "", &["a"], &["name"])
                    .err()
                    .unwrap()
            ),
            "name: cannot be changed (delete and create instead)"
        );
        let mut f = Fields::object(
            json!({"n": "x", "l": ["a", 2], "m": {"A": 1}, "z": null}),
            "",
            &["n", "l", "m", "z", "absent"],
            &[],
        )
        .unwrap();
        assert!(message(f.optional::<u32>("n").unwrap_err()).starts_with("n: invalid type"));
        assert_eq!(
            message(f.strings("l").unwrap_err()),
            "l[1]: must be a string"
        );
        assert_eq!(
            message(f.string_map("m").unwrap_err()),
            "m.A: must be a string"
        );
        assert_eq!(f.nullable::<u32>("z").unwrap(), Some(None));
        assert_eq!(f.nullable::<u32>("absent").unwrap(), None);
        assert_eq!(
            message(f.required::<String>("absent").unwrap_err()),
            "absent: required"
        );
        let mut r = Fields::object(json!({"route": {"trunk": 1}}), "", &["route"], &[])
            .unwrap()
            .object_field("route", &["trunk"])
            .unwrap()
            .unwrap();
        assert!(message(r.optional::<String>("trunk").unwrap_err()).starts_with("route.trunk: "));
    }
}

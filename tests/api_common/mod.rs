//! Test helpers for the provisioning API: a std-only HTTP/1.1 client, and a checker that holds
//! every answer to `src/admin/openapi.json` — the (path template, method, status) must be
//! documented and a JSON body must match the documented schema.
//!
//! The schema validator is the tests' own and small: `$ref`, `type`, `nullable`, `enum`,
//! `required`, `properties`, `additionalProperties`, `items`, `oneOf`, `minLength`, `maxLength`,
//! `minItems`, `maxItems`, `minimum`, `maximum` — what the document uses (`pattern` is not
//! checked: no regex engine here).
#![allow(dead_code)]

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The contract, as the repository has it (the served copy is compared with it).
pub const OPENAPI_TEXT: &str = include_str!("../../src/admin/openapi.json");

pub fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(OPENAPI_TEXT).expect("openapi.json parses"))
}

/// Every (template, method, status) the tests saw, for coverage reports in failures.
pub fn seen() -> &'static Mutex<BTreeSet<(String, String, u16)>> {
    static SEEN: OnceLock<Mutex<BTreeSet<(String, String, u16)>>> = OnceLock::new();
    SEEN.get_or_init(|| Mutex::new(BTreeSet::new()))
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The body as JSON (Null when empty or not JSON).
    pub json: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `error` text of an error answer.
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`). `token` None sends no
/// Authorization; `raw_auth` (if set) is sent as the whole Authorization value instead.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect admin {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: sipedge-api-test\r\nConnection: close\r\n"
    );
    if let Some(a) = auth {
        req.push_str(&format!("Authorization: {a}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(b) = body {
        req.push_str(b);
    }
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read admin response {method} {path}: {e}"));
    let r = crate::common::parse_http_response(&raw).unwrap_or_else(|| {
        panic!(
            "unparseable HTTP response to {method} {path}: {:?}",
            String::from_utf8_lossy(&raw)
        )
    });
    let json = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    Reply {
        status: r.status,
        headers: r.headers,
        body: r.body,
        json,
    }
}

/// An API client with the bearer token whose every answer is checked against the document.
#[derive(Clone)]
pub struct Api {
    pub addr: SocketAddr,
    pub token: String,
}

impl Api {
    pub fn new(addr: SocketAddr, token: &str) -> Api {
        Api {
            addr,
            token: token.to_string(),
        }
    }

    /// Sends with the token, checks the answer against openapi.json, returns it.
    #[track_caller]
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let text = body.map(|b| b.to_string());
        self.call_raw(method, path, text.as_deref())
    }

    /// Like [`call`](Self::call) with a raw (possibly malformed) body.
    #[track_caller]
    pub fn call_raw(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let r = http(
            self.addr,
            method,
            path,
            Some(&format!("Bearer {}", self.token)),
            body,
        );
        if let Err(e) = conforms(method, path, &r) {
            panic!(
                "{method} {path} answered {} against openapi.json: {e}\nbody: {}",
                r.status, r.body
            );
        }
        r
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Reply {
        self.call("GET", path, None)
    }

    #[track_caller]
    pub fn post(&self, path: &str, body: Value) -> Reply {
        self.call("POST", path, Some(&body))
    }

    #[track_caller]
    pub fn patch(&self, path: &str, body: Value) -> Reply {
        self.call("PATCH", path, Some(&body))
    }

    #[track_caller]
    pub fn delete(&self, path: &str) -> Reply {
        self.call("DELETE", path, None)
    }

    /// Asserts the status; returns the JSON body.
    #[track_caller]
    pub fn expect(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let r = self.call(method, path, body.as_ref());
        assert_eq!(
            r.status, status,
            "{method} {path} {body:?}: expected {status}, got {} {}",
            r.status, r.body
        );
        r.json
    }

    /// Asserts a 400 whose error starts with `field: `; returns the error text.
    #[track_caller]
    pub fn expect_bad(&self, method: &str, path: &str, body: Value, field: &str) -> String {
        let r = self.call(method, path, Some(&body));
        assert_eq!(r.status, 400, "{method} {path} {body}: {}", r.body);
        let e = r.error().to_string();
        assert!(
            e.starts_with(&format!("{field}: ")),
            "{method} {path} {body}: the error should name {field:?}: {e:?}"
        );
        e
    }
}

// ---- matching requests to the document -----------------------------------------------------

/// The documented path template for a concrete path (query stripped), e.g.
/// `/api/v1/numbers/%2B1555` -> `/api/v1/numbers/{number}`.
pub fn template_of(path: &str) -> Option<String> {
    let path = path.split('?').next().unwrap_or(path);
    let segs: Vec<&str> = path.split('/').collect();
    let paths = openapi()["paths"].as_object()?;
    let mut best: Option<(usize, &String)> = None;
    for t in paths.keys() {
        let tsegs: Vec<&str> = t.split('/').collect();
        if tsegs.len() != segs.len() {
            continue;
        }
        let mut literal = 0;
        let ok = tsegs.iter().zip(&segs).all(|(t, s)| {
            if t.starts_with('{') && t.ends_with('}') {
                !s.is_empty()
            } else {
                literal += 1;
                t == s
            }
        });
        if ok && best.is_none_or(|(l, _)| literal > l) {
            best = Some((literal, t));
        }
    }
    best.map(|(_, t)| t.clone())
}

/// Follows a local `$ref` (`#/components/...`).
pub fn resolve(v: &Value) -> &Value {
    let mut v = v;
    for _ in 0..16 {
        let Some(r) = v.get("$ref").and_then(Value::as_str) else {
            return v;
        };
        let ptr = r.strip_prefix('#').expect("local $ref");
        v = openapi()
            .pointer(ptr)
            .unwrap_or_else(|| panic!("dangling $ref {r}"));
    }
    panic!("$ref loop")
}

/// The documented operation, if any.
pub fn operation(template: &str, method: &str) -> Option<&'static Value> {
    openapi()["paths"]
        .get(template)?
        .get(method.to_ascii_lowercase())
}

/// Checks an answer against the document: documented status, JSON content type and schema.
pub fn conforms(method: &str, path: &str, r: &Reply) -> Result<(), String> {
    let template = template_of(path).ok_or("path not documented")?;
    let op = operation(&template, method)
        .ok_or_else(|| format!("{method} not documented on {template}"))?;
    let resp = op["responses"]
        .get(r.status.to_string())
        .map(resolve)
        .ok_or_else(|| format!("status {} not documented for {method} {template}", r.status))?;
    seen()
        .lock()
        .unwrap()
        .insert((template.clone(), method.to_string(), r.status));
    match resp.get("content") {
        None => {
            if !r.body.is_empty() {
                return Err(format!("documented without a body, got {:?}", r.body));
            }
        }
        Some(content) => {
            if let Some(media) = content.get("application/json") {
                let ct = r.header("content-type").unwrap_or("");
                if !ct.starts_with("application/json") {
                    return Err(format!("content-type {ct:?}, documented application/json"));
                }
                let body: Value =
                    serde_json::from_str(&r.body).map_err(|e| format!("body is not JSON: {e}"))?;
                validate(&media["schema"], &body, "$")?;
            }
        }
    }
    Ok(())
}

// ---- the schema validator ------------------------------------------------------------------

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        other => panic!("validator: unknown type {other}"),
    }
}

/// Validates `v` against `schema`; the error says where (`$.route.uri`).
pub fn validate(schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let s = resolve(schema);
    if v.is_null() {
        return if s["nullable"] == true || s.as_object().is_some_and(|o| o.is_empty()) {
            Ok(())
        } else {
            Err(format!("{at}: null where the schema is not nullable"))
        };
    }
    if let Some(variants) = s.get("oneOf").and_then(Value::as_array) {
        let matching: Vec<usize> = variants
            .iter()
            .enumerate()
            .filter(|(_, variant)| validate(variant, v, at).is_ok())
            .map(|(i, _)| i)
            .collect();
        if matching.len() != 1 {
            let why: Vec<String> = variants
                .iter()
                .filter_map(|variant| validate(variant, v, at).err())
                .collect();
            return Err(format!(
                "{at}: must match exactly one oneOf variant, matches {matching:?} ({})",
                why.join("; ")
            ));
        }
    }
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        if !type_ok(t, v) {
            return Err(format!("{at}: expected {t}, got {v}"));
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            return Err(format!("{at}: {v} is not one of {e:?}"));
        }
    }
    if let Some(x) = v.as_str() {
        let n = x.chars().count() as u64;
        if s.get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            return Err(format!("{at}: shorter than minLength"));
        }
        if s.get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            return Err(format!("{at}: longer than maxLength"));
        }
    }
    if let Some(x) = v.as_f64() {
        if s.get("minimum").and_then(Value::as_f64).is_some_and(|m| {
            if s["exclusiveMinimum"] == true {
                x <= m
            } else {
                x < m
            }
        }) {
            return Err(format!("{at}: {x} below the minimum"));
        }
        if s.get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| x > m)
        {
            return Err(format!("{at}: {x} above the maximum"));
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if s.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            return Err(format!("{at}: fewer than minItems"));
        }
        if s.get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            return Err(format!("{at}: more than maxItems"));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item_schema, item, &format!("{at}[{i}]"))?;
            }
        }
    }
    if let Some(obj) = v.as_object() {
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                return Err(format!("{at}: required member {r:?} missing"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, val) in obj {
            let here = format!("{at}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(ps) => validate(ps, val, &here)?,
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!("{here}: not in the schema"));
                    }
                    Some(extra @ Value::Object(_)) => validate(extra, val, &here)?,
                    _ => {}
                },
            }
        }
    }
    Ok(())
}

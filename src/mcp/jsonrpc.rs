//! JSON-RPC 2.0 messages as MCP's stdio transport carries them: one JSON
//! object per line. Incoming lines are parsed at the edge into one closed
//! enum; errors map to JSON-RPC codes in exactly one place (`RpcError::code`).
//! Ids are kept as the exact text the client sent and echoed unchanged.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// A request id exactly as the client wrote it: a JSON string or number,
/// echoed byte for byte (JSON-RPC 2.0 §5: the response id "MUST be the same
/// as the value of the id member in the Request Object"). Kept as text
/// because serde_json reads an integer beyond 64 bits as a float, and
/// `arbitrary_precision` would change number handling for the whole crate
/// (the relay's signatures rely on `float_roundtrip`).
#[derive(Debug, Clone, PartialEq)]
pub struct Id(String);

impl Id {
    /// The id of an answer to a message whose own id could not be read.
    pub fn null() -> Id {
        Id("null".into())
    }

    /// A valid id is a string or a number (JSON-RPC 2.0 §4; MCP forbids null).
    fn from_raw(raw: &RawValue) -> Option<Id> {
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'"' | b'-' | b'0'..=b'9') => Some(Id(text.to_string())),
            _ => None,
        }
    }

    /// The id as JSON text, ready to splice into a message.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The id as a JSON value (a huge integer becomes a float: for logs and
    /// tests, never for answers).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

/// The kinds of message a client sends us.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// Has `method` and a non-null `id`: must be answered.
    Request {
        id: Id,
        method: String,
        params: Value,
    },
    /// Has `method` and no `id`: never answered.
    Notification { method: String, params: Value },
    /// Has `id` and `result`/`error` but no `method`: a reply to a request of
    /// ours. We send none, so these are ignored.
    Response,
}

#[derive(Debug, PartialEq)]
pub enum RpcError {
    Parse(String),
    InvalidRequest(String),
    MethodNotFound(String),
    InvalidParams(String),
    Internal(String),
}

impl RpcError {
    pub fn code(&self) -> i64 {
        match self {
            RpcError::Parse(_) => -32700,
            RpcError::InvalidRequest(_) => -32600,
            RpcError::MethodNotFound(_) => -32601,
            RpcError::InvalidParams(_) => -32602,
            RpcError::Internal(_) => -32603,
        }
    }

    pub fn message(&self) -> String {
        match self {
            RpcError::Parse(m) => format!("Parse error: {m}"),
            RpcError::InvalidRequest(m) => format!("Invalid Request: {m}"),
            RpcError::MethodNotFound(m) => format!("Method not found: {m}"),
            RpcError::InvalidParams(m) => format!("Invalid params: {m}"),
            RpcError::Internal(m) => format!("Internal error: {m}"),
        }
    }
}

/// The members of a message we look at, read in one pass over the line.
/// `id`, `result` and `error` stay raw text; a member that is present but
/// `null` is `Some` (see `present`), so a null id is told from no id.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    jsonrpc: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    method: Option<Value>,
    #[serde(default)]
    params: Option<Value>,
    #[serde(default, borrow, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    error: Option<&'a RawValue>,
}

/// Only called for members that are there: wraps even `null` in `Some`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// Parses one line. On failure returns the error and, when it could be
/// recovered, the id to answer with (else the answer carries `id: null`).
pub fn parse(line: &str) -> Result<Message, (Id, RpcError)> {
    let env: Envelope = serde_json::from_str(line).map_err(|e| {
        let err = if e.is_syntax() || e.is_eof() {
            RpcError::Parse(e.to_string())
        } else {
            RpcError::InvalidRequest(match line.trim_start().as_bytes().first() {
                Some(b'[') => "batches (JSON arrays) are not supported".into(),
                Some(b'{') => e.to_string(),
                _ => "expected a JSON object".into(),
            })
        };
        (Id::null(), err)
    })?;
    classify(env)
}

// Ordered from most to least constrained: a request needs method + id, a
// notification needs method only, a response needs id and no method.
// Checking the looser shapes first would, e.g., take a request for a response.
fn classify(env: Envelope) -> Result<Message, (Id, RpcError)> {
    let id = env.id.map(Id::from_raw);
    let answer_id = id.clone().flatten().unwrap_or_else(Id::null);
    if let Some(v) = &env.jsonrpc {
        if v != "2.0" {
            return Err((
                answer_id,
                RpcError::InvalidRequest("\"jsonrpc\" must be \"2.0\"".into()),
            ));
        }
    }
    let params = env.params.unwrap_or(Value::Null);
    if !(params.is_null() || params.is_object() || params.is_array()) {
        return Err((
            answer_id,
            RpcError::InvalidRequest("\"params\" must be an object".into()),
        ));
    }
    match (env.method, id) {
        (Some(Value::String(method)), Some(Some(id))) => {
            Ok(Message::Request { id, method, params })
        }
        (Some(Value::String(_)), Some(None)) => Err((
            Id::null(),
            RpcError::InvalidRequest("\"id\" must be a string or a number".into()),
        )),
        (Some(Value::String(method)), None) => Ok(Message::Notification { method, params }),
        (Some(_), _) => Err((
            answer_id,
            RpcError::InvalidRequest("\"method\" must be a string".into()),
        )),
        (None, Some(_)) if env.result.is_some() || env.error.is_some() => Ok(Message::Response),
        (None, _) => Err((
            answer_id,
            RpcError::InvalidRequest("missing \"method\"".into()),
        )),
    }
}

/// A success answer whose result is already JSON text (e.g. the cached
/// `tools/list`), so nothing is serialised twice.
pub fn success_raw(id: &Id, result_json: &str) -> String {
    format!(
        "{{\"id\":{},\"jsonrpc\":\"2.0\",\"result\":{result_json}}}",
        id.as_json()
    )
}

pub fn success(id: &Id, result: &Value) -> String {
    success_raw(id, &result.to_string())
}

pub fn failure(id: &Id, err: &RpcError) -> String {
    let error = json!({"code": err.code(), "message": err.message()});
    format!(
        "{{\"error\":{error},\"id\":{},\"jsonrpc\":\"2.0\"}}",
        id.as_json()
    )
}

pub fn notification(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_requests_notifications_and_responses() {
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":0,"method":"ping"}"#).unwrap(),
            Message::Request {
                id: Id("0".into()),
                method: "ping".into(),
                params: Value::Null
            }
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":"a","method":"x","params":{}}"#).unwrap(),
            Message::Request {
                id: Id("\"a\"".into()),
                method: "x".into(),
                params: json!({})
            }
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap(),
            Message::Notification {
                method: "notifications/initialized".into(),
                params: Value::Null
            }
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":5,"result":{}}"#).unwrap(),
            Message::Response
        );
    }

    #[test]
    fn rejects_what_is_not_a_request() {
        assert_eq!(parse("{oops").unwrap_err().1.code(), -32700);
        assert_eq!(parse("[1]").unwrap_err().1.code(), -32600);
        assert_eq!(parse("3").unwrap_err().1.code(), -32600);
        assert_eq!(
            parse(r#"{"id":1}"#).unwrap_err(),
            (
                Id("1".into()),
                RpcError::InvalidRequest("missing \"method\"".into())
            )
        );
        assert_eq!(
            parse(r#"{"id":null,"method":"x"}"#).unwrap_err().1.code(),
            -32600
        );
        assert_eq!(
            parse(r#"{"id":1,"method":7}"#).unwrap_err().1.code(),
            -32600
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#)
                .unwrap_err()
                .1
                .code(),
            -32600
        );
        assert_eq!(
            parse(r#"{"id":1,"method":"x","params":"s"}"#)
                .unwrap_err()
                .1
                .code(),
            -32600
        );
    }

    #[test]
    fn ids_come_back_exactly_as_sent() {
        for id in [
            "123456789012345678901234567890",
            "-0.5e3",
            "\"x\\u00e9\"",
            "1e400",
        ] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
            let Ok(Message::Request { id: got, .. }) = parse(&line) else {
                panic!("{line}")
            };
            assert_eq!(got.as_json(), id);
            assert_eq!(
                success(&got, &json!({})),
                format!(r#"{{"id":{id},"jsonrpc":"2.0","result":{{}}}}"#)
            );
        }
        // An error answer keeps it too.
        let (id, err) =
            parse(r#"{"jsonrpc":"1.0","id":123456789012345678901234567890,"method":"x"}"#)
                .unwrap_err();
        assert!(failure(&id, &err).contains(r#""id":123456789012345678901234567890"#));
        // Null, booleans, objects: not ids.
        for bad in ["null", "true", "{}", "[1]"] {
            let line = format!(r#"{{"id":{bad},"method":"x"}}"#);
            assert_eq!(
                parse(&line).unwrap_err(),
                (
                    Id::null(),
                    RpcError::InvalidRequest("\"id\" must be a string or a number".into())
                )
            );
        }
    }

    #[test]
    fn pins_wire_strings() {
        assert_eq!(
            success(&Id("1".into()), &json!({})),
            r#"{"id":1,"jsonrpc":"2.0","result":{}}"#
        );
        assert_eq!(
            failure(&Id::null(), &RpcError::MethodNotFound("x".into())),
            r#"{"error":{"code":-32601,"message":"Method not found: x"},"id":null,"jsonrpc":"2.0"}"#
        );
    }
}

//! JSON-RPC 2.0 messages as MCP's stdio transport carries them: one JSON
//! object per line. Incoming lines are parsed at the edge into one closed
//! enum; errors map to JSON-RPC codes in exactly one place (`RpcError::code`).

use serde_json::{json, Map, Value};

/// The kinds of message a client sends us.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    /// Has `method` and a non-null `id`: must be answered.
    Request {
        id: Value,
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

/// A valid id is a string or a number (JSON-RPC 2.0 §4; MCP forbids null).
fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_number()
}

/// Parses one line. On failure returns the error and, when it could be
/// recovered, the id to answer with (else the answer carries `id: null`).
pub fn parse(line: &str) -> Result<Incoming, (Value, RpcError)> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| (Value::Null, RpcError::Parse(e.to_string())))?;
    let Value::Object(obj) = v else {
        let what = if v.is_array() {
            "batches (JSON arrays) are not supported"
        } else {
            "expected a JSON object"
        };
        return Err((Value::Null, RpcError::InvalidRequest(what.into())));
    };
    classify(obj)
}

// Ordered from most to least constrained: a request needs method + id, a
// notification needs method only, a response needs id and no method.
// Checking the looser shapes first would, e.g., take a request for a response.
fn classify(mut obj: Map<String, Value>) -> Result<Incoming, (Value, RpcError)> {
    let id = obj.remove("id");
    let answer_id = id.clone().filter(valid_id).unwrap_or(Value::Null);
    if let Some(v) = obj.get("jsonrpc") {
        if v != "2.0" {
            return Err((
                answer_id,
                RpcError::InvalidRequest("\"jsonrpc\" must be \"2.0\"".into()),
            ));
        }
    }
    let params = obj.remove("params").unwrap_or(Value::Null);
    if !(params.is_null() || params.is_object() || params.is_array()) {
        return Err((
            answer_id,
            RpcError::InvalidRequest("\"params\" must be an object".into()),
        ));
    }
    match (obj.remove("method"), id) {
        (Some(Value::String(method)), Some(id)) if valid_id(&id) => {
            Ok(Incoming::Request { id, method, params })
        }
        (Some(Value::String(_)), Some(_)) => Err((
            Value::Null,
            RpcError::InvalidRequest("\"id\" must be a string or a number".into()),
        )),
        (Some(Value::String(method)), None) => Ok(Incoming::Notification { method, params }),
        (Some(_), _) => Err((
            answer_id,
            RpcError::InvalidRequest("\"method\" must be a string".into()),
        )),
        (None, Some(_)) if obj.contains_key("result") || obj.contains_key("error") => {
            Ok(Incoming::Response)
        }
        (None, _) => Err((
            answer_id,
            RpcError::InvalidRequest("missing \"method\"".into()),
        )),
    }
}

pub fn success(id: &Value, result: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
}

pub fn failure(id: &Value, err: &RpcError) -> String {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": err.code(), "message": err.message()}})
        .to_string()
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
            Incoming::Request {
                id: json!(0),
                method: "ping".into(),
                params: Value::Null
            }
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":"a","method":"x","params":{}}"#).unwrap(),
            Incoming::Request {
                id: json!("a"),
                method: "x".into(),
                params: json!({})
            }
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap(),
            Incoming::Notification {
                method: "notifications/initialized".into(),
                params: Value::Null
            }
        );
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","id":5,"result":{}}"#).unwrap(),
            Incoming::Response
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
                json!(1),
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
    fn pins_wire_strings() {
        assert_eq!(
            success(&json!(1), json!({})),
            r#"{"id":1,"jsonrpc":"2.0","result":{}}"#
        );
        assert_eq!(
            failure(&Value::Null, &RpcError::MethodNotFound("x".into())),
            r#"{"error":{"code":-32601,"message":"Method not found: x"},"id":null,"jsonrpc":"2.0"}"#
        );
    }
}

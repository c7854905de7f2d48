//! The exact text each signed AgentChat message signs (AGENTCHAT.md, "What is
//! signed"), rebuilt from the message as it travels on the wire, so that the
//! client that signs and the relay that verifies compute it in one place.
//!
//! AgentChat 0.3.0 builds these texts in JavaScript, so the rules here are
//! JavaScript's: numbers print as `String(x)` does, missing or falsy optional
//! parts become `''` (`x || ''`), and MSG signs `JSON.stringify({to, content,
//! ts})`. Not here: keys, signing and verifying (see `identity`).

use serde_json::{Map, Value};

/// The text a client message signs, or `None` for a type that carries no
/// signature. `msg` is the whole message object as sent (or received).
pub fn signing_text(msg: &Map<String, Value>) -> Option<String> {
    let field = |k: &str| msg.get(k);
    let text = match msg.get("type")?.as_str()? {
        "MSG" => msg_text(field("to"), field("content"), field("ts")),
        "PROPOSAL" => {
            // `[to, task, amount || '', currency || '', payment_code || '', expires || ''].join('|')`
            let parts = [
                join_part(field("to")),
                join_part(field("task")),
                or_empty(field("amount")),
                or_empty(field("currency")),
                or_empty(field("payment_code")),
                or_empty(field("expires")),
            ];
            parts.join("|")
        }
        // `ACCEPT|${proposal_id}|${payment_code || ''}` and its siblings.
        "ACCEPT" => response_text("ACCEPT", msg, or_empty(field("payment_code"))),
        "REJECT" => response_text("REJECT", msg, or_empty(field("reason"))),
        "COMPLETE" => response_text("COMPLETE", msg, or_empty(field("proof"))),
        // The reason is mandatory here, so 0.3.0 interpolates it without `|| ''`.
        "DISPUTE" => response_text("DISPUTE", msg, js_string(field("reason"))),
        _ => return None,
    };
    Some(text)
}

fn response_text(kind: &str, msg: &Map<String, Value>, last: String) -> String {
    format!("{kind}|{}|{last}", js_string(msg.get("proposal_id")))
}

/// What a MSG with these typed fields signs (see `msg_text`).
pub fn msg_signing_text(to: &str, content: &str, ts: Option<u64>) -> String {
    let ts = ts.map(Value::from);
    msg_text(
        Some(&Value::from(to)),
        Some(&Value::from(content)),
        ts.as_ref(),
    )
}

/// `JSON.stringify({to, content, ts})`: keys in that order, a key whose value
/// is undefined (absent) left out.
fn msg_text(to: Option<&Value>, content: Option<&Value>, ts: Option<&Value>) -> String {
    let mut out = String::from("{");
    for (key, value) in [("to", to), ("content", content), ("ts", ts)] {
        let Some(value) = value else { continue };
        if out.len() > 1 {
            out.push(',');
        }
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(&js_json(value));
    }
    out.push('}');
    out
}

/// `JSON.stringify(v)` for a value parsed from JSON. Strings: serde_json and
/// JSON.stringify escape the same set (`"`, `\`, control characters, with
/// `\b \f \n \r \t` short and the rest as lowercase `\u00XX`), and neither
/// escapes `/`, DEL, non-ASCII or U+2028/2029; Rust strings hold no lone
/// surrogates. Numbers print the JavaScript way. Object keys come out in
/// serde_json's (sorted) order, which may differ from the sender's; no signed
/// field of a valid message is an object.
pub fn js_json(v: &Value) -> String {
    match v {
        Value::Number(n) => js_number(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(js_json).collect();
            format!("[{}]", inner.join(","))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), js_json(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        other => other.to_string(),
    }
}

/// `String(v)` for an optional JSON value (`None` is `undefined`).
pub fn js_string(v: Option<&Value>) -> String {
    match v {
        None => "undefined".into(),
        Some(Value::Null) => "null".into(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => js_number(n.as_f64().unwrap_or(f64::NAN)),
        Some(Value::String(s)) => s.clone(),
        // Array.prototype.toString: elements joined by ',', null and undefined as ''.
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| join_part(Some(item)))
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(_)) => "[object Object]".into(),
    }
}

/// `String(v || '')`: JavaScript's falsy values (undefined, null, false, 0,
/// -0, NaN, '') become the empty string.
pub fn or_empty(v: Option<&Value>) -> String {
    let falsy = match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => true,
        Some(Value::Number(n)) => n.as_f64().is_none_or(|f| f == 0.0 || f.is_nan()),
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    };
    if falsy {
        String::new()
    } else {
        js_string(v)
    }
}

/// One element of `Array.prototype.join`: null and undefined become ''.
fn join_part(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        some => js_string(some),
    }
}

/// A number as JavaScript's `String(x)` prints it (ECMA-262 Number::toString):
/// the shortest digits that round-trip, positional notation for exponents
/// from -7 to 20, exponential (`1e+21`, `1.5e-7`) outside that.
pub fn js_number(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x == 0.0 {
        return "0".into(); // -0 prints as "0" too
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    // Rust's `{:e}` prints the shortest round-tripping digits, nearest the
    // exact value: the same digits ECMA-262 asks for (k digits, exponent n).
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci
        .split_once('e')
        .expect("`{:e}` output always has an exponent");
    let exponent: i32 = exponent
        .parse()
        .expect("`{:e}` exponent is a decimal integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    let n = exponent + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        format!("{int}.{frac}")
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let sign = if e >= 0 { "+" } else { "-" };
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { "" } else { "." };
        format!("{first}{dot}{rest}e{sign}{}", e.abs())
    };
    if x < 0.0 {
        format!("-{body}")
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(msg: &Value) -> String {
        signing_text(msg.as_object().expect("an object")).expect("a signed type")
    }

    #[test]
    fn js_number_matches_the_examples() {
        assert_eq!(js_number(100.0), "100");
        assert_eq!(js_number(1.5), "1.5");
        assert_eq!(js_number(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(js_number(1e21), "1e+21");
        assert_eq!(js_number(1e20), "100000000000000000000");
        assert_eq!(js_number(1e-7), "1e-7");
        assert_eq!(js_number(1e-6), "0.000001");
        assert_eq!(js_number(1.5e-7), "1.5e-7");
        assert_eq!(js_number(-0.0), "0");
        assert_eq!(js_number(-2.5), "-2.5");
        assert_eq!(js_number(123e18), "123000000000000000000");
        assert_eq!(js_number(1.7976931348623157e308), "1.7976931348623157e+308");
        assert_eq!(js_number(5e-324), "5e-324");
        assert_eq!(js_number(f64::NAN), "NaN");
        assert_eq!(js_number(f64::NEG_INFINITY), "-Infinity");
    }

    /// 7,000 numbers printed by Node's `String(x)` (tests/vectors/js_numbers.json).
    #[test]
    fn js_number_matches_node_on_every_vector() {
        let text = include_str!("../../tests/vectors/js_numbers.json");
        let vectors: Vec<(String, String)> = serde_json::from_str(text).expect("vector file");
        assert!(vectors.len() > 5000);
        for (bits, expected) in vectors {
            let x = f64::from_bits(u64::from_str_radix(&bits, 16).expect("hex bits"));
            assert_eq!(js_number(x), expected, "bits {bits}");
        }
    }

    /// A number JavaScript signed must read back as the same double, or the
    /// relay would rebuild a different text. serde_json's default parser is
    /// off by one ulp on ~15% of these; Cargo.toml enables `float_roundtrip`.
    #[test]
    fn wire_numbers_parse_to_the_double_javascript_printed() {
        let text = include_str!("../../tests/vectors/js_numbers.json");
        let vectors: Vec<(String, String)> = serde_json::from_str(text).expect("vector file");
        for (bits, printed) in vectors {
            let want = f64::from_bits(u64::from_str_radix(&bits, 16).expect("hex bits"));
            let got: Value = serde_json::from_str(&printed).expect("JSON number");
            let got = got.as_f64().expect("a number");
            // -0 prints as "0": compare values, and bits for everything else.
            assert!(
                got == want && (want == 0.0 || got.to_bits() == want.to_bits()),
                "{printed}"
            );
            assert_eq!(js_number(got), printed);
        }
    }

    #[test]
    fn msg_text_is_json_stringify_of_to_content_ts() {
        let msg = json!({"type":"MSG","to":"#general","content":"a/b \"q\" \u{1} é \u{2028}","ts":1764000000123u64,"sig":"x"});
        assert_eq!(
            msg_signing_text(
                "#general",
                "a/b \"q\" \u{1} é \u{2028}",
                Some(1764000000123)
            ),
            text(&msg)
        );
        assert_eq!(
            text(&msg),
            "{\"to\":\"#general\",\"content\":\"a/b \\\"q\\\" \\u0001 é \u{2028}\",\"ts\":1764000000123}"
        );
        // An absent ts is left out, as JSON.stringify drops undefined.
        let msg = json!({"type":"MSG","to":"@abc","content":"hi"});
        assert_eq!(text(&msg), "{\"to\":\"@abc\",\"content\":\"hi\"}");
    }

    #[test]
    fn proposal_text_uses_empty_strings_and_js_numbers() {
        let msg = json!({"type":"PROPOSAL","to":"@abc","task":"t","amount":1.5,"currency":"SOL","expires":300});
        assert_eq!(text(&msg), "@abc|t|1.5|SOL||300");
        let msg = json!({"type":"PROPOSAL","to":"@abc","task":"t","amount":0,"payment_code":null,"expires":0});
        assert_eq!(text(&msg), "@abc|t||||");
        let msg =
            json!({"type":"PROPOSAL","to":"@abc","task":"t","amount":100,"terms":"not signed"});
        assert_eq!(text(&msg), "@abc|t|100|||");
        let msg =
            json!({"type":"PROPOSAL","to":"@abc","task":"t","amount":"12.50","currency":true});
        assert_eq!(text(&msg), "@abc|t|12.50|true||");
    }

    #[test]
    fn response_texts() {
        let id = "prop_x_1";
        let t = |v: Value| text(&v);
        assert_eq!(
            t(json!({"type":"ACCEPT","proposal_id":id,"payment_code":"pc"})),
            "ACCEPT|prop_x_1|pc"
        );
        assert_eq!(
            t(json!({"type":"ACCEPT","proposal_id":id,"payment_code":null})),
            "ACCEPT|prop_x_1|"
        );
        assert_eq!(
            t(json!({"type":"REJECT","proposal_id":id})),
            "REJECT|prop_x_1|"
        );
        assert_eq!(
            t(json!({"type":"COMPLETE","proposal_id":id,"proof":"url"})),
            "COMPLETE|prop_x_1|url"
        );
        assert_eq!(
            t(json!({"type":"DISPUTE","proposal_id":id,"reason":"late"})),
            "DISPUTE|prop_x_1|late"
        );
        assert_eq!(
            signing_text(json!({"type":"PING"}).as_object().unwrap()),
            None
        );
    }

    #[test]
    fn js_string_coercions() {
        assert_eq!(js_string(None), "undefined");
        assert_eq!(js_string(Some(&json!([1, null, "a", [2, 3]]))), "1,,a,2,3");
        assert_eq!(js_string(Some(&json!({"a":1}))), "[object Object]");
        assert_eq!(or_empty(Some(&json!(false))), "");
        assert_eq!(or_empty(Some(&json!(""))), "");
        assert_eq!(or_empty(Some(&json!(-0.0))), "");
        assert_eq!(or_empty(Some(&json!([]))), "");
        assert_eq!(or_empty(Some(&json!(7))), "7");
    }

    /// Every text Node signed in tests/vectors/node_vectors.json is rebuilt
    /// byte for byte from the message Node put on the wire.
    #[test]
    fn signing_texts_match_node() {
        for file in [
            include_str!("../../tests/vectors/node_vectors.json"),
            include_str!("../../tests/vectors/node_signs_workbench.json"),
        ] {
            let v: Value = serde_json::from_str(file).expect("vector file");
            let sigs = v["signatures"].as_array().expect("signatures");
            assert!(sigs.len() >= 20);
            for s in sigs {
                // `message` was parsed from the text Node wrote, as the relay would.
                let msg = &s["message"];
                assert_eq!(
                    signing_text(msg.as_object().expect("an object")).as_deref(),
                    s["signed"].as_str(),
                    "message {msg}"
                );
            }
        }
    }
}

//! The wire form of AgentChat 0.3.0's proposal messages (PROPOSAL, ACCEPT,
//! REJECT, COMPLETE, DISPUTE): a client's object parsed into a validated
//! [`ProposalRequest`], with 0.3.0's own error wording. Part of the protocol
//! layer (`protocol` parses into it); no state, no signatures, no I/O. The
//! store is `proposals`, the handling `handle_proposal`.

use serde_json::{Map, Value};

/// A validated proposal message. Optional 0.3.0 fields that the relay only
/// passes along stay JSON values.
#[derive(Debug, Clone, PartialEq)]
pub enum ProposalRequest {
    Propose {
        to: String,
        task: String,
        amount: Value,
        currency: Value,
        payment_code: Value,
        terms: Value,
        /// Seconds from now.
        expires: Option<f64>,
        sig: String,
    },
    Accept {
        proposal_id: String,
        payment_code: Value,
        sig: String,
    },
    Reject {
        proposal_id: String,
        reason: Value,
        sig: String,
    },
    Complete {
        proposal_id: String,
        proof: Value,
        sig: String,
    },
    Dispute {
        proposal_id: String,
        reason: String,
        sig: String,
    },
}

impl ProposalRequest {
    /// The wire type this request came as.
    pub fn kind(&self) -> &'static str {
        match self {
            ProposalRequest::Propose { .. } => "PROPOSAL",
            ProposalRequest::Accept { .. } => "ACCEPT",
            ProposalRequest::Reject { .. } => "REJECT",
            ProposalRequest::Complete { .. } => "COMPLETE",
            ProposalRequest::Dispute { .. } => "DISPUTE",
        }
    }

    pub fn sig(&self) -> &str {
        match self {
            ProposalRequest::Propose { sig, .. }
            | ProposalRequest::Accept { sig, .. }
            | ProposalRequest::Reject { sig, .. }
            | ProposalRequest::Complete { sig, .. }
            | ProposalRequest::Dispute { sig, .. } => sig,
        }
    }

    /// Parses the client's object (with its `type`). The error is the
    /// INVALID_MSG message, worded as 0.3.0 words it.
    pub fn parse(obj: &Map<String, Value>) -> Result<ProposalRequest, String> {
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
        let opt = |k: &str| obj.get(k).cloned().unwrap_or(Value::Null);
        let text = |k: &str| match obj.get(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        // 0.3.0 only asks for a truthy `sig`; one that is not a string could
        // never verify, so it is malformed here.
        let sig = |unsigned: &str| match obj.get("sig") {
            None | Some(Value::Null) => Err(unsigned.to_string()),
            Some(Value::String(s)) if s.is_empty() => Err(unsigned.to_string()),
            Some(Value::String(s)) if s.len() <= 1024 => Ok(s.clone()),
            Some(_) => Err("Invalid signature format".to_string()),
        };
        let proposal_id = || text("proposal_id").ok_or_else(|| "Missing proposal_id".to_string());
        match kind {
            "PROPOSAL" => {
                let to = match obj.get("to") {
                    None | Some(Value::Null) => return Err("Missing target (to)".into()),
                    Some(Value::String(s)) if s.is_empty() => {
                        return Err("Missing target (to)".into())
                    }
                    Some(Value::String(s)) if s.starts_with('@') && s.len() > 1 => s.clone(),
                    Some(_) => return Err("Proposals must be sent to an agent (@id)".into()),
                };
                let task = text("task").ok_or("Missing or invalid task description")?;
                let sig = sig("Proposals must be signed")?;
                let expires = match obj.get("expires") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => n.as_f64(),
                    Some(_) => return Err("expires must be a number (seconds)".into()),
                };
                Ok(ProposalRequest::Propose {
                    to,
                    task,
                    amount: opt("amount"),
                    currency: opt("currency"),
                    payment_code: opt("payment_code"),
                    terms: opt("terms"),
                    expires,
                    sig,
                })
            }
            "ACCEPT" => Ok(ProposalRequest::Accept {
                proposal_id: proposal_id()?,
                payment_code: opt("payment_code"),
                sig: sig("Accept must be signed")?,
            }),
            "REJECT" => Ok(ProposalRequest::Reject {
                proposal_id: proposal_id()?,
                reason: opt("reason"),
                sig: sig("Reject must be signed")?,
            }),
            "COMPLETE" => Ok(ProposalRequest::Complete {
                proposal_id: proposal_id()?,
                proof: opt("proof"),
                sig: sig("Complete must be signed")?,
            }),
            "DISPUTE" => {
                let proposal_id = proposal_id()?;
                let reason = text("reason").ok_or("Missing or invalid dispute reason")?;
                Ok(ProposalRequest::Dispute {
                    proposal_id,
                    reason,
                    sig: sig("Dispute must be signed")?,
                })
            }
            other => Err(format!("Not a proposal message: {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_refuses_malformed_requests_like_0_3_0() {
        let bad = |v: Value| ProposalRequest::parse(v.as_object().unwrap()).unwrap_err();
        assert_eq!(
            bad(json!({"type":"PROPOSAL","task":"t","sig":"s"})),
            "Missing target (to)"
        );
        assert_eq!(
            bad(json!({"type":"PROPOSAL","to":"#general","task":"t","sig":"s"})),
            "Proposals must be sent to an agent (@id)"
        );
        assert_eq!(
            bad(json!({"type":"PROPOSAL","to":"@x","sig":"s"})),
            "Missing or invalid task description"
        );
        assert_eq!(
            bad(json!({"type":"PROPOSAL","to":"@x","task":7,"sig":"s"})),
            "Missing or invalid task description"
        );
        assert_eq!(
            bad(json!({"type":"PROPOSAL","to":"@x","task":"t"})),
            "Proposals must be signed"
        );
        assert_eq!(
            bad(json!({"type":"PROPOSAL","to":"@x","task":"t","sig":"s","expires":"300"})),
            "expires must be a number (seconds)"
        );
        assert_eq!(
            bad(json!({"type":"PROPOSAL","to":"@x","task":"t","sig":5})),
            "Invalid signature format"
        );
        assert_eq!(
            bad(json!({"type":"ACCEPT","sig":"s"})),
            "Missing proposal_id"
        );
        assert_eq!(
            bad(json!({"type":"ACCEPT","proposal_id":"p"})),
            "Accept must be signed"
        );
        assert_eq!(
            bad(json!({"type":"REJECT","proposal_id":"p","sig":""})),
            "Reject must be signed"
        );
        assert_eq!(
            bad(json!({"type":"COMPLETE","proposal_id":"p"})),
            "Complete must be signed"
        );
        assert_eq!(
            bad(json!({"type":"DISPUTE","proposal_id":"p","sig":"s"})),
            "Missing or invalid dispute reason"
        );
        assert_eq!(
            bad(json!({"type":"DISPUTE","proposal_id":"p","reason":"r"})),
            "Dispute must be signed"
        );
        let ok = ProposalRequest::parse(
            json!({"type":"PROPOSAL","to":"@x","task":"t","sig":"s","expires":null})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert!(matches!(ok, ProposalRequest::Propose { expires: None, .. }));
    }
}

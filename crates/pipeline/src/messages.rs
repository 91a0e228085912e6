//! Queue message bodies. A message names the document by its business identity and carries the
//! trace id (also as a message attribute); never its content.

use relay_domain::{ContentHash, DocumentKey, TraceId};
use serde::{Deserialize, Serialize};

/// "Send this document": from intake (and replays) to the send function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub document: DocumentKey,
    pub content_hash: ContentHash,
    pub trace_id: TraceId,
}

impl SendRequest {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a SendRequest always serialises")
    }

    pub fn from_json(body: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(body)
    }
}

//! What one finished request leaves behind: its row in the request log and its attempts (and,
//! for a request with an `Idempotency-Key`, its kept answer). Plain
//! data, shared by the router that fills it, the store that keeps it, the metrics and the
//! analytics that count it.

/// One request in the request log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestRow {
    pub id: String,
    pub at_ms: i64,
    pub client: String,
    pub requested_model: String,
    pub served_by: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub stream: bool,
    pub error: Option<String>,
    pub attempts: Vec<AttemptRow>,
    /// The client surface it came in on (`chat`, `messages`, ...).
    pub surface: Option<String>,
    /// What a surface could not pass on (a server tool dropped, ...), for whoever reads the log.
    pub notes: Option<String>,
}

/// One upstream attempt (or skipped candidate) of a request.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttemptRow {
    pub target: String,
    pub key_id: Option<String>,
    pub outcome: String,
    pub status: Option<u16>,
    pub latency_ms: u64,
    /// What went wrong, in a few words (already cleaned of keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An answer kept for an Idempotency-Key (SPEC 2.8).
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// SHA-256 of the route and body it answered.
    pub fingerprint: Vec<u8>,
    pub status: u16,
    /// The headers replayed with it (name, value).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at_ms: i64,
}

//! What the providers really allow: the free-tier facts of `../shared/PROVIDERS.md` ("Changes
//! since the first catalog" first, the older tables where it is silent), written here by hand
//! and never read from Freeway's catalog or ledger. The mock providers enforce these; a fact
//! Freeway gets wrong shows up as an upstream 429.

use chrono_tz::Tz;

/// How a provider is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `POST {base}/chat/completions`, `Authorization: Bearer`.
    Openai,
    /// `POST {base}/models/{model}:generateContent`, `x-goog-api-key`.
    Gemini,
}

/// When a day's counters start again.
#[derive(Debug, Clone, Copy)]
pub enum Day {
    /// The last 24 hours.
    Rolling,
    /// Midnight in this zone.
    Midnight(Tz),
}

/// The caps of one pool. `None`: no published cap.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caps {
    pub rpm: Option<u64>,
    pub rpd: Option<u64>,
    pub tpm: Option<u64>,
    pub tpd: Option<u64>,
    /// Tokens per calendar month (UTC).
    pub tokens_per_month: Option<u64>,
}

impl Caps {
    pub const NONE: Caps = Caps {
        rpm: None,
        rpd: None,
        tpm: None,
        tpd: None,
        tokens_per_month: None,
    };
    const fn new(rpm: Option<u64>, rpd: Option<u64>, tpm: Option<u64>, tpd: Option<u64>) -> Caps {
        Caps {
            rpm,
            rpd,
            tpm,
            tpd,
            tokens_per_month: None,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none()
            && self.rpd.is_none()
            && self.tpm.is_none()
            && self.tpd.is_none()
            && self.tokens_per_month.is_none()
    }
    /// A day-sized cap (requests or tokens per day): what pacing is about.
    pub fn daily(&self) -> bool {
        self.rpd.is_some() || self.tpd.is_some()
    }
}

/// Which token caps a provider charges `max_tokens` against up front (on top of the prompt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upfront {
    /// Only the prompt is checked; the answer counts once it is known.
    Nothing,
    /// Tokens per minute (Groq).
    Minute,
    /// Every token cap (Cerebras "reserves max_completion_tokens").
    Every,
}

/// Whether the provider still serves a model on the free tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Live,
    /// Shut down: the provider answers 410 / "decommissioned".
    Retired,
    /// Not (or no longer) on the free tier: 404 (or Google's 429 "limit: 0").
    NotFree,
}

/// One model as the provider serves it.
#[derive(Debug, Clone)]
pub struct ModelFact {
    pub id: &'static str,
    /// What a client may call it (`gpt-oss-120b` for Groq's `openai/gpt-oss-120b`).
    pub canonical: &'static str,
    /// Per (model, key) or, for a project, per (model, project).
    pub caps: Caps,
    pub context: u64,
    pub tools: bool,
    pub vision: bool,
    pub status: Status,
}

/// One provider with the keys the simulated user holds.
#[derive(Debug, Clone)]
pub struct ProviderFact {
    /// Freeway's provider id, and the mock's path prefix.
    pub id: &'static str,
    pub dialect: Dialect,
    /// Path of the API under `/{id}` on the mock (`/openai/v1` for Groq).
    pub api_path: &'static str,
    pub keys: Vec<&'static str>,
    /// Every key belongs to one project: the pools are the project's, not the key's.
    pub one_project: bool,
    /// Caps across all models of one key (or project).
    pub account: Caps,
    pub day: Day,
    /// Which token caps count the prompt plus `max_tokens` / `max_completion_tokens` up front.
    pub upfront: Upfront,
    /// `max_tokens` above this is a 400.
    pub max_tokens_cap: Option<u64>,
    pub models: Vec<ModelFact>,
}

impl ProviderFact {
    /// The pool owner for a key: the key itself, or the project all keys share.
    pub fn owner<'a>(&self, key: &'a str) -> &'a str {
        if self.one_project { "project" } else { key }
    }
    /// The distinct pool owners (one per key, or one project).
    pub fn owners(&self) -> Vec<&'static str> {
        if self.one_project {
            vec!["project"]
        } else {
            self.keys.clone()
        }
    }
}

const fn m(
    id: &'static str,
    canonical: &'static str,
    caps: Caps,
    context: u64,
    tools: bool,
    vision: bool,
    status: Status,
) -> ModelFact {
    ModelFact {
        id,
        canonical,
        caps,
        context,
        tools,
        vision,
        status,
    }
}

const fn some(v: u64) -> Option<u64> {
    Some(v)
}

/// The simulated user's keys and what each provider allows them. Where PROVIDERS.md leaves a
/// fact open, the choice is written next to it.
pub fn providers() -> Vec<ProviderFact> {
    use Status::*;
    let pacific: Tz = chrono_tz::America::Los_Angeles;
    // Google: limits per Cloud project and model; 250k TPM from the older table (the newer
    // section gives RPM/RPD only), applied to every free model. Reset at midnight US Pacific.
    let g = |rpm, rpd| Caps::new(some(rpm), some(rpd), some(250_000), None);
    let google = ProviderFact {
        id: "google",
        dialect: Dialect::Gemini,
        api_path: "/v1beta",
        keys: vec![
            "AIzaSyYieldSimProjectAKey1xxxxxxxxxxxxx",
            "AIzaSyYieldSimProjectAKey2xxxxxxxxxxxxx",
        ],
        one_project: true,
        account: Caps::NONE,
        day: Day::Midnight(pacific),
        upfront: Upfront::Nothing,
        max_tokens_cap: None,
        models: vec![
            m(
                "gemini-2.5-pro",
                "gemini-2.5-pro",
                Caps::NONE,
                1_048_576,
                true,
                true,
                NotFree,
            ),
            m(
                "gemini-2.5-flash",
                "gemini-2.5-flash",
                g(5, 20),
                1_048_576,
                true,
                true,
                Live,
            ),
            // Context of the 3.x models: not stated; taken as the 2.5 family's.
            m(
                "gemini-3.5-flash",
                "gemini-3.5-flash",
                g(5, 20),
                1_048_576,
                true,
                true,
                Live,
            ),
            m(
                "gemini-3.1-flash-lite",
                "gemini-3.1-flash-lite",
                g(15, 500),
                1_048_576,
                true,
                true,
                Live,
            ),
            m(
                "gemini-2.5-flash-lite",
                "gemini-2.5-flash-lite",
                g(10, 20),
                1_048_576,
                true,
                true,
                Live,
            ),
            m(
                "gemma-3-27b-it",
                "gemma-3-27b-it",
                g(30, 14_400),
                131_072,
                false,
                true,
                Live,
            ),
        ],
    };
    // Groq: per key (organization) and model, rolling day. TPM admission counts prompt plus
    // max_tokens; a request whose prompt plus max_tokens is over the TPM cap is a 413. TPD of
    // the gpt-oss models from the older table, and the same for qwen3.6-27b (the newer section
    // gives all three the same RPM/RPD/TPM and no TPD); compound: 250 RPD published, the RPM and
    // TPM Groq shows in its console (30, 70000) taken as the catalog does.
    let groq = ProviderFact {
        id: "groq",
        dialect: Dialect::Openai,
        api_path: "/openai/v1",
        keys: vec![
            "gsk_yieldSimOrgOneKeyxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "gsk_yieldSimOrgTwoKeyxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        ],
        one_project: false,
        account: Caps::NONE,
        day: Day::Rolling,
        upfront: Upfront::Minute,
        max_tokens_cap: Some(8192),
        models: vec![
            m(
                "openai/gpt-oss-120b",
                "gpt-oss-120b",
                Caps::new(some(30), some(1000), some(8000), some(200_000)),
                131_072,
                true,
                false,
                Live,
            ),
            m(
                "openai/gpt-oss-20b",
                "gpt-oss-20b",
                Caps::new(some(30), some(1000), some(8000), some(200_000)),
                131_072,
                true,
                false,
                Live,
            ),
            m(
                "qwen/qwen3.6-27b",
                "qwen3.6-27b",
                Caps::new(some(30), some(1000), some(8000), some(200_000)),
                131_072,
                true,
                false,
                Live,
            ),
            m(
                "groq/compound",
                "compound",
                Caps::new(some(30), some(250), some(70_000), None),
                131_072,
                false,
                false,
                Live,
            ),
            m(
                "groq/compound-mini",
                "compound-mini",
                Caps::new(some(30), some(250), some(70_000), None),
                131_072,
                false,
                false,
                Live,
            ),
            m(
                "llama-3.3-70b-versatile",
                "llama-3.3-70b",
                Caps::NONE,
                131_072,
                true,
                false,
                Retired,
            ),
            m(
                "llama-3.1-8b-instant",
                "llama-3.1-8b-instant",
                Caps::NONE,
                131_072,
                true,
                false,
                Retired,
            ),
        ],
    };
    // Cerebras: per key and model, rolling day; 65536-token context on the free plan; reserves
    // max_completion_tokens up front. The newer section names the two free models without
    // limits: gpt-oss-120b keeps the older table's, gemma-4-31b is given the same. The one-time
    // credit has no published size and is not simulated.
    let cerebras_caps = Caps::new(some(5), some(2400), some(30_000), some(1_000_000));
    let cerebras = ProviderFact {
        id: "cerebras",
        dialect: Dialect::Openai,
        api_path: "/v1",
        keys: vec!["csk-yieldsimcerebraskeyxxxxxxxxxxxxxxxxxxxxxxxxxx"],
        one_project: false,
        account: Caps::NONE,
        day: Day::Rolling,
        upfront: Upfront::Every,
        max_tokens_cap: None,
        models: vec![
            m(
                "gpt-oss-120b",
                "gpt-oss-120b",
                cerebras_caps,
                65_536,
                true,
                false,
                Live,
            ),
            m(
                "gemma-4-31b",
                "gemma-4-31b",
                cerebras_caps,
                65_536,
                true,
                false,
                Live,
            ),
            m(
                "qwen-3-235b-a22b-instruct-2507",
                "qwen-3-235b-a22b-instruct-2507",
                Caps::NONE,
                131_072,
                true,
                false,
                NotFree,
            ),
            m(
                "zai-glm-4.7",
                "zai-glm-4.7",
                Caps::NONE,
                131_072,
                true,
                false,
                NotFree,
            ),
        ],
    };
    // Mistral "free mode": about 1 request per second (enforced as 60 per rolling minute),
    // 500k TPM and about 1B tokens a month, across the workspace (the key).
    let mistral = ProviderFact {
        id: "mistral",
        dialect: Dialect::Openai,
        api_path: "/v1",
        keys: vec!["yieldSimMistralKeyxxxxxxxxxxxxx"],
        one_project: false,
        account: Caps {
            rpm: some(60),
            rpd: None,
            tpm: some(500_000),
            tpd: None,
            tokens_per_month: some(1_000_000_000),
        },
        day: Day::Rolling,
        upfront: Upfront::Nothing,
        max_tokens_cap: None,
        models: vec![
            m(
                "mistral-large-latest",
                "mistral-large-latest",
                Caps::NONE,
                131_072,
                true,
                true,
                Live,
            ),
            m(
                "mistral-medium-latest",
                "mistral-medium-latest",
                Caps::NONE,
                131_072,
                true,
                true,
                Live,
            ),
            m(
                "codestral-latest",
                "codestral-latest",
                Caps::NONE,
                262_144,
                true,
                false,
                Live,
            ),
            m(
                "mistral-small-latest",
                "mistral-small-latest",
                Caps::NONE,
                131_072,
                true,
                true,
                Live,
            ),
        ],
    };
    // OpenRouter: free models share 20 RPM and 50 requests per day per account (rolling day:
    // PROVIDERS.md names no zone). No token caps.
    let openrouter = ProviderFact {
        id: "openrouter",
        dialect: Dialect::Openai,
        api_path: "/api/v1",
        keys: vec!["sk-or-v1-yieldsimopenrouterkeyxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"],
        one_project: false,
        account: Caps::new(some(20), some(50), None, None),
        day: Day::Rolling,
        upfront: Upfront::Nothing,
        max_tokens_cap: None,
        models: vec![
            m(
                "qwen/qwen3-coder:free",
                "qwen3-coder-480b",
                Caps::NONE,
                262_144,
                true,
                false,
                Live,
            ),
            m(
                "deepseek/deepseek-chat-v3.1:free",
                "deepseek-chat-v3.1",
                Caps::NONE,
                163_840,
                true,
                false,
                Live,
            ),
            m(
                "meta-llama/llama-3.3-70b-instruct:free",
                "llama-3.3-70b",
                Caps::NONE,
                131_072,
                true,
                false,
                Live,
            ),
            m(
                "z-ai/glm-4.5-air:free",
                "glm-4.5-air",
                Caps::NONE,
                131_072,
                true,
                false,
                Live,
            ),
        ],
    };
    vec![google, groq, cerebras, mistral, openrouter]
}

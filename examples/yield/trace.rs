//! A day of traffic, seeded, in the shape of a profile ([`Day`]; by default a European working
//! day: night low, morning ramp, two peaks around lunch, an evening tail) with bursts, mixed
//! prompt sizes, sessions that come back to the same conversation, tools, images, streams and
//! some requests that name a model.

use chrono::{TimeZone, Timelike};
use chrono_tz::Tz;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::truth::{Dialect, ModelFact, ProviderFact, Status, Upfront};
use crate::window::Charge;

/// The simulated user's zone: their day is the calendar day simulated.
pub const USER_TZ: Tz = chrono_tz::Europe::Berlin;
/// Tuesday 2026-12-01, 00:00 in Berlin (23:00 UTC the day before): the default `--start`.
/// Google's day resets at midnight US Pacific, 09:00 here: inside the simulated day, at the
/// start of the office morning peak.
pub const DEFAULT_START_MS: i64 = 1_796_079_600_000;
/// Simulated time between two moments requests are sent at.
pub const TICK_MS: i64 = 1000;
pub const TICKS: i64 = 86_400_000 / TICK_MS;
pub const DAY_MS: i64 = 86_400_000;

/// Relative load per local hour (1.0 = the peak) of the built-in profiles.
/// `office`: a European working day: night low, morning ramp, two peaks around lunch, an evening
/// tail.
const OFFICE: [f64; 24] = [
    0.12, 0.08, 0.06, 0.05, 0.05, 0.07, 0.14, 0.32, 0.65, 0.95, 1.0, 0.95, // 00–11
    0.7, 0.85, 1.0, 1.0, 0.9, 0.75, 0.55, 0.4, 0.32, 0.26, 0.2, 0.15, // 12–23
];
/// `night`: the office day of a team nine hours west (US Pacific) seen from Berlin: busy from
/// 17:00 to 04:00, quiet through the European morning.
const NIGHT: [f64; 24] = [
    1.0, 0.9, 0.75, 0.55, 0.4, 0.32, 0.26, 0.2, 0.15, 0.12, 0.08, 0.06, // 00–11
    0.05, 0.05, 0.07, 0.14, 0.32, 0.65, 0.95, 1.0, 0.95, 0.7, 0.85, 1.0, // 12–23
];
/// `flat`: a backend with users everywhere: the same load every hour.
const FLAT: [f64; 24] = [1.0; 24];
/// `bursty`: a modest working day (08–20 at half the peak, quiet otherwise) that jobs hit in
/// bursts: most of the peak is bursts.
const BURSTY: [f64; 24] = [
    0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 0.5, 0.5, 0.5, // 00–11
    0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2, 0.2, 0.1, 0.1, // 12–23
];

/// The simulated day: its start, its name and hourly shape, and its bursts. Set once by
/// `main` (`--profile`, `--start`) before any trace is made or judged.
#[derive(Debug, Clone)]
pub struct Day {
    /// 00:00 of the simulated day in [`USER_TZ`], UTC ms.
    pub start_ms: i64,
    /// `office`, `night`, `flat`, `bursty` or the file's name.
    pub name: String,
    /// Relative load per local hour, 1.0 at the peak.
    pub profile: [f64; 24],
    /// Bursts (a batch job, a CI run, an agent loop): this many, each this long, at this
    /// multiple of the peak rate on top of the profile, at seeded moments of busy hours.
    pub bursts: usize,
    pub burst_minutes: i64,
    pub burst_factor: f64,
}

impl Day {
    /// A built-in profile by name, or a file of 24 numbers (requests per hour; whitespace or
    /// commas between them, `#` starts a comment).
    pub fn new(profile: &str, start_ms: i64) -> anyhow::Result<Day> {
        let (name, shape, bursts, factor) = match profile {
            "office" => ("office".to_string(), OFFICE, 6, 1.5),
            "night" => ("night".to_string(), NIGHT, 6, 1.5),
            "flat" => ("flat".to_string(), FLAT, 0, 0.0),
            "bursty" => ("bursty".to_string(), BURSTY, 24, 3.0),
            path => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!(
                        "--profile {path}: not office, night, flat or bursty, and not a file ({e})"
                    )
                })?;
                let numbers: Vec<f64> = text
                    .lines()
                    .map(|l| l.split('#').next().unwrap_or(""))
                    .flat_map(|l| l.split(|c: char| c == ',' || c.is_whitespace()))
                    .filter(|w| !w.is_empty())
                    .map(|w| w.parse::<f64>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| anyhow::anyhow!("--profile {path}: {e}"))?;
                let shape: [f64; 24] = numbers.try_into().map_err(|v: Vec<f64>| {
                    anyhow::anyhow!("--profile {path}: {} numbers, not 24", v.len())
                })?;
                let max = shape.iter().cloned().fold(0.0, f64::max);
                let valid = |x: &f64| x.is_finite() && *x >= 0.0;
                if max <= 0.0 || !shape.iter().all(valid) {
                    anyhow::bail!("--profile {path}: requests per hour must be ≥ 0, some > 0");
                }
                let name = std::path::Path::new(path)
                    .file_stem()
                    .map_or(path.to_string(), |s| s.to_string_lossy().into_owned());
                (name, shape.map(|x| x / max), 0, 0.0)
            }
        };
        Ok(Day {
            start_ms,
            name,
            profile: shape,
            bursts,
            burst_minutes: 12,
            burst_factor: factor,
        })
    }
}

static DAY: std::sync::OnceLock<Day> = std::sync::OnceLock::new();

/// Fix the simulated day (once, first thing in `main`).
pub fn set_day(day: Day) {
    let _ = DAY.set(day);
}

/// The simulated day (the office day from the default start if `main` set none).
pub fn day() -> &'static Day {
    DAY.get_or_init(|| Day::new("office", DEFAULT_START_MS).expect("built-in profile"))
}

/// 00:00 of the simulated day, UTC ms.
pub fn start_ms() -> i64 {
    day().start_ms
}

/// Hours whose load is at least this are "busy"; the last of them is where pacing must show.
pub const BUSY: f64 = 0.5;

/// Which client key sends a request (`--clients two`; with one client every request is
/// `Interactive`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Client {
    /// The working day above, as one person's apps send it.
    Interactive,
    /// A job that asks for as much as it can from [`BATCH_FROM_HOUR`] on (see [`batch`]).
    Batch,
}

impl Client {
    /// The client key's name in Freeway's config.
    pub fn name(self) -> &'static str {
        match self {
            Client::Interactive => "interactive",
            Client::Batch => "batch",
        }
    }
}

/// Which model a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Auto,
    Named(&'static str),
}

/// One client request of the day.
#[derive(Debug, Clone)]
pub struct Req {
    /// Its index in the day's trace (the mocks find a request's answer length by it).
    pub id: u32,
    pub client: Client,
    /// Milliseconds after [`start_ms`].
    pub at: i64,
    pub ask: Ask,
    /// A conversation this request continues (it then carries an assistant turn).
    pub session: Option<u32>,
    pub system: bool,
    /// Characters of text in the last user message (the bulk of the prompt).
    pub body_chars: usize,
    pub tools: bool,
    pub image: bool,
    pub max_tokens: Option<u64>,
    /// Tokens the answer will have (never more than `max_tokens`, nor than 1024).
    pub completion: u64,
    pub stream: bool,
}

const SYSTEM: &str = "You are a careful assistant. Answer briefly and precisely.";
const ASSISTANT: &str = "Sure. Here is what I would change first, and why.";
/// A tiny PNG (the header bytes only): providers count images at a fixed price.
const IMAGE: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
/// Image tokens as each dialect's provider counts them.
pub fn image_tokens(dialect: Dialect) -> u64 {
    match dialect {
        Dialect::Gemini => 258,
        Dialect::Openai => 765,
    }
}

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "read_file", "description": "Read a file of the repository",
            "parameters": {"type": "object", "properties": {"path": {"type": "string", "description": "Path from the repository root"}}, "required": ["path"]}}},
        {"type": "function", "function": {"name": "run_tests", "description": "Run the test suite and return failures",
            "parameters": {"type": "object", "properties": {"filter": {"type": "string"}, "verbose": {"type": "boolean"}}}}}
    ])
}

impl Req {
    fn opening(&self, session: u32) -> String {
        format!("session #{session}: let us work on the parser module together.")
    }

    fn ticket(&self) -> String {
        format!("ticket #{} ", self.id)
    }

    /// The chat-completions body, its bulk text cut from `filler`.
    pub fn body(&self, filler: &str) -> String {
        let mut messages = Vec::new();
        if self.system {
            messages.push(json!({"role": "system", "content": SYSTEM}));
        }
        if let Some(s) = self.session {
            messages.push(json!({"role": "user", "content": self.opening(s)}));
            messages.push(json!({"role": "assistant", "content": ASSISTANT}));
        }
        let start = (self.id as usize * 7919) % (filler.len() - self.body_chars);
        let text = format!(
            "{}{}",
            self.ticket(),
            &filler[start..start + self.body_chars]
        );
        let content = if self.image {
            json!([{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": IMAGE}}])
        } else {
            json!(text)
        };
        messages.push(json!({"role": "user", "content": content}));
        let model = match self.ask {
            Ask::Auto => "auto",
            Ask::Named(m) => m,
        };
        let mut body = json!({"model": model, "messages": messages});
        if self.tools {
            body["tools"] = tools();
        }
        if let Some(m) = self.max_tokens {
            body["max_tokens"] = json!(m);
        }
        if self.stream {
            body["stream"] = json!(true);
        }
        body.to_string()
    }

    /// Messages in the body.
    fn messages(&self) -> u64 {
        1 + u64::from(self.system) + 2 * u64::from(self.session.is_some())
    }

    /// Prompt tokens as a provider of `dialect` counts them: text characters / 4, four per
    /// message, the tool definitions' JSON / 4, and a fixed price per image.
    pub fn prompt_tokens(&self, dialect: Dialect) -> u64 {
        let mut chars = self.ticket().len() + self.body_chars;
        if self.system {
            chars += SYSTEM.len();
        }
        if let Some(s) = self.session {
            chars += self.opening(s).len() + ASSISTANT.len();
        }
        if self.tools {
            chars += tools().to_string().len();
        }
        let image = if self.image { image_tokens(dialect) } else { 0 };
        (chars as u64).div_ceil(4) + 4 * self.messages() + image
    }

    /// Whether `model` of `provider` could answer this request at all (capabilities, the model
    /// asked for, context, Groq's TPM size check), whatever its counters say. Clamping of
    /// `max_tokens` to the provider's ceiling and to the context left is what any gateway does.
    pub fn fits(&self, provider: &ProviderFact, model: &ModelFact) -> bool {
        if model.status != Status::Live {
            return false;
        }
        if let Ask::Named(name) = self.ask
            && name != model.canonical
            && name != model.id
        {
            return false;
        }
        if (self.tools && !model.tools) || (self.image && !model.vision) {
            return false;
        }
        let prompt = self.prompt_tokens(provider.dialect);
        if prompt >= model.context {
            return false;
        }
        if provider.upfront != Upfront::Nothing
            && let Some(tpm) = model.caps.tpm
            && prompt + self.effective_max(provider, model).unwrap_or(0) > tpm
        {
            return false;
        }
        true
    }

    /// `max_tokens` as it reaches `model`: within the provider's ceiling and the context left.
    pub fn effective_max(&self, provider: &ProviderFact, model: &ModelFact) -> Option<u64> {
        let prompt = self.prompt_tokens(provider.dialect);
        self.max_tokens.map(|m| {
            m.min(provider.max_tokens_cap.unwrap_or(u64::MAX))
                .min(model.context.saturating_sub(prompt))
        })
    }

    /// Tokens this request uses at a provider (prompt plus answer).
    pub fn used_tokens(&self, dialect: Dialect) -> u64 {
        self.prompt_tokens(dialect) + self.completion
    }

    /// What the provider's admission charges this request up front.
    pub fn charge(&self, provider: &ProviderFact, model: &ModelFact) -> Charge {
        let prompt = self.prompt_tokens(provider.dialect);
        charge(provider, prompt, self.effective_max(provider, model))
    }
}

/// What a provider charges up front for a prompt and a `max_tokens`.
pub fn charge(provider: &ProviderFact, prompt: u64, max_tokens: Option<u64>) -> Charge {
    let with_max = prompt + max_tokens.unwrap_or(0);
    match provider.upfront {
        Upfront::Nothing => Charge {
            minute: prompt,
            day: prompt,
        },
        Upfront::Minute => Charge {
            minute: with_max,
            day: prompt,
        },
        Upfront::Every => Charge {
            minute: with_max,
            day: with_max,
        },
    }
}

/// Local hour (0–23) of a moment `at` ms after the start.
pub fn local_hour(at: i64) -> usize {
    chrono::Utc
        .timestamp_millis_opt(start_ms() + at)
        .single()
        .expect("valid time")
        .with_timezone(&USER_TZ)
        .hour() as usize
}

/// The hours whose load makes them busy.
pub fn busy_hours() -> Vec<usize> {
    (0..24).filter(|&h| day().profile[h] >= BUSY).collect()
}

/// Relative load at `at` ms after the start, linear between hour midpoints.
fn load(at: i64) -> f64 {
    let h = at as f64 / 3_600_000.0 - 0.5;
    let i = h.floor();
    let frac = h - i;
    let profile = &day().profile;
    let a = profile[(i as i64).rem_euclid(24) as usize];
    let b = profile[((i as i64) + 1).rem_euclid(24) as usize];
    a + (b - a) * frac
}

/// A Poisson draw (inversion; fine for the small means of one tick).
fn poisson(rng: &mut StdRng, mean: f64) -> u32 {
    let l = (-mean).exp();
    let mut k = 0;
    let mut p = rng.random::<f64>();
    while p > l {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

fn log_uniform(rng: &mut StdRng, lo: f64, hi: f64) -> u64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp() as u64
}

/// Generate the day: about `total` requests, seeded.
pub fn generate(seed: u64, total: f64) -> Vec<Req> {
    let mut rng = StdRng::seed_from_u64(seed);
    let area: f64 = (0..TICKS).map(|t| load(t * TICK_MS)).sum::<f64>();
    let busy: Vec<usize> = busy_hours();
    let d = day();
    let (burst_minutes, burst_factor) = (d.burst_minutes, d.burst_factor);
    let bursts: Vec<i64> = (0..d.bursts)
        .map(|_| {
            let h = busy[rng.random_range(0..busy.len())] as i64;
            h * 3_600_000 + rng.random_range(0..60 - burst_minutes) * 60_000
        })
        .collect();
    let burst_area = (d.bursts as i64 * burst_minutes * 60_000 / TICK_MS) as f64 * burst_factor;
    let per_unit = total / (area + burst_area);
    let mut reqs = Vec::new();
    // Sessions: (id, last turn at); a session ends after 30 idle minutes.
    let mut sessions: Vec<(u32, i64)> = Vec::new();
    let mut next_session = 0;
    for t in 0..TICKS {
        // Requests of one tick arrive together, somewhere inside it.
        let at = t * TICK_MS + rng.random_range(0..TICK_MS);
        let in_burst = bursts
            .iter()
            .any(|&b| at >= b && at < b + burst_minutes * 60_000);
        let mean = per_unit * (load(at) + if in_burst { burst_factor } else { 0.0 });
        for _ in 0..poisson(&mut rng, mean) {
            sessions.retain(|&(_, last)| at - last < 30 * 60_000);
            let session = if rng.random_bool(0.4) {
                if !sessions.is_empty() && rng.random_bool(0.7) {
                    let i = rng.random_range(0..sessions.len());
                    sessions[i].1 = at;
                    Some(sessions[i].0)
                } else {
                    next_session += 1;
                    sessions.push((next_session, at));
                    Some(next_session)
                }
            } else {
                None
            };
            reqs.push(request(&mut rng, reqs.len() as u32, at, session));
        }
    }
    reqs
}

fn request(rng: &mut StdRng, id: u32, at: i64, session: Option<u32>) -> Req {
    let named = rng.random::<f64>();
    let ask = if named < 0.05 {
        Ask::Named("gpt-oss-120b")
    } else if named < 0.08 {
        Ask::Named("gemini-2.5-flash")
    } else if named < 0.10 {
        Ask::Named("mistral-large-latest")
    } else {
        Ask::Auto
    };
    let size = rng.random::<f64>();
    let prompt_tokens = if size < 0.45 {
        log_uniform(rng, 20.0, 400.0)
    } else if size < 0.75 {
        log_uniform(rng, 400.0, 3000.0)
    } else if size < 0.93 {
        log_uniform(rng, 3000.0, 20_000.0)
    } else {
        log_uniform(rng, 20_000.0, 90_000.0)
    };
    let tools = rng.random_bool(0.15);
    let image = rng.random_bool(0.05) && ask != Ask::Named("gpt-oss-120b");
    let mt = rng.random::<f64>();
    let max_tokens = if mt < 0.40 {
        None
    } else if mt < 0.65 {
        Some([256, 512, 1024][rng.random_range(0..3)])
    } else if mt < 0.85 {
        Some(2048)
    } else if mt < 0.95 {
        Some(4096)
    } else {
        Some([8192, 16384, 32000][rng.random_range(0..3)])
    };
    let ceiling = max_tokens.unwrap_or(900).min(1024);
    let completion = rng.random_range(ceiling.min(30)..=ceiling);
    Req {
        id,
        client: Client::Interactive,
        at,
        ask,
        session,
        system: rng.random_bool(0.5),
        body_chars: (prompt_tokens as usize * 4).max(8),
        tools,
        image,
        max_tokens,
        completion,
        stream: rng.random_bool(0.3),
    }
}

/// Local hour the batch job starts at.
pub const BATCH_FROM_HOUR: i64 = 6;
/// The batch job's prompts (tokens, log-uniform), `max_tokens` and answers (tokens, uniform).
const BATCH_PROMPT: (f64, f64) = (100.0, 1000.0);
const BATCH_MAX_TOKENS: u64 = 512;
const BATCH_ANSWER: (u64, u64) = (50, 400);

/// The batch job (`--clients two`): from [`BATCH_FROM_HOUR`] to midnight, `rate` requests a
/// second (a fractional rate adds one more request in that share of seconds), each second's
/// sent together at a seeded moment of it, as a worker pool that wakes once a second would. A
/// document-processing job: `auto`, a fixed system prompt, 100–1000 prompt tokens, `max_tokens`
/// 512, answers of 50–400 tokens, no tools, images, streams or conversations. Ids follow
/// `first_id`.
pub fn batch(seed: u64, first_id: u32, rate: f64) -> Vec<Req> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xba7c);
    let whole = rate.floor() as u32;
    let frac = rate - rate.floor();
    let mut reqs = Vec::new();
    for t in BATCH_FROM_HOUR * 3_600_000 / TICK_MS..TICKS {
        let at = t * TICK_MS + rng.random_range(0..TICK_MS);
        let n = whole + u32::from(frac > 0.0 && rng.random_bool(frac));
        for _ in 0..n {
            let prompt = log_uniform(&mut rng, BATCH_PROMPT.0, BATCH_PROMPT.1);
            reqs.push(Req {
                id: first_id + reqs.len() as u32,
                client: Client::Batch,
                at,
                ask: Ask::Auto,
                session: None,
                system: true,
                body_chars: prompt as usize * 4,
                tools: false,
                image: false,
                max_tokens: Some(BATCH_MAX_TOKENS),
                completion: rng.random_range(BATCH_ANSWER.0..=BATCH_ANSWER.1),
                stream: false,
            });
        }
    }
    reqs
}

/// Plain ASCII words to cut prompts from, seeded (enough for the largest prompt).
pub fn filler(seed: u64) -> String {
    const WORDS: [&str; 24] = [
        "fn", "let", "mut", "self", "impl", "match", "return", "struct", "value", "parse", "token",
        "error", "result", "option", "vec", "string", "into", "iter", "map", "config", "request",
        "answer", "stream", "window",
    ];
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut s = String::with_capacity(420_000);
    while s.len() < 400_000 {
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        s.push(if rng.random_bool(0.1) { '\n' } else { ' ' });
    }
    s
}

//! Quota yield (SPEC 8): how much of a realistic set of free keys Freeway turns into answers
//! over one simulated day, without ever overshooting a provider's caps.
//!
//! ```text
//! cargo run --release --example yield -- [--pacing off|even|demand|both|all] [--out FILE]
//!     [--profile office|night|flat|bursty|FILE] [--start 2026-12-01] [--history-days 7]
//!     [--summary FILE] [--share 0.9] [--concurrency 8] [--seed 2026] [--requests N]
//!     [--clients one|two] [--fairness off|weighted|both] [--batch-rate 3] [--weights 1:1]
//! ```
//!
//! The model:
//! * **Time is simulated.** Freeway runs in-process (`App::open_with_clock`) on a
//!   [`ManualClock`] that the mock providers read too. The day is the calendar day of a user in
//!   Berlin, `--start` (Tuesday 2026-12-01 by default); Google's quota resets at midnight US Pacific, 09:00 there. The
//!   clock moves one simulated second at a time (skipping empty seconds); the requests of a second
//!   are sent together, a bounded number at a time, and all answered before the clock moves on.
//!   Upstreams answer at once: a request takes no simulated time.
//! * **The providers are mocks that know their own caps** (`yield/truth.rs`, from
//!   `../shared/PROVIDERS.md`, never from Freeway's catalog or ledger) and count with their own
//!   windows (`yield/window.rs`): RPM over a rolling minute; RPD and TPD over a rolling day or,
//!   for Google, the calendar day in US Pacific; TPM with Groq and Cerebras charging the prompt
//!   plus `max_tokens` up front; OpenRouter's account-wide 20 RPM and 50 requests a day; Mistral's
//!   account-wide 1 request a second, 500k TPM and monthly tokens; Google's limits per Cloud
//!   project, shared by both keys of the project. Over a cap they answer 429 as the provider
//!   would; every such 429 is Freeway's overshoot. Prompt tokens are characters / 4.
//! * **The traffic** (`yield/trace.rs`) is seeded and shaped by `--profile` (`office`, the
//!   default: night low, a morning ramp, two peaks around lunch, an evening tail, six bursts
//!   above the per-minute capacity; `night`, `flat`, `bursty`, or a file of 24 requests per
//!   hour; `bench/README.md` shows each); prompts from a short chat
//!   to 90k-token code contexts; sessions that continue a conversation; tools, images, streams,
//!   `max_tokens` from none to 32000; a tenth of the requests name a model. Its size is a share
//!   of the keys' theoretical capacity (`yield/capacity.rs`).
//! * **The report** (`yield/report.rs`): capacity, offered, served, refused, the share served of
//!   what was servable, the upstream 429s, and per hour the rank of the serving models, for
//!   `routing.pacing = "off"`, `"even"` and `"demand"`.
//! * **History for `demand`**: pacing by demand learns from the request log, so before a
//!   `demand` day the request log gets `--history-days` prior days of the same profile and size
//!   (each generated with its own seed, `seed + 1000 + d`), one row per request at its arrival
//!   time, written through the store's own `insert_requests` (which keeps the hourly rollups the
//!   curve is learned from). Only arrivals are written: what the curve learns is demand.
//! * **Two client keys** (`--clients two`, `yield/clients.rs`): the same working day sent with
//!   the client key `interactive`, and a `batch` key that asks for as much as it can from 06:00
//!   (`trace::batch`: `--batch-rate` short `auto` requests a second until midnight), both through
//!   one Freeway, with `routing.fairness = "off"` and `"weighted"` (`--weights` sets
//!   `[auth.limits.NAME] weight`); the report gives each key's served / servable, what each got
//!   of the daily-capped models, and the interactive key's share of the strongest of them
//!   against its weighted share.
//!
//! `YIELD_DEBUG=1` prints, on stderr, every request refused while a key had room (with Freeway's
//! ledger view of that model), every other failure, and at the end each pool's day usage by
//! Freeway and by the mock, and the upstream calls per hour; with it, `YIELD_WATCH=provider/model`
//! prints Freeway's view of that model at every simulated hour and each request it served (the
//! client key and the simulated time).

#[path = "yield/capacity.rs"]
mod capacity;
#[path = "yield/clients.rs"]
mod clients;
#[path = "yield/mock.rs"]
mod mock;
#[path = "yield/report.rs"]
mod report;
#[path = "yield/trace.rs"]
mod trace;
#[path = "yield/truth.rs"]
mod truth;
#[path = "yield/window.rs"]
mod window;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use freeway::app::{self, App};
use freeway::catalog::Catalog;
use freeway::config::Config;
use freeway::ledger::ManualClock;
use futures_util::StreamExt;

use crate::mock::Mock;
use crate::report::{Outcome, Run, Strongest};
use crate::trace::{Client, Req, start_ms};
use crate::truth::{ProviderFact, Status};

const CLIENT_KEY: &str = "fw-yield-simulation";
/// `--clients two`: the client keys, named `interactive` and `batch` in the config.
const INTERACTIVE_KEY: &str = "fw-yield-interactive";
const BATCH_KEY: &str = "fw-yield-batch";

/// Google's two keys are one Cloud project: `[providers.google] shared_quota = true` tells
/// Freeway so. Set to false to see what happens when Freeway is not told.
const GOOGLE_SHARED_QUOTA: bool = true;

#[derive(Parser)]
#[command(about = "A simulated day of traffic against mock free tiers (SPEC 8, quota yield)")]
struct Args {
    /// `off`, `even`, `demand`, `both` (off and even) or `all` (routing.pacing).
    #[arg(long, default_value = "both")]
    pacing: String,
    /// The day's shape: `office`, `night`, `flat`, `bursty`, or a file of 24 numbers (requests
    /// per hour, Berlin time).
    #[arg(long, default_value = "office")]
    profile: String,
    /// The simulated day, `YYYY-MM-DD` (00:00–24:00 Berlin).
    #[arg(long, default_value = "2026-12-01")]
    start: String,
    /// Pacing `demand` learns from the request log: this many prior days of the same profile
    /// (each its own seed) are written to it before the simulated day.
    #[arg(long, default_value_t = 7)]
    history_days: i64,
    /// Append one line per run (tab-separated: profile, pacing, served, servable, overshoot,
    /// last busy hour, the strongest capped model's requests in it, its last serving hour) to
    /// this file, for `bench/yield.sh --profiles`.
    #[arg(long)]
    summary: Option<PathBuf>,
    /// Also write the report here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Requests offered, as a share of the keys' theoretical daily capacity.
    #[arg(long, default_value_t = 0.9)]
    share: f64,
    /// Requests offered (overrides --share).
    #[arg(long)]
    requests: Option<f64>,
    /// Requests in flight at once within a simulated second.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// A line naming the machine and commit, for the report's header.
    #[arg(long, default_value = "")]
    machine: String,
    /// `one`: the working day with one client key (the report above); `two`: that day with the
    /// client key `interactive` plus a `batch` key from 06:00 (`yield/clients.rs`).
    #[arg(long, default_value = "one")]
    clients: String,
    /// With `--clients two`: `off`, `weighted` or `both` (routing.fairness) [both].
    #[arg(long)]
    fairness: Option<String>,
    /// With `--clients two`: the batch key's requests per second, 06:00 to midnight.
    #[arg(long, default_value_t = 3.0)]
    batch_rate: f64,
    /// With `--clients two`: weights `interactive:batch` (`[auth.limits.NAME] weight`; 1 is
    /// Freeway's default and is not written).
    #[arg(long, default_value = "1:1")]
    weights: String,
}

/// What one simulated day runs with.
#[derive(Clone, Copy)]
struct Setup {
    pacing: &'static str,
    /// `routing.fairness`; `None`: not set (one client key).
    fairness: Option<&'static str>,
    /// Two client keys with these weights (interactive, batch); `None`: one client key.
    two: Option<(u32, u32)>,
}

impl Setup {
    fn client_key(&self, client: Client) -> &'static str {
        match (self.two, client) {
            (None, _) => CLIENT_KEY,
            (Some(_), Client::Interactive) => INTERACTIVE_KEY,
            (Some(_), Client::Batch) => BATCH_KEY,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = chrono::NaiveDate::parse_from_str(&args.start, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(|t| {
            use chrono::TimeZone;
            trace::USER_TZ.from_local_datetime(&t).earliest()
        })
        .ok_or_else(|| anyhow::anyhow!("--start {}: must be YYYY-MM-DD", args.start))?;
    trace::set_day(trace::Day::new(&args.profile, start.timestamp_millis())?);
    let pacings: Vec<&'static str> = match args.pacing.as_str() {
        "off" => vec!["off"],
        "even" => vec!["even"],
        "demand" => vec!["demand"],
        "both" => vec!["off", "even"],
        "all" => vec!["off", "even", "demand"],
        other => anyhow::bail!("--pacing {other}: must be off, even, demand, both or all"),
    };
    let two = match args.clients.as_str() {
        "one" => None,
        "two" => {
            let (i, b) = args
                .weights
                .split_once(':')
                .and_then(|(i, b)| Some((i.trim().parse().ok()?, b.trim().parse().ok()?)))
                .filter(|&(i, b): &(u32, u32)| i >= 1 && b >= 1)
                .ok_or_else(|| {
                    anyhow::anyhow!("--weights {}: must be two weights, e.g. 3:1", args.weights)
                })?;
            Some((i, b))
        }
        other => anyhow::bail!("--clients {other}: must be one or two"),
    };
    let fairnesses: Vec<Option<&'static str>> = match (two, args.fairness.as_deref()) {
        (None, None) => vec![None],
        (None, Some(_)) => anyhow::bail!("--fairness: only with --clients two"),
        (Some(_), Some("off")) => vec![Some("off")],
        (Some(_), Some("weighted")) => vec![Some("weighted")],
        (Some(_), Some("both") | None) => vec![Some("off"), Some("weighted")],
        (Some(_), Some(other)) => {
            anyhow::bail!("--fairness {other}: must be off, weighted or both")
        }
    };
    let providers = truth::providers();
    // The capacity depends on the mix of requests, not on their number: size the day from a
    // pilot of the same mix.
    let pilot = trace::generate(args.seed, 50_000.0);
    let pilot_capacity = capacity::capacity(&providers, &pilot).per_day;
    let total = args.requests.unwrap_or(args.share * pilot_capacity as f64);
    let mut day = trace::generate(args.seed, total);
    if two.is_some() {
        // The working day keeps its ids (and so its bodies); the batch job's follow.
        let first = day.len() as u32;
        day.extend(trace::batch(args.seed, first, args.batch_rate));
    }
    let trace = Arc::new(day);
    let capacity = capacity::capacity(&providers, &trace);
    // What the request log holds before the day, for pacing `demand`: the same profile and size
    // on each of the prior days, each day its own seed.
    let history: Arc<Vec<i64>> = Arc::new(
        (1..=args.history_days.max(0))
            .flat_map(|d| {
                let day_start = start_ms() - d * trace::DAY_MS;
                trace::generate(args.seed.wrapping_add(1000 + d as u64), total)
                    .into_iter()
                    .map(move |r| day_start + r.at)
            })
            .collect(),
    );
    let filler: Arc<str> = trace::filler(args.seed).into();
    eprintln!(
        "[yield] {} requests, capacity {} requests/day, {} providers",
        trace.len(),
        capacity.per_day,
        providers.len()
    );

    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut strongest = None;
    let mut capped = Vec::new();
    for pacing in pacings {
        for &fairness in &fairnesses {
            let setup = Setup {
                pacing,
                fairness,
                two,
            };
            let history = if pacing == "demand" {
                Some(&history)
            } else {
                None
            };
            match run(
                setup,
                &providers,
                &trace,
                &filler,
                args.concurrency,
                history,
            )
            .await
            {
                Ok((run, catalog)) => {
                    strongest = strongest.or_else(|| strongest_capped(&providers, &catalog));
                    if capped.is_empty() {
                        capped = capped_models(&providers, &catalog);
                    }
                    runs.push(run);
                }
                Err(e) if pacing != "off" && format!("{e:#}").contains("pacing") => {
                    skipped.push(format!(
                        "pacing `{pacing}`: this Freeway does not accept it yet ({e:#})"
                    ));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
    let keys = providers
        .iter()
        .map(|p| {
            let n = p.keys.len();
            let shared = if p.one_project && GOOGLE_SHARED_QUOTA {
                ", one project, `shared_quota = true`"
            } else if p.one_project {
                ", one project (Freeway not told)"
            } else {
                ""
            };
            format!("{} ×{n}{shared}", p.id)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let machine = if args.machine.is_empty() {
        "this machine".to_string()
    } else {
        args.machine.clone()
    };
    if let Some(weights) = two {
        let text = clients::render(&clients::Inputs {
            trace: &trace,
            capacity: &capacity,
            runs: &runs,
            strongest,
            capped,
            keys,
            seed: args.seed,
            concurrency: args.concurrency,
            machine,
            skipped,
            weights,
            batch_rate: args.batch_rate,
        });
        print!("{text}");
        if let Some(out) = &args.out {
            std::fs::write(out, &text)?;
        }
        return Ok(());
    }
    let inputs = report::Inputs {
        trace: &trace,
        capacity: &capacity,
        runs: &runs,
        strongest,
        keys,
        seed: args.seed,
        concurrency: args.concurrency,
        machine,
        skipped,
    };
    let text = report::render(&inputs);
    if let Some(path) = &args.summary {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        f.write_all(report::summary(&inputs).as_bytes())?;
    }
    print!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text)?;
    }
    Ok(())
}

/// Freeway's config for one run: the mock's URLs and the simulated user's keys.
fn config_toml(
    data_dir: &std::path::Path,
    mock: SocketAddr,
    providers: &[ProviderFact],
    setup: Setup,
) -> String {
    let mut t = format!(
        "data_dir = {:?}\nlog = \"warn\"\n\n[auth]\n",
        data_dir.display().to_string()
    );
    match setup.two {
        None => t.push_str(&format!("api_keys = [\"{CLIENT_KEY}\"]\n")),
        Some((wi, wb)) => {
            t.push_str(&format!(
                "api_keys = [{{ name = \"{}\", key = \"{INTERACTIVE_KEY}\" }}, \
                 {{ name = \"{}\", key = \"{BATCH_KEY}\" }}]\n",
                Client::Interactive.name(),
                Client::Batch.name()
            ));
            // Weight 1 is the default: written only when it is not.
            for (client, w) in [(Client::Interactive, wi), (Client::Batch, wb)] {
                if w != 1 {
                    t.push_str(&format!(
                        "\n[auth.limits.{}]\nweight = {w}\n",
                        client.name()
                    ));
                }
            }
        }
    }
    // Always said: `demand` is the default, and the off run must not be paced.
    let mut routing = format!("pacing = \"{}\"\n", setup.pacing);
    if let Some(fairness) = setup.fairness {
        routing.push_str(&format!("fairness = \"{fairness}\"\n"));
    }
    t.push_str(&format!("\n[routing]\n{routing}"));
    for p in providers {
        let keys: Vec<String> = p.keys.iter().map(|k| format!("\"{k}\"")).collect();
        t.push_str(&format!(
            "\n[providers.{id}]\nbase_url = \"http://{mock}/{id}{path}\"\nkeys = [{keys}]\n",
            id = p.id,
            path = p.api_path,
            keys = keys.join(", ")
        ));
        if p.one_project && GOOGLE_SHARED_QUOTA {
            t.push_str("shared_quota = true\n");
        }
    }
    t
}

/// The best-ranked model (by Freeway's catalog) that is live at its provider and has a daily
/// cap, with every model of that rank.
fn strongest_capped(providers: &[ProviderFact], catalog: &Catalog) -> Option<Strongest> {
    let capped = capped_models(providers, catalog);
    let best = capped.first()?.0;
    Some(Strongest {
        rank: best,
        references: capped
            .into_iter()
            .filter(|(r, _, _)| *r == best)
            .map(|(_, m, _)| m)
            .collect(),
    })
}

/// Every live model with a daily cap (its own or its account's): Freeway's catalog rank, its
/// reference and the local hour its provider's day last started at by the end of the simulated
/// day (0 for a rolling day); strongest first.
fn capped_models(providers: &[ProviderFact], catalog: &Catalog) -> Vec<(u32, String, usize)> {
    let mut capped: Vec<(u32, String, usize)> = Vec::new();
    for p in providers {
        for m in p.models.iter().filter(|m| m.status == Status::Live) {
            let reference = format!("{}/{}", p.id, m.id);
            let Some(cm) = catalog.model(&reference) else {
                continue;
            };
            if cm.enabled && cm.retired.is_none() && (m.caps.daily() || p.account.daily()) {
                let day_from = match p.day {
                    truth::Day::Rolling => 0,
                    truth::Day::Midnight(tz) => {
                        let reset = window::next_midnight(tz, start_ms(), false) - start_ms();
                        if reset < window::DAY_MS {
                            trace::local_hour(reset)
                        } else {
                            0
                        }
                    }
                };
                capped.push((cm.rank, reference, day_from));
            }
        }
    }
    // Stable: models of one rank stay in the providers' order.
    capped.sort_by_key(|(rank, _, _)| *rank);
    capped
}

/// Write the prior days' requests (their arrival times) to the request log in `dir`, as the
/// gateway would have logged them: one row each, through the store's own writer (so the hourly
/// rollups pacing learns from are the real ones).
fn write_history(dir: &std::path::Path, history: &[i64]) -> anyhow::Result<()> {
    let store = freeway::store::Store::open(dir)?;
    for (n, chunk) in history.chunks(20_000).enumerate() {
        let rows: Vec<freeway::record::RequestRow> = chunk
            .iter()
            .enumerate()
            .map(|(i, &at)| freeway::record::RequestRow {
                id: format!("history-{n}-{i}"),
                at_ms: at,
                client: "simulation".into(),
                requested_model: "auto".into(),
                status: 200,
                ..Default::default()
            })
            .collect();
        store.insert_requests(&rows)?;
    }
    Ok(())
}

/// One simulated day with `setup`; `history`: the request log's prior days (pacing `demand`).
async fn run(
    setup: Setup,
    providers: &[ProviderFact],
    trace: &Arc<Vec<Req>>,
    filler: &Arc<str>,
    concurrency: usize,
    history: Option<&Arc<Vec<i64>>>,
) -> anyhow::Result<(Run, Catalog)> {
    let started = Instant::now();
    let clock = Arc::new(ManualClock::new(start_ms()));
    let (mock, mock_addr) = Mock::start(clock.clone(), providers.to_vec(), trace.clone()).await?;
    let dir = tempfile::tempdir()?;
    if let Some(history) = history {
        let (path, rows) = (dir.path().to_path_buf(), Arc::clone(history));
        tokio::task::spawn_blocking(move || write_history(&path, &rows)).await??;
        eprintln!(
            "[yield] wrote {} prior requests to the request log in {:.0} s",
            history.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let text = config_toml(dir.path(), mock_addr, providers, setup);
    let config = Config::from_toml(&text, &|_| None)?;
    let catalog = Catalog::from_config(&config)?;
    let app = App::open_with_clock(config, clock.clone())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app::serve(app.clone(), listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .timeout(Duration::from_secs(120))
        .build()?;
    let url = format!("http://{addr}/v1/chat/completions");
    let debug = std::env::var_os("YIELD_DEBUG").map(|_| Debug {
        app: app.clone(),
        providers: providers.to_vec(),
        catalog: catalog.clone(),
    });
    let label = match setup.fairness {
        Some(f) => format!("pacing {}, fairness {f}", setup.pacing),
        None => format!("pacing {}", setup.pacing),
    };
    // In time order (the batch job's requests follow the working day's in the trace).
    let mut order: Vec<usize> = (0..trace.len()).collect();
    order.sort_by_key(|&i| (trace[i].at, i));
    let mut outcomes = Vec::with_capacity(trace.len());
    let mut i = 0;
    let mut hour_shown = usize::MAX;
    while i < order.len() {
        let at = trace[order[i]].at;
        let end = i + order[i..]
            .iter()
            .take_while(|&&k| trace[k].at == at)
            .count();
        clock.set(start_ms() + at);
        let hour = trace::local_hour(at);
        if hour != hour_shown {
            hour_shown = hour;
            if let (Some(debug), Ok(watch)) = (&debug, std::env::var("YIELD_WATCH")) {
                eprintln!("[yield] {hour:02}:00 {watch}: {}", debug.view(&watch));
            }
            eprintln!(
                "[yield] {label}: {hour:02}:00, {} requests so far, {:.0} s",
                i,
                started.elapsed().as_secs_f64()
            );
        }
        let (client, url, mock, catalog, debug) = (&client, &url, &mock, &catalog, &debug);
        let mut batch: Vec<(usize, Outcome)> =
            futures_util::stream::iter(order[i..end].iter().enumerate().map(|(j, &k)| {
                let r = &trace[k];
                let key = setup.client_key(r.client);
                async move {
                    (
                        j,
                        send(client, url, key, r, filler, catalog, debug.as_ref()).await,
                    )
                }
            }))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        batch.sort_by_key(|(j, _)| *j);
        for (j, mut outcome) in batch {
            judge(
                &mut outcome,
                &trace[order[i + j]],
                mock,
                outcomes.len(),
                debug.as_ref(),
            );
            outcomes.push(outcome);
        }
        i = end;
    }
    // A refused request judged servable by a room that a later served request took was not
    // servable after all: one room, one request (`Mock::withdrawn`).
    for credit in mock.withdrawn() {
        if let Some(o) = outcomes.get_mut(credit) {
            o.servable = false;
            o.room = None;
        }
    }
    if let Some(debug) = &debug {
        debug.compare(&mock);
    }
    let _ = stop.send(());
    server.await??;
    let calls = mock.calls();
    Ok((
        Run {
            pacing: setup.pacing,
            fairness: setup.fairness,
            outcomes,
            calls,
            elapsed: started.elapsed(),
        },
        catalog,
    ))
}

/// `YIELD_DEBUG=1`: Freeway's ledger beside the mocks' counters, on stderr.
struct Debug {
    app: Arc<App>,
    providers: Vec<ProviderFact>,
    catalog: Catalog,
}

impl Debug {
    /// Freeway's pool id for a mock pool owner (a key, or "project").
    fn pool(&self, provider: &str, owner: &str) -> Option<String> {
        let cp = self.catalog.provider(provider)?;
        let id = format!(
            "cfg-{}",
            &hex::encode(freeway::crypto::hash_client_key(owner))[..12]
        );
        Some(freeway::ledger::pool_of(cp, &id))
    }

    /// What Freeway's ledger says of `reference` (`provider/model`) on every key.
    fn view(&self, reference: &str) -> String {
        use freeway::ledger::{Ledger, Scope};
        let Some((provider, model)) = reference.split_once('/') else {
            return String::new();
        };
        let Some(p) = self.providers.iter().find(|p| p.id == provider) else {
            return String::new();
        };
        let Some(cp) = self.catalog.provider(provider) else {
            return String::new();
        };
        let mut out = Vec::new();
        for key in &p.keys {
            let Some(pool) = self.pool(provider, key) else {
                continue;
            };
            for scope in [
                Scope::model(provider, model, &pool),
                Scope::key(provider, &pool),
            ] {
                let u = self.app.ledger.usage(&scope, cp.reset);
                let cool = self.app.ledger.cooldown(&scope);
                out.push(format!("{scope}: {u:?} cooldown {cool:?}"));
            }
        }
        out.join("; ")
    }

    /// Each model pool's day usage by Freeway's ledger and by the mock's counters, and the
    /// upstream calls per hour and model.
    fn compare(&self, mock: &Mock) {
        use freeway::ledger::{Ledger, Scope};
        let mut per_hour: std::collections::BTreeMap<(String, usize), Vec<u16>> =
            Default::default();
        for c in mock.calls() {
            let hour = trace::local_hour(c.at - start_ms());
            per_hour
                .entry((format!("{}/{}", c.provider, c.model), hour))
                .or_default()
                .push(c.status);
        }
        let mut refused: std::collections::BTreeMap<(String, Option<u64>), u64> =
            Default::default();
        for c in mock.calls().into_iter().filter(|c| c.status != 200) {
            let what = format!("{} {}/{} {}", c.status, c.provider, c.model, c.why);
            *refused.entry((what, c.max_tokens)).or_default() += 1;
        }
        for ((what, max), n) in refused {
            eprintln!("[yield] refusal {what} with max_tokens {max:?}: {n}");
        }
        for ((model, hour), statuses) in per_hour {
            let ok = statuses.iter().filter(|s| **s == 200).count();
            eprintln!(
                "[yield] calls {model} {hour:02}h: {} ({ok} ok)",
                statuses.len()
            );
        }
        for (provider, owner, model, requests, tokens) in mock.day_usage() {
            let (Some(cp), Some(pool)) =
                (self.catalog.provider(provider), self.pool(provider, owner))
            else {
                continue;
            };
            let u = self
                .app
                .ledger
                .usage(&Scope::model(provider, model, &pool), cp.reset);
            eprintln!(
                "[yield] {provider}/{model} ({pool}): mock day {requests} req {tokens} tok; \
                 freeway day {} req {} tok",
                u.day_requests, u.day_tokens
            );
        }
    }
}

/// Send one request and judge what came back.
async fn send(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    req: &Req,
    filler: &str,
    catalog: &Catalog,
    debug: Option<&Debug>,
) -> Outcome {
    let sent = client
        .post(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(req.body(filler))
        .send()
        .await;
    let (mut status, via, attempts, text) = match sent {
        Ok(resp) => {
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let via = header("x-routed-via");
            let attempts = header("x-fallback-attempts")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let status = resp.status().as_u16();
            (status, via, attempts, resp.text().await.unwrap_or_default())
        }
        Err(_) => (0, None, 0, String::new()),
    };
    // A stream that ends without [DONE] or with an error event was not served.
    if status == 200 && req.stream && (!text.contains("[DONE]") || text.contains("\"error\"")) {
        status = 502;
    }
    let served = status == 200;
    let rank = if served {
        via.as_deref()
            .and_then(|v| catalog.model(v))
            .map(|m| m.rank)
    } else {
        None
    };
    if let (Some(_), Some(v), Ok(watch)) = (debug, &via, std::env::var("YIELD_WATCH"))
        && status == 200
        && *v == watch
    {
        use chrono::TimeZone;
        let at = chrono::Utc
            .timestamp_millis_opt(start_ms() + req.at)
            .single()
            .map(|t| t.with_timezone(&trace::USER_TZ).format("%H:%M:%S%.3f"));
        if let Some(at) = at {
            eprintln!("[yield] {watch} served {} at {at}", req.client.name());
        }
    }
    if debug.is_some() && status != 200 && status != 429 {
        eprintln!(
            "[yield] status {status} for {req:?}: {}",
            text.chars().take(400).collect::<String>()
        );
    }
    Outcome {
        hour: trace::local_hour(req.at),
        client: req.client,
        status,
        via,
        rank,
        attempts,
        // Whether a refused request was servable is judged once its whole second is answered
        // (see `judge`).
        servable: served,
        fair_held: status == 429 && text.contains("fair share"),
        room: None,
    }
}

/// Judge a refused request once every request of its simulated second has been answered: did
/// some key have room for it? Asked while other requests of that second are still on their
/// way, the mocks would not yet count them and would offer their slots a second time.
fn judge(outcome: &mut Outcome, req: &Req, mock: &Mock, credit: usize, debug: Option<&Debug>) {
    if outcome.servable {
        return;
    }
    let room = mock.could_serve(req, credit);
    if let (Some(room), Some(debug)) = (&room, debug) {
        eprintln!(
            "[yield] refused while {room} had room: {req:?} → {}; Freeway's view: {}",
            outcome.status,
            debug.view(room)
        );
    }
    outcome.servable = room.is_some();
    outcome.room = room;
}

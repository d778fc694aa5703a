//! The day's figures as one markdown report: the main table, the hour-by-hour table, and what
//! the upstreams said no to.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use crate::capacity::Capacity;
use crate::mock::Call;
use crate::trace::{self, Client, Req};

/// What happened to one request of the trace.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub hour: usize,
    pub client: Client,
    /// The status the client saw (0: no answer at all; 200 with a broken stream counts as 502).
    pub status: u16,
    /// `X-Routed-Via` of a served request.
    pub via: Option<String>,
    /// Freeway's catalog rank of the model that served.
    pub rank: Option<u32>,
    /// Failed upstream attempts before the answer (`X-Fallback-Attempts`).
    pub attempts: u32,
    /// Served, or refused while some key had room for it.
    pub servable: bool,
    /// A 429 whose message says fair share held this client key back from some model.
    pub fair_held: bool,
    /// Refused while servable: the model (`provider/model`) the mocks found room in.
    pub room: Option<String>,
}

/// One simulated day with one pacing setting (and, with two clients, one fairness setting).
pub struct Run {
    pub pacing: &'static str,
    /// `routing.fairness` (`None`: not set, one client).
    pub fairness: Option<&'static str>,
    pub outcomes: Vec<Outcome>,
    pub calls: Vec<Call>,
    pub elapsed: Duration,
}

/// The strongest daily-capped model(s): their rank and references.
pub struct Strongest {
    pub rank: u32,
    pub references: Vec<String>,
}

/// Everything the report is made of.
pub struct Inputs<'a> {
    pub trace: &'a [Req],
    pub capacity: &'a Capacity,
    pub runs: &'a [Run],
    pub strongest: Option<Strongest>,
    pub keys: String,
    pub seed: u64,
    pub concurrency: usize,
    pub machine: String,
    pub skipped: Vec<String>,
}

pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

pub fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.2} %", 100.0 * part as f64 / whole as f64)
    }
}

/// Median (lower) and best of ranks, as "median / best".
pub fn ranks(mut r: Vec<u32>) -> String {
    if r.is_empty() {
        return "–".into();
    }
    r.sort_unstable();
    format!("{} / {}", r[(r.len() - 1) / 2], r[0])
}

struct Figures {
    offered: u64,
    served: u64,
    refused: u64,
    failed: u64,
    servable: u64,
    overshoot: u64,
    other_upstream: u64,
    attempts: u64,
    ranks: Vec<u32>,
}

fn figures(run: &Run) -> Figures {
    let o = &run.outcomes;
    Figures {
        offered: o.len() as u64,
        served: o.iter().filter(|x| x.status == 200).count() as u64,
        refused: o.iter().filter(|x| x.status == 429).count() as u64,
        failed: o
            .iter()
            .filter(|x| x.status != 200 && x.status != 429)
            .count() as u64,
        servable: o.iter().filter(|x| x.servable).count() as u64,
        overshoot: run.calls.iter().filter(|c| c.status == 429).count() as u64,
        other_upstream: run
            .calls
            .iter()
            .filter(|c| c.status != 200 && c.status != 429)
            .count() as u64,
        attempts: o
            .iter()
            .filter(|x| x.status == 200)
            .map(|x| u64::from(x.attempts))
            .sum(),
        ranks: o.iter().filter_map(|x| x.rank).collect(),
    }
}

/// The whole report.
pub fn render(i: &Inputs) -> String {
    let mut s = String::new();
    let runs = i.runs;
    let busy = trace::busy_hours();
    let last_busy = *busy.last().expect("a busy hour");
    let _ = writeln!(s, "# Quota yield: one simulated day\n");
    let _ = writeln!(
        s,
        "`bench/yield.sh` ({}). Simulated {}, 00:00–24:00 in Europe/Berlin, profile `{}` \
         (bench/README.md; Google's day resets at 09:00 Berlin, midnight US Pacific). Keys: {}. \
         {} requests (seed {}), each simulated second's requests sent together, {} at a time, \
         over HTTP to Freeway on 127.0.0.1; mock providers on 127.0.0.1 enforce their own caps \
         on the same simulated clock.\n",
        i.machine,
        day_label(),
        trace::day().name,
        i.keys,
        thousands(i.trace.len() as u64),
        i.seed,
        i.concurrency
    );
    let figs: Vec<Figures> = runs.iter().map(figures).collect();
    let _ = write!(s, "| | ");
    let _ = writeln!(
        s,
        "{} |",
        runs.iter()
            .map(|r| format!("pacing `{}`", r.pacing))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---:|".repeat(runs.len()));
    let mut row = |label: &str, f: &dyn Fn(&Figures, &Run) -> String| {
        let cells: Vec<String> = figs.iter().zip(runs).map(|(x, r)| f(x, r)).collect();
        let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
    };
    let cap = i.capacity.per_day;
    row(
        "theoretical capacity of the keys (requests/day) ¹",
        &|_, _| thousands(cap),
    );
    row("offered", &|f, _| {
        format!(
            "{} ({} of capacity)",
            thousands(f.offered),
            pct(f.offered, cap)
        )
    });
    row("served", &|f, _| {
        format!("{} ({})", thousands(f.served), pct(f.served, f.offered))
    });
    row("refused (429 to the client)", &|f, _| thousands(f.refused));
    row("failed otherwise (other status to the client)", &|f, _| {
        thousands(f.failed)
    });
    row("servable ²", &|f, _| thousands(f.servable));
    row("**served / servable**", &|f, _| {
        format!("**{}**", pct(f.served, f.servable))
    });
    row("**upstream 429s from Freeway's overshoot** ³", &|f, _| {
        format!("**{}**", thousands(f.overshoot))
    });
    row("other upstream refusals (404, 400, 413) ⁴", &|f, _| {
        thousands(f.other_upstream)
    });
    row("failed attempts per served request", &|f, _| {
        format!("{:.3}", f.attempts as f64 / f.served.max(1) as f64)
    });
    row("rank of the serving model, median / best ⁵", &|f, _| {
        ranks(f.ranks.clone())
    });
    if let Some(st) = &i.strongest {
        let refs = st.references.clone();
        row(
            &format!(
                "strongest daily-capped model (rank {}) served in the last busy hour ({last_busy:02}:00–{:02}:00)",
                st.rank,
                last_busy + 1
            ),
            &|_, r| {
                let n = r
                    .outcomes
                    .iter()
                    .filter(|o| o.hour == last_busy && served_by(o, &refs))
                    .count();
                thousands(n as u64)
            },
        );
    }
    row("wall-clock time of the run", &|_, r| {
        format!("{:.0} s", r.elapsed.as_secs_f64())
    });

    // The goals (issue 14): each as met or not, per run.
    let mark = |ok: bool| if ok { "met" } else { "**not met**" };
    let mut goals = Vec::new();
    for (f, r) in figs.iter().zip(runs) {
        let share = f.served as f64 >= 0.99 * f.servable as f64;
        goals.push(format!(
            "pacing `{}`: ≥ 99 % of servable served {}, zero overshoot 429s {}",
            r.pacing,
            mark(share),
            mark(f.overshoot == 0)
        ));
    }
    if let Some(st) = &i.strongest {
        for r in runs.iter().filter(|r| r.pacing != "off") {
            let late = r
                .outcomes
                .iter()
                .any(|o| o.hour == last_busy && served_by(o, &st.references));
            goals.push(format!(
                "with pacing `{}` the strongest daily-capped model serving in the last busy hour {}",
                r.pacing,
                mark(late)
            ));
        }
    }
    let _ = writeln!(s, "\nGoals: {}.", goals.join("; "));

    // Per hour.
    let _ = writeln!(
        s,
        "\nPer hour (Berlin time; rank = median / best of the models that served; top = requests \
         served by the strongest daily-capped model{}):\n",
        i.strongest
            .as_ref()
            .map(|st| format!(", rank {}: {}", st.rank, st.references.join(", ")))
            .unwrap_or_default()
    );
    let _ = write!(s, "| hour | offered |");
    for r in runs {
        let _ = write!(s, " {0}: served | {0}: rank | {0}: top |", r.pacing);
    }
    let _ = writeln!(s, "\n|---|---:|{}", "---:|---:|---:|".repeat(runs.len()));
    let refs: Vec<String> = i
        .strongest
        .as_ref()
        .map(|st| st.references.clone())
        .unwrap_or_default();
    for h in 0..24 {
        let offered = i
            .trace
            .iter()
            .filter(|r| trace::local_hour(r.at) == h)
            .count();
        let mark = if busy.contains(&h) { "*" } else { "" };
        let _ = write!(s, "| {h:02}{mark} | {} |", thousands(offered as u64));
        for r in runs {
            let hour: Vec<&Outcome> = r.outcomes.iter().filter(|o| o.hour == h).collect();
            let served = hour.iter().filter(|o| o.status == 200).count() as u64;
            let rk = ranks(hour.iter().filter_map(|o| o.rank).collect());
            let top = hour.iter().filter(|o| served_by(o, &refs)).count();
            let _ = write!(s, " {} | {rk} | {top} |", thousands(served));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\n`*` busy hours (load ≥ half the peak).\n");

    // What the upstreams refused.
    for r in runs {
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        for c in r.calls.iter().filter(|c| c.status != 200) {
            let what = match c.cap {
                Some(cap) => format!("{} {}/{} ({cap})", c.status, c.provider, c.model),
                None => format!("{} {}/{} ({})", c.status, c.provider, c.model, c.why),
            };
            *by.entry(what).or_default() += 1;
        }
        let list = if by.is_empty() {
            "none".to_string()
        } else {
            by.iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let _ = writeln!(s, "Upstream refusals, pacing `{}`: {list}.\n", r.pacing);
        let mut by_provider: BTreeMap<&str, u64> = BTreeMap::new();
        for o in r.outcomes.iter().filter(|o| o.status == 200) {
            let provider = o.via.as_deref().and_then(|v| v.split('/').next());
            *by_provider.entry(provider.unwrap_or("?")).or_default() += 1;
        }
        let list: Vec<String> = by_provider
            .iter()
            .map(|(p, n)| format!("{p} {}", thousands(*n)))
            .collect();
        let _ = writeln!(
            s,
            "Served by provider, pacing `{}`: {}.\n",
            r.pacing,
            list.join(", ")
        );
        let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
        for o in r
            .outcomes
            .iter()
            .filter(|o| o.status != 200 && o.status != 429)
        {
            *statuses.entry(o.status).or_default() += 1;
        }
        if !statuses.is_empty() {
            let list: Vec<String> = statuses.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(
                s,
                "Other statuses to the client, pacing `{}` (0: no answer; 502 also counts a broken stream): {}.\n",
                r.pacing,
                list.join(", ")
            );
        }
    }
    for note in &i.skipped {
        let _ = writeln!(s, "**Not run:** {note}\n");
    }

    let c = i.capacity;
    let per_provider = c
        .providers
        .iter()
        .map(|(p, d, m)| format!("{p} {} ({m}/min)", thousands(*d)))
        .collect::<Vec<_>>()
        .join(", ");
    let peak = peak_minute(i.trace);
    let _ = writeln!(
        s,
        "1. Capacity: per pool (a model on a key, a model of a Google project, an account), the \
         least of its requests per day, requests per minute × minutes, tokens per day ÷ the mean \
         tokens of the day's requests that model could take, and tokens per minute × minutes ÷ \
         what its provider charges up front for them; per stretch between resets (two for Google, \
         split at 09:00); an account at most the sum of its models. By provider: {per_provider}. \
         While no daily cap is reached the per-minute caps allow about {} requests a minute; \
         the busiest minute of the trace offers {peak}. An upper bound: it assumes every pool gets \
         exactly what it can take, whenever it has room. Most of it is per-minute capacity \
         (Mistral's is one request a second all day), which a quiet night leaves idle: a working \
         day offered at this size exceeds what the keys can take each minute through the busy \
         hours, so a good part of it is unservable whoever routes it; the servable row separates \
         that from Freeway's choices.",
        c.per_minute
    );
    let _ = writeln!(
        s,
        "2. Servable: offered minus the requests that were not served at a moment when no key \
         could have taken them: no live model that fits the request (capabilities, the model \
         asked for, context, a TPM cap that could never hold it) had room in every pool it \
         counts in, by the mock providers' own counters right after the refusal, charging the \
         request its real answer \
         length (which Freeway cannot know) and the provider's up-front charge. Each room found is \
         then taken in shadow counters, so one free slot makes one refused request servable; \
         and when a request Freeway serves later takes a slot so credited (a daily slot paced \
         for a later hour, a minute's slot), that credit is withdrawn: one slot, one request, \
         whoever asked first. Counters reflect what Freeway chose earlier: this is the share Freeway served of what \
         was still possible at each moment, not against a clairvoyant plan for the whole day."
    );
    let _ = writeln!(
        s,
        "3. Every 429 a mock provider answered: Freeway sent a request the provider had no room \
         for, by the provider's own count (RPM, RPD, TPM, TPD, account and project pools)."
    );
    let _ = writeln!(
        s,
        "4. Models the provider retired or does not serve on the free tier (404/410), requests \
         over a ceiling or the context (400), over Groq's TPM cap on their own (413)."
    );
    let _ = writeln!(
        s,
        "5. Rank from Freeway's catalog (1 = strongest), of the model in `X-Routed-Via`."
    );
    s
}

/// The simulated date, e.g. "Tuesday 2026-12-01".
pub fn day_label() -> String {
    use chrono::TimeZone;
    chrono::Utc
        .timestamp_millis_opt(trace::start_ms() + 3_600_000)
        .single()
        .map(|t| {
            t.with_timezone(&trace::USER_TZ)
                .format("%A %Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default()
}

/// One tab-separated line per run, for the table of every profile (`bench/yield.sh
/// --profiles`): profile, pacing, served, servable, overshoot 429s, the last busy hour, what
/// the strongest daily-capped model served in it, and the last hour it served at all (`-`:
/// never).
pub fn summary(i: &Inputs) -> String {
    let busy = trace::busy_hours();
    let last_busy = busy.last().copied().unwrap_or(23);
    let refs: Vec<String> = i
        .strongest
        .as_ref()
        .map(|st| st.references.clone())
        .unwrap_or_default();
    let mut s = String::new();
    for r in i.runs {
        let f = figures(r);
        let top: Vec<usize> = r
            .outcomes
            .iter()
            .filter(|o| served_by(o, &refs))
            .map(|o| o.hour)
            .collect();
        let in_last = top.iter().filter(|h| **h == last_busy).count();
        let last = top
            .iter()
            .max()
            .map_or("-".to_string(), |h| format!("{h:02}"));
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t{:02}\t{}\t{}",
            trace::day().name,
            r.pacing,
            f.served,
            f.servable,
            f.overshoot,
            last_busy,
            in_last,
            last
        );
    }
    s
}

pub fn served_by(o: &Outcome, refs: &[String]) -> bool {
    o.status == 200 && o.via.as_ref().is_some_and(|v| refs.contains(v))
}

/// The most requests offered in one minute.
pub fn peak_minute(trace: &[Req]) -> u64 {
    let mut per: BTreeMap<i64, u64> = BTreeMap::new();
    for r in trace {
        *per.entry(r.at / 60_000).or_default() += 1;
    }
    per.values().copied().max().unwrap_or(0)
}

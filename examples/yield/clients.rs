//! The report of a day with two client keys (`--clients two`): the working day sent with the
//! key `interactive`, a batch job with the key `batch` from 06:00, through one Freeway, with
//! `routing.fairness` off and weighted. Per key: offered, served, servable, served / servable;
//! what each got of every daily-capped model while both asked; the interactive key's share of
//! the strongest of them against its weighted share; the total served under each setting.

use std::fmt::Write;

use crate::capacity::Capacity;
use crate::report::{Outcome, Run, Strongest, pct, peak_minute, ranks, served_by, thousands};
use crate::trace::{self, BATCH_FROM_HOUR, Client, Req};

/// Everything the report is made of.
pub struct Inputs<'a> {
    pub trace: &'a [Req],
    pub capacity: &'a Capacity,
    pub runs: &'a [Run],
    pub strongest: Option<Strongest>,
    /// Every live daily-capped model: (catalog rank, reference, the local hour its day last
    /// started: 0 for a rolling day, 9 for Google's), strongest first.
    pub capped: Vec<(u32, String, usize)>,
    pub keys: String,
    pub seed: u64,
    pub concurrency: usize,
    pub machine: String,
    pub skipped: Vec<String>,
    /// (interactive, batch).
    pub weights: (u32, u32),
    pub batch_rate: f64,
}

/// The hours both keys ask: the batch job's, 06:00 to midnight (the interactive key sends
/// requests in every minute of them).
fn both_ask(hour: usize) -> bool {
    hour >= BATCH_FROM_HOUR as usize
}

fn label(r: &Run) -> String {
    format!(
        "pacing `{}`, fairness `{}`",
        r.pacing,
        r.fairness.unwrap_or("weighted")
    )
}

fn of<'a>(r: &'a Run, client: Option<Client>) -> impl Iterator<Item = &'a Outcome> + 'a {
    r.outcomes
        .iter()
        .filter(move |o| client.is_none_or(|c| o.client == c))
}

/// One key's figures (`None`: both keys).
struct Figures {
    offered: u64,
    served: u64,
    refused: u64,
    fair_held: u64,
    failed: u64,
    servable: u64,
    /// Refused while a daily-capped model had room (fair share or pacing kept it).
    capped_room: u64,
    ranks: Vec<u32>,
    top_day: u64,
    top_both: u64,
}

fn figures(r: &Run, client: Option<Client>, top: &[String], capped: &[String]) -> Figures {
    let count = |f: &dyn Fn(&Outcome) -> bool| of(r, client).filter(|o| f(o)).count() as u64;
    Figures {
        offered: count(&|_| true),
        served: count(&|o| o.status == 200),
        refused: count(&|o| o.status == 429),
        fair_held: count(&|o| o.fair_held),
        failed: count(&|o| o.status != 200 && o.status != 429),
        servable: count(&|o| o.servable),
        capped_room: count(&|o| o.room.as_ref().is_some_and(|m| capped.contains(m))),
        ranks: of(r, client).filter_map(|o| o.rank).collect(),
        top_day: count(&|o| served_by(o, top)),
        top_both: count(&|o| both_ask(o.hour) && served_by(o, top)),
    }
}

/// Requests `refs` served to `client` while both keys asked.
fn served_while_both(r: &Run, client: Client, refs: &[String]) -> u64 {
    of(r, Some(client))
        .filter(|o| both_ask(o.hour) && served_by(o, refs))
        .count() as u64
}

/// Requests `refs` served to `client` in each model's own day as it stands at midnight (from
/// the hour it started, `day_from`: the whole simulated day for a rolling day).
fn served_in_day(r: &Run, client: Client, refs: &[String], capped: &[(u32, String, usize)]) -> u64 {
    let from = |v: &str| {
        capped
            .iter()
            .find(|(_, m, _)| m == v)
            .map_or(0, |(_, _, h)| *h)
    };
    of(r, Some(client))
        .filter(|o| served_by(o, refs))
        .filter(|o| o.via.as_deref().is_some_and(|v| o.hour >= from(v)))
        .count() as u64
}

/// The hours of a model's day at midnight, for the report: "00–24 h, a rolling day".
fn day_hours(refs: &[String], capped: &[(u32, String, usize)]) -> String {
    let from = capped
        .iter()
        .filter(|(_, m, _)| refs.contains(m))
        .map(|(_, _, h)| *h)
        .max()
        .unwrap_or(0);
    if from == 0 {
        "00–24 h, a rolling day".into()
    } else {
        format!("{from:02}–24 h, since its reset")
    }
}

/// "i / b (share of i)".
fn split(i: u64, b: u64) -> String {
    format!("{} / {} ({})", thousands(i), thousands(b), pct(i, i + b))
}

/// The whole report.
pub fn render(i: &Inputs) -> String {
    let mut s = String::new();
    let runs = i.runs;
    let (wi, wb) = i.weights;
    let weighted_share = f64::from(wi) / f64::from(wi + wb);
    let from = BATCH_FROM_HOUR;
    let offered = |c: Client| i.trace.iter().filter(|r| r.client == c).count() as u64;
    let _ = writeln!(s, "# Quota yield: two client keys, one simulated day\n");
    let _ = writeln!(
        s,
        "`bench/yield.sh --clients two` ({}). Simulated {}, profile `{}`, 00:00–24:00 in \
         Europe/Berlin (Google's day resets at 09:00 Berlin). Keys: {}. Two client keys through \
         one Freeway, `api_keys = [{{ name = \"interactive\", … }}, {{ name = \"batch\", … }}]`, \
         weights {wi} and {wb}{}:\n",
        i.machine,
        crate::report::day_label(),
        trace::day().name,
        i.keys,
        if (wi, wb) == (1, 1) {
            " (Freeway's default; no `[auth.limits]`)".to_string()
        } else {
            " (`[auth.limits.NAME] weight`)".to_string()
        }
    );
    let _ = writeln!(
        s,
        "- `interactive`: the working day of `bench/results/yield.md`, unchanged (seed {}, {} \
         requests: night low, morning ramp, two peaks, evening tail, six bursts; prompts of 20 to \
         90k tokens, tools, images, streams, a tenth naming a model).",
        i.seed,
        thousands(offered(Client::Interactive))
    );
    let _ = writeln!(
        s,
        "- `batch`: a document-processing job that asks for as much as it can from {from:02}:00 to \
         midnight: {} requests a second, each second's sent together ({} requests); `auto`, a \
         fixed system prompt, 100–1000 prompt tokens, `max_tokens` 512, answers of 50–400 \
         tokens; no tools, images, streams or conversations. It does not retry a 429: a refused \
         request is counted refused and the next second brings new ones.",
        i.batch_rate,
        thousands(offered(Client::Batch))
    );
    let _ = writeln!(
        s,
        "\nEach simulated second's requests (both keys') are sent together, {} at a time, over \
         HTTP to Freeway on 127.0.0.1; mock providers enforce their own caps on the same \
         simulated clock. The keys' theoretical capacity for this mix is {} requests a day \
         (about {} a minute while no daily cap is reached; the busiest minute offers {}).\n",
        i.concurrency,
        thousands(i.capacity.per_day),
        i.capacity.per_minute,
        peak_minute(i.trace)
    );

    let top: Vec<String> = i
        .strongest
        .as_ref()
        .map(|st| st.references.clone())
        .unwrap_or_default();
    let top_name = i
        .strongest
        .as_ref()
        .map(|st| format!("rank {}: {}", st.rank, st.references.join(", ")))
        .unwrap_or_else(|| "none".into());

    let capped: Vec<String> = i.capped.iter().map(|(_, m, _)| m.clone()).collect();

    // The main table.
    let _ = writeln!(
        s,
        "| | {} |",
        runs.iter().map(label).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|---|{}", "---:|".repeat(runs.len()));
    let mut row = |label: &str, f: &dyn Fn(&Run) -> String| {
        let cells: Vec<String> = runs.iter().map(f).collect();
        let _ = writeln!(s, "| {label} | {} |", cells.join(" | "));
    };
    for (name, client) in [
        ("interactive", Some(Client::Interactive)),
        ("batch", Some(Client::Batch)),
        ("both keys", None),
    ] {
        let f = |r: &Run| figures(r, client, &top, &capped);
        row(&format!("**{name}**: offered"), &|r| {
            thousands(f(r).offered)
        });
        row(&format!("{name}: served"), &|r| {
            let x = f(r);
            format!("{} ({})", thousands(x.served), pct(x.served, x.offered))
        });
        row(
            &format!("{name}: refused (429), of which naming fair share ⁶"),
            &|r| {
                let x = f(r);
                format!("{} ({})", thousands(x.refused), thousands(x.fair_held))
            },
        );
        row(&format!("{name}: failed otherwise"), &|r| {
            thousands(f(r).failed)
        });
        row(&format!("{name}: servable ¹"), &|r| {
            thousands(f(r).servable)
        });
        row(
            &format!("{name}: refused while servable, of which a daily-capped model had room ⁷"),
            &|r| {
                let x = f(r);
                format!(
                    "{} ({})",
                    thousands(x.servable.saturating_sub(x.served)),
                    thousands(x.capped_room)
                )
            },
        );
        row(&format!("**{name}: served / servable**"), &|r| {
            let x = f(r);
            format!("**{}**", pct(x.served, x.servable))
        });
        row(
            &format!("{name}: rank of the serving model, median / best ⁵"),
            &|r| ranks(f(r).ranks),
        );
        row(
            &format!("{name}: strongest daily-capped model served, whole day / {from:02}–24 h ²"),
            &|r| {
                let x = f(r);
                format!("{} / {}", thousands(x.top_day), thousands(x.top_both))
            },
        );
    }
    row("**upstream 429s from Freeway's overshoot** ³", &|r| {
        format!(
            "**{}**",
            thousands(r.calls.iter().filter(|c| c.status == 429).count() as u64)
        )
    });
    row("wall-clock time of the run", &|r| {
        format!("{:.0} s", r.elapsed.as_secs_f64())
    });

    // The goals, per pacing: fairness weighted against off.
    let mark = |ok: bool| if ok { "met" } else { "**not met**" };
    let mut pacings: Vec<&str> = runs.iter().map(|r| r.pacing).collect();
    pacings.dedup();
    let _ = writeln!(
        s,
        "\nGoals (issue 21): with fairness `weighted`, the interactive key's share of the \
         strongest daily-capped model at least its weighted share while it asks, {wi} / ({wi} + \
         {wb}) = {:.1} % ², read two ways: of what the model served while both keys asked \
         ({from:02}:00–24:00), and of the model's day as Freeway shares it (max-min over the \
         provider's day, so use before {from:02}:00, while the interactive key was alone, \
         counts); and the total served no more than 0.5 % below fairness `off`.\n",
        100.0 * weighted_share
    );
    for pacing in &pacings {
        let off = runs
            .iter()
            .find(|r| r.pacing == *pacing && r.fairness == Some("off"));
        let weighted = runs
            .iter()
            .find(|r| r.pacing == *pacing && r.fairness == Some("weighted"));
        let these: Vec<&Run> = runs.iter().filter(|r| r.pacing == *pacing).collect();
        let mut by_rank: Vec<(u32, Vec<String>)> = Vec::new();
        for (rank, m, _) in &i.capped {
            match by_rank.last_mut() {
                Some((r, ms)) if r == rank => ms.push(m.clone()),
                _ => by_rank.push((*rank, vec![m.clone()])),
            }
        }
        // The strongest capped models that served someone while both asked, in every run of
        // this pacing: where the share can be seen when the strongest is spent before 06:00.
        let serving = by_rank.iter().find(|(_, refs)| {
            these.iter().all(|r| {
                served_while_both(r, Client::Interactive, refs)
                    + served_while_both(r, Client::Batch, refs)
                    > 0
            })
        });
        let mut models: Vec<(String, Vec<String>)> = Vec::new();
        if i.strongest.is_some() {
            models.push((
                format!("strongest daily-capped model ({top_name})"),
                top.clone(),
            ));
        }
        if let Some((rank, refs)) = serving
            && *refs != top
        {
            models.push((
                format!(
                    "strongest daily-capped model that served while both asked (rank {rank}: {})",
                    refs.join(", ")
                ),
                refs.clone(),
            ));
        }
        for (what, refs) in &models {
            for r in &these {
                let ti = served_while_both(r, Client::Interactive, refs);
                let tb = served_while_both(r, Client::Batch, refs);
                let di = served_in_day(r, Client::Interactive, refs, &i.capped);
                let db = served_in_day(r, Client::Batch, refs, &i.capped);
                let judge = |a: u64, b: u64| {
                    if r.fairness != Some("weighted") {
                        String::new()
                    } else if a + b == 0 {
                        ": **not measurable** (it served neither key)".into()
                    } else {
                        format!(
                            ": {}",
                            mark(a as f64 >= weighted_share * (a + b) as f64 - 1e-9)
                        )
                    }
                };
                let _ = writeln!(
                    s,
                    "- {}, {what}: interactive / batch while both asked ({from:02}–24 h) {}{}; \
                     of the model's day as Freeway shares it ({}) {}{}.",
                    label(r),
                    split(ti, tb),
                    judge(ti, tb),
                    day_hours(refs, &i.capped),
                    split(di, db),
                    judge(di, db),
                );
            }
        }
        if let (Some(off), Some(weighted)) = (off, weighted) {
            let a = figures(off, None, &top, &capped).served;
            let b = figures(weighted, None, &top, &capped).served;
            let change = 100.0 * (b as f64 - a as f64) / a.max(1) as f64;
            let _ = writeln!(
                s,
                "- pacing `{pacing}`: total served, fairness `weighted` against `off`: {} against \
                 {} ({change:+.2} %): {}.",
                thousands(b),
                thousands(a),
                mark(change >= -0.5)
            );
        }
    }

    // Every daily-capped model, while both asked.
    let _ = writeln!(
        s,
        "\nWhat each key got of every daily-capped model while both asked ({from:02}:00–24:00), \
         interactive / batch (the interactive key's share) ⁴:\n"
    );
    let _ = writeln!(
        s,
        "| rank | model | {} |",
        runs.iter().map(label).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|---:|---|{}", "---:|".repeat(runs.len()));
    let mut all: Vec<String> = Vec::new();
    for (rank, m, _) in &i.capped {
        let refs = vec![m.clone()];
        all.push(m.clone());
        let cells: Vec<String> = runs
            .iter()
            .map(|r| {
                split(
                    served_while_both(r, Client::Interactive, &refs),
                    served_while_both(r, Client::Batch, &refs),
                )
            })
            .collect();
        let _ = writeln!(s, "| {rank} | {m} | {} |", cells.join(" | "));
    }
    let cells: Vec<String> = runs
        .iter()
        .map(|r| {
            split(
                served_while_both(r, Client::Interactive, &all),
                served_while_both(r, Client::Batch, &all),
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "| | **all daily-capped models** | {} |",
        cells.join(" | ")
    );
    let cells: Vec<String> = runs
        .iter()
        .map(|r| {
            let i = of(r, Some(Client::Interactive))
                .filter(|o| served_by(o, &all))
                .count() as u64;
            let b = of(r, Some(Client::Batch))
                .filter(|o| served_by(o, &all))
                .count() as u64;
            split(i, b)
        })
        .collect();
    let _ = writeln!(
        s,
        "| | all daily-capped models, whole day | {} |",
        cells.join(" | ")
    );

    let _ = writeln!(
        s,
        "\nThe same, of each model's day as Freeway shares it at midnight (from its reset: \
         09:00 for Google, the whole simulated day for a rolling day):\n"
    );
    let _ = writeln!(
        s,
        "| rank | model | {} |",
        runs.iter().map(label).collect::<Vec<_>>().join(" | ")
    );
    let _ = writeln!(s, "|---:|---|{}", "---:|".repeat(runs.len()));
    for (rank, m, _) in &i.capped {
        let refs = vec![m.clone()];
        let cells: Vec<String> = runs
            .iter()
            .map(|r| {
                split(
                    served_in_day(r, Client::Interactive, &refs, &i.capped),
                    served_in_day(r, Client::Batch, &refs, &i.capped),
                )
            })
            .collect();
        let _ = writeln!(s, "| {rank} | {m} | {} |", cells.join(" | "));
    }

    // Per hour, one table per pacing.
    for pacing in &pacings {
        let these: Vec<&Run> = runs.iter().filter(|r| r.pacing == *pacing).collect();
        let _ = writeln!(
            s,
            "\nPer hour, pacing `{pacing}` (Berlin time; I = interactive, B = batch; top = served \
             by the strongest daily-capped model, {top_name}; capped = served by any \
             daily-capped model):\n"
        );
        let _ = write!(s, "| hour | I offered | B offered |");
        for r in &these {
            let f = r.fairness.unwrap_or("?");
            let _ = write!(
                s,
                " {f}: I served | {f}: B served | {f}: I top | {f}: B top | {f}: I capped | {f}: B capped |"
            );
        }
        let _ = writeln!(
            s,
            "\n|---|---:|---:|{}",
            "---:|---:|---:|---:|---:|---:|".repeat(these.len())
        );
        for h in 0..24 {
            let offered = |c: Client| {
                i.trace
                    .iter()
                    .filter(|r| r.client == c && trace::local_hour(r.at) == h)
                    .count() as u64
            };
            let _ = write!(
                s,
                "| {h:02} | {} | {} |",
                thousands(offered(Client::Interactive)),
                thousands(offered(Client::Batch))
            );
            for r in &these {
                for refs in [None, Some(&top), Some(&all)] {
                    for c in [Client::Interactive, Client::Batch] {
                        let n = of(r, Some(c))
                            .filter(|o| o.hour == h && o.status == 200)
                            .filter(|o| refs.is_none_or(|refs| served_by(o, refs)))
                            .count() as u64;
                        let _ = write!(s, " {} |", thousands(n));
                    }
                }
            }
            let _ = writeln!(s);
        }
    }
    let _ = writeln!(s);
    for r in runs {
        let mut by_provider: std::collections::BTreeMap<(&str, Client), u64> = Default::default();
        for o in r.outcomes.iter().filter(|o| o.status == 200) {
            let provider = o.via.as_deref().and_then(|v| v.split('/').next());
            *by_provider
                .entry((provider.unwrap_or("?"), o.client))
                .or_default() += 1;
        }
        let mut providers: Vec<&str> = by_provider.keys().map(|(p, _)| *p).collect();
        providers.dedup();
        let list: Vec<String> = providers
            .iter()
            .map(|p| {
                let n = |c| by_provider.get(&(*p, c)).copied().unwrap_or(0);
                format!(
                    "{p} {} / {}",
                    thousands(n(Client::Interactive)),
                    thousands(n(Client::Batch))
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "Served by provider, {}, interactive / batch: {}.\n",
            label(r),
            list.join(", ")
        );
        for c in [Client::Interactive, Client::Batch] {
            let mut rooms: std::collections::BTreeMap<&str, u64> = Default::default();
            for o in of(r, Some(c)) {
                if let Some(m) = &o.room {
                    *rooms.entry(m.as_str()).or_default() += 1;
                }
            }
            let mut rooms: Vec<(&str, u64)> = rooms.into_iter().collect();
            rooms.sort_by_key(|(m, n)| (std::cmp::Reverse(*n), *m));
            let list: Vec<String> = rooms
                .iter()
                .map(|(m, n)| {
                    let mark = if capped.iter().any(|x| x == m) {
                        ""
                    } else {
                        " (no daily cap)"
                    };
                    format!("{m}{mark} {}", thousands(*n))
                })
                .collect();
            let _ = writeln!(
                s,
                "Refused while servable, {}, {}, by the model the mocks found room in ⁷: {}.\n",
                label(r),
                c.name(),
                if list.is_empty() {
                    "none".into()
                } else {
                    list.join(", ")
                }
            );
        }
        let refusals: u64 = r.calls.iter().filter(|c| c.status != 200).count() as u64;
        if refusals > 0 {
            let _ = writeln!(
                s,
                "Upstream refusals, {}: {} (see `YIELD_DEBUG=1`).\n",
                label(r),
                thousands(refusals)
            );
        }
    }
    for note in &i.skipped {
        let _ = writeln!(s, "**Not run:** {note}\n");
    }

    let _ = writeln!(
        s,
        "1. Servable, as in `bench/results/yield.md`, for each key's requests alike: served, or \
         refused at a moment when some live model that fits the request had room in every pool \
         it counts in, by the mock providers' own counters right after the refusal (charged the \
         real answer length). Each room found is taken in shadow counters shared by both keys, \
         so one free slot excuses one refused request, whichever key's (and none once a \
         request served later takes that slot). The batch key asks for \
         more than the keys can take whenever anything frees up, so its servable is bounded by \
         capacity: the slots left free at the moments its requests came, not its offered load. \
         A request held back by fair share from a model that had room, and refused because \
         nothing else had room, counts as servable and not served: the fair share's price, \
         shown in the row `of which naming fair share`."
    );
    let _ = writeln!(
        s,
        "2. The strongest daily-capped model: the best catalog rank among live models with a \
         daily cap of their own or their account's ({top_name}). Both keys ask from \
         {from:02}:00 to midnight (the interactive key sends requests every minute of it); its \
         weighted share then is its weight over the sum of the weights of the keys asking. \
         Freeway shares a model's day (its provider's reset: the last 24 hours, or Google's \
         Pacific day from 09:00 Berlin), so use before {from:02}:00, when the interactive key \
         was alone, counts against its share on a rolling day."
    );
    let _ = writeln!(
        s,
        "3. Every 429 a mock provider answered: a request Freeway sent that the provider had no \
         room for, by the provider's own count."
    );
    let _ = writeln!(
        s,
        "4. OpenRouter's free models share the account's 50 requests a day (Freeway shares them \
         as `openrouter/*`); Google's are per project and model, its day from 09:00 Berlin."
    );
    let _ = writeln!(
        s,
        "5. Rank from Freeway's catalog (1 = strongest), of the model in `X-Routed-Via`."
    );
    let _ = writeln!(
        s,
        "7. The model the mocks found room in for a request refused while servable (the first \
         that fits, in the providers' order: Google, Groq, Cerebras, Mistral, OpenRouter). Room \
         in a daily-capped model under fairness `weighted` is mostly a share kept for the other \
         key while it asks (the fair share's price to this key; the other key may use it \
         later), under pacing `even` also what pacing holds back; room in a model without a \
         daily cap (Mistral) is a per-minute slot lost at the edge of a saturated minute, as in \
         `bench/results/yield.md`."
    );
    let _ = writeln!(
        s,
        "6. A 429 whose message names fair share among the reasons its candidates were not \
         used (\"held for other client keys' fair share of its daily cap\"): fair share held \
         this key back from at least one model, and nothing else had room. An indication, not a \
         measure of fair share's cost: the model held may have had no room anyway (a key over \
         its share of a spent cap is still held from it: the interactive key from OpenRouter \
         all day with pacing off), and the message lists only the first 12 candidates, so a hold \
         on a weak model can go unnamed."
    );
    s
}

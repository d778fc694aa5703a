#!/usr/bin/env python3
"""Turn the raw files bench/run.sh leaves in its results dir into a markdown table (and JSON).

usage: report.py RESULTS_DIR OUT.md OUT.json
"""
import json
import os
import sys

R, OUT_MD, OUT_JSON = sys.argv[1], sys.argv[2], sys.argv[3]


def load(name):
    p = os.path.join(R, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return json.load(f)


def num(name):
    p = os.path.join(R, name)
    if not os.path.exists(p):
        return None
    txt = open(p).read().strip()
    return float(txt) if txt else None


meta = {}
for line in open(os.path.join(R, "meta.txt")):
    k, _, v = line.rstrip("\n").partition("=")
    meta[k] = v

rows = []  # (section, metric, direct, freeway, figure, target, met)
summary = {"meta": meta, "figures": {}}


def fmt(v, unit="", nd=3):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:.{nd}f}{unit}"


def signed(v, unit="", nd=3):
    if v is None:
        return "n/a"
    return f"{v:+.{nd}f}{unit}"


def verdict(value, limit, kind):
    if value is None or limit is None:
        return "n/a"
    ok = value <= limit if kind == "le" else value >= limit
    return "met" if ok else "**missed**"


def row(section, metric, direct, freeway, figure, target="", met=""):
    rows.append((section, metric, direct, freeway, figure, target, met))


def record(key, value):
    summary["figures"][key] = value


def diff(a, b, key):
    if a is None or b is None or a.get(key) is None or b.get(key) is None:
        return None
    return b[key] - a[key]


# a) throughput
td, tf = load("thr_direct.json"), load("thr_freeway.json")
ratio = (tf["rps"] / td["rps"]) if td and tf and td["rps"] else None
c = meta.get("conc")
row("a", f"throughput, c={c}, non-stream (req/s)", fmt(td and td["rps"], nd=0), fmt(tf and tf["rps"], nd=0),
    fmt(ratio * 100 if ratio is not None else None, " % of direct", 1), "≥ 25 % of direct",
    verdict(ratio, 0.25, "ge"))
record("throughput_direct_rps", td and td["rps"])
record("throughput_freeway_rps", tf and tf["rps"])
record("throughput_ratio", ratio)

# b) fixed rate
rd, rf = load("rate_direct.json"), load("rate_freeway.json")
rate = meta.get("rate")
if rd and rf:
    for p in ("p50", "p90", "p99"):
        k = p + "_ms"
        added = diff(rd, rf, k)
        target, met = "", ""
        if p == "p50":
            target, met = "added ≤ 0.1 ms", verdict(added, 0.1, "le")
        elif p == "p99":
            target, met = "added ≤ 0.5 ms", verdict(added, 0.5, "le")
        row("b", f"latency {p} at {rate} req/s (ms)", fmt(rd[k]), fmt(rf[k]), signed(added, " ms added"), target, met)
        record(f"rate_added_{p}_ms", added)
else:
    row("b", f"latency at {rate} req/s", "skipped", "skipped", "driver has no fixed-rate mode", "", "n/a")

# c) concurrency 1
cd, cf = load("c1_direct.json"), load("c1_freeway.json")
for p in ("p50", "p90", "p99"):
    k = p + "_ms"
    added = diff(cd, cf, k)
    target, met = "", ""
    if p == "p50":
        target, met = "added ≤ 0.1 ms", verdict(added, 0.1, "le")
    elif p == "p99":
        target, met = "added ≤ 0.5 ms", verdict(added, 0.5, "le")
    row("c", f"latency {p} at concurrency 1 (ms)", fmt(cd and cd[k]), fmt(cf and cf[k]),
        signed(added, " ms added"), target, met)
    record(f"c1_added_{p}_ms", added)
row("c", "throughput at concurrency 1 (req/s)", fmt(cd and cd["rps"], nd=0), fmt(cf and cf["rps"], nd=0), "", "", "")

# d) streaming
sd, sf = load("stream_direct.json"), load("stream_freeway.json")


def sget(s, metric, p):
    return None if s is None else s[metric][p]


streams, chunks, delay = meta.get("streams"), meta.get("chunks"), meta.get("chunk_delay")
rounds = meta.get("stream_rounds")
for metric, label in (("ttfb_ms", "TTFB"), ("total_ms", "total time")):
    for p in ("p50", "p99"):
        a, b = sget(sd, metric, p), sget(sf, metric, p)
        added = None if a is None or b is None else b - a
        target, met = "", ""
        if metric == "ttfb_ms" and p == "p50":
            target, met = "added ≤ 1 ms", verdict(added, 1.0, "le")
        row("d", f"stream {label} {p} ({streams} concurrent × {chunks} chunks / {delay} ms, {rounds} rounds) (ms)",
            fmt(a, nd=2), fmt(b, nd=2), signed(added, " ms added", 2), target, met)
        record(f"stream_added_{metric[:-3]}_{p}_ms", added)
for p in ("p50", "p99"):
    a, b = sget(sd, "gap_ms", p), sget(sf, "gap_ms", p)
    row("d", f"inter-event gap {p} seen by client (ms)", fmt(a, nd=2), fmt(b, nd=2), "", "", "")
    record(f"stream_gap_{p}_ms_direct", a)
    record(f"stream_gap_{p}_ms_freeway", b)
fd = sd and sd["gaps_under_1ms_frac"]
ff = sf and sf["gaps_under_1ms_frac"]
# Not batched: Freeway must not add gaps of ~0 ms (events coalesced into one read) beyond what the
# direct path shows, and every stream must carry the same number of events.
batched_ok = None
if sd and sf:
    batched_ok = (ff - fd) <= 0.01 and sf["events_per_stream"]["min"] == sd["events_per_stream"]["min"] \
        and sf["ok"] == sf["streams"]
row("d", "share of gaps < 1 ms (coalesced events)", fmt(fd * 100 if fd is not None else None, " %", 1),
    fmt(ff * 100 if ff is not None else None, " %", 1),
    f"events/stream {sget(sd, 'events_per_stream', 'p50')} vs {sget(sf, 'events_per_stream', 'p50')}",
    "not batched (≤ direct + 1 pt, same events)", "n/a" if batched_ok is None else ("met" if batched_ok else "**missed**"))
row("d", "streams completed", f"{sd and sd['ok']}/{sd and sd['streams']}", f"{sf and sf['ok']}/{sf and sf['streams']}",
    "", "", "")
record("stream_not_batched", batched_ok)

# e) CPU
tck = float(meta.get("clk_tck", "100"))


def cpu_per_1000(before, after, completed):
    b, a = num(before), num(after)
    if b is None or a is None or not completed:
        return None
    return (a - b) / tck / completed * 1000.0


cpu = cpu_per_1000("cpu_before", "cpu_after", tf and tf["completed"])
row("e", f"Freeway CPU s per 1000 non-stream requests (during a, c={c})", "", fmt(num("cpu_after") and (num("cpu_after") - num("cpu_before")) / tck, " s CPU in all", 2),
    fmt(cpu, " s", 4), "≤ 0.05 s", verdict(cpu, 0.05, "le"))
record("cpu_s_per_1000", cpu)
cpu_rate = cpu_per_1000("cpu_rate_before", "cpu_rate_after", rf and rf["completed"])
if cpu_rate is not None:
    row("e", f"Freeway CPU s per 1000 non-stream requests (during b, {rate} req/s)", "", "", fmt(cpu_rate, " s", 4), "(info)", "")
    record("cpu_s_per_1000_at_rate", cpu_rate)
n_streams = (sf["streams"] + sf["concurrency"]) if sf else None  # measured rounds + 1 warm-up round
cpu_stream = cpu_per_1000("cpu_stream_before", "cpu_stream_after", n_streams)
if cpu_stream is not None:
    row("e", f"Freeway CPU s per 1000 streams of {chunks} chunks (during d)", "", "", fmt(cpu_stream, " s", 3), "(info)", "")
    record("cpu_s_per_1000_streams", cpu_stream)

# d2) the other dialects' streams, against chat measured in the same stretch
SURFACES = ("chat", "messages", "responses", "gemini")
surf = {s: load(f"surface_{s}.json") for s in SURFACES}
base_ttfb = sget(sd, "ttfb_ms", "p50")
chat_s = surf["chat"]
chat_added = None if chat_s is None or base_ttfb is None else chat_s["ttfb_ms"]["p50"] - base_ttfb
n_chat = (chat_s["streams"] + chat_s["concurrency"]) if chat_s else None
chat_cpu = cpu_per_1000("cpu_surface_chat_before", "cpu_surface_chat_after", n_chat)
for s in SURFACES:
    d = surf[s]
    if d is None:
        continue
    ttfb = d["ttfb_ms"]["p50"]
    added = None if base_ttfb is None or ttfb is None else ttfb - base_ttfb
    n = d["streams"] + d["concurrency"]
    c = cpu_per_1000(f"cpu_surface_{s}_before", f"cpu_surface_{s}_after", n)
    target, met = "(baseline)", ""
    if s != "chat":
        target = "CPU and added TTFB within 25 % of chat"
        ok_cpu = c is not None and chat_cpu is not None and c <= chat_cpu * 1.25
        # Added TTFB differences under 0.5 ms are noise on this machine, whatever the ratio.
        ok_ttfb = added is not None and chat_added is not None and (added <= chat_added * 1.25 or added - chat_added <= 0.5)
        met = "met" if ok_cpu and ok_ttfb else "**missed**"
    route = {"chat": "/v1/chat/completions", "gemini": "/v1beta …:streamGenerateContent"}.get(s, f"/v1/{s}")
    row("d2", f"{route} streams: TTFB p50 / CPU s per 1000 streams",
        fmt(base_ttfb, nd=2), fmt(d["ttfb_ms"]["p50"], nd=2),
        f"{signed(added, ' ms added', 2)}; {fmt(c, ' s CPU', 3)}; {d['ok']}/{d['streams']} ok", target, met)
    record(f"surface_{s}_added_ttfb_p50_ms", added)
    record(f"surface_{s}_cpu_s_per_1000_streams", c)

# f) memory
MB = 1024.0
idle = num("rss_idle_start_kb")
idle_few = num("rss_idle_few_kb")
idle_w = num("rss_idle_warm_kb")
peak = num("rss_peak_loads_kb")
peak_all = num("rss_peak_all_kb")
after = num("rss_after_kb")
hold = load("hold.json")
hold_rss = hold and hold.get("rss_bytes_max")
hold_mb = hold_rss / 1024.0 / 1024.0 if hold_rss else None
row("f", "Freeway RSS idle, fresh start, no request yet (MB)", "", fmt(idle and idle / MB, nd=1), "", "(info)", "")
row("f", "Freeway RSS idle after 10 requests (MB)", "", fmt(idle_few and idle_few / MB, nd=1), "", "≤ 15 MB",
    verdict(idle_few and idle_few / MB, 15, "le"))
row("f", "Freeway RSS idle after 6 s warm-up load (~40k requests) (MB)", "", fmt(idle_w and idle_w / MB, nd=1), "", "(info)", "")
row("f", "Freeway peak RSS (VmHWM) over loads a–d (MB)", "", fmt(peak and peak / MB, nd=1), "", "≤ 64 MB",
    verdict(peak and peak / MB, 64, "le"))
hold_label = f"Freeway RSS with {hold and hold['opened']}/{meta.get('hold')} streams held open (MB)"
row("f", hold_label, "", fmt(hold_mb, nd=1), f"held ok {hold and hold['held_ok']}", "≤ 64 MB", verdict(hold_mb, 64, "le"))
row("f", "Freeway VmHWM incl. held streams / RSS after (MB)", "", fmt(peak_all and peak_all / MB, nd=1),
    f"{fmt(after and after / MB, ' MB after', 1)}", "", "")
record("rss_idle_start_mb", idle and idle / MB)
record("rss_idle_few_mb", idle_few and idle_few / MB)
record("rss_idle_warm_mb", idle_w and idle_w / MB)
record("rss_peak_loads_mb", peak and peak / MB)
record("rss_hold_mb", hold_mb)
record("rss_peak_all_mb", peak_all and peak_all / MB)

# Request log (SQLite, background writer)
rl = load("reqlog.json") or {}
sent = 10  # sanity requests
for name in ("warm_freeway", "thr_freeway", "rate_freeway", "c1_freeway"):
    d = load(name + ".json")
    if d:
        sent += d["completed"] + sum(v for k, v in d["errors"].items())
sent += 8  # warm-up streams
if sf:
    sent += sf["streams"] + sf["concurrency"]
for d in surf.values():
    if d:
        sent += d["streams"] + d["concurrency"]
if hold:
    sent += hold["requested"]
row("g", "request-log rows written / requests sent to Freeway", "", f"{rl.get('rows', 'n/a')} / ~{sent}",
    f"dropped (metric): {rl.get('dropped', 'n/a')}", "(info)", "")
record("reqlog", {**rl, "sent_approx": sent})

# Errors / status codes
problems = []
for name in ("warm_freeway", "thr_freeway", "rate_freeway", "c1_freeway", "thr_direct", "rate_direct", "c1_direct"):
    d = load(name + ".json")
    if not d:
        continue
    bad = {k: v for k, v in d["statuses"].items() if k != "200"}
    errs = {k: v for k, v in d["errors"].items() if "deadline" not in k}
    if bad or errs:
        problems.append(f"- `{name}`: non-200 {bad or '{}'}, errors {errs or '{}'}")
for name in ("stream_direct", "stream_freeway") + tuple(f"surface_{s}" for s in SURFACES):
    d = load(name + ".json")
    if d and d["failed"]:
        problems.append(f"- `{name}`: {d['failed']} failed streams, statuses {d['statuses']}, e.g. {d['errors'][:2]}")
if hold and (hold["opened"] < hold["requested"] or hold["errors"]):
    problems.append(f"- `hold`: opened {hold['opened']}/{hold['requested']}, errors {hold['errors'][:2]}")
if rl.get("dropped"):
    problems.append(f"- request log: Freeway dropped {rl['dropped']} of ~{sent} rows "
                    "(`freeway_request_log_dropped_total`): the background writer fell behind during the "
                    f"saturation runs; {rl.get('rows')} rows were written")
for k in ("metrics_error", "db_error"):
    if rl.get(k):
        problems.append(f"- request log check: {k}: {rl[k]}")
warn_lines = num("fw_warn_lines")
if warn_lines:
    sample = open(os.path.join(R, "fw_warn_sample")).read().strip().replace("\n", "\n    ")
    problems.append(f"- Freeway logged {int(warn_lines)} WARN/ERROR lines, e.g.:\n    {sample}")

met = [r for r in rows if r[6] == "met"]
missed = [r for r in rows if r[6] == "**missed**"]
summary["met"] = [r[1] for r in met]
summary["missed"] = [r[1] for r in missed]
summary["problems"] = problems

lines = []
lines.append("# Freeway load benchmark — latest run")
lines.append("")
lines.append(f"- date: {meta.get('date')}")
lines.append(f"- machine: {meta.get('nproc')} CPUs (`nproc`), {meta.get('cpu')}, kernel {meta.get('kernel')}")
lines.append(f"- freeway: commit {meta.get('commit')}, {meta.get('rustc')}; load driver: {meta.get('driver')}")
lines.append(f"- durations: throughput {meta.get('dur')} s, fixed rate {meta.get('rate_dur')} s, "
             f"c=1 {meta.get('c1_dur')} s per path; load driver, mock and Freeway share all cores (no pinning)")
lines.append(f"- streams: {streams} concurrent × {rounds} measured rounds (+1 warm-up round) per path; "
             f"hold test {meta.get('hold')} streams for {meta.get('hold_secs')} s")
lines.append("- \"added\" = Freeway percentile − direct percentile (difference of percentiles from two runs)")
lines.append("")
lines.append("| # | metric | direct (mock) | through Freeway | Freeway figure | target | verdict |")
lines.append("|---|---|---:|---:|---:|---|---|")
for r in rows:
    lines.append("| " + " | ".join(str(x) for x in r) + " |")
lines.append("")
lines.append(f"**Targets met: {len(met)} / {len(met) + len(missed)}**"
             + (f" — missed: {', '.join(r[1] for r in missed)}" if missed else ""))
lines.append("")
lines.append("## Errors, non-200s, Freeway warnings")
lines.append("")
lines.extend(problems or ["- none (every request 200; aborted-at-deadline requests of timed runs are not counted)"])
lines.append("")

with open(OUT_MD, "w") as f:
    f.write("\n".join(lines))
with open(OUT_JSON, "w") as f:
    json.dump(summary, f, indent=2)

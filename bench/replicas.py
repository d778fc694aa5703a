#!/usr/bin/env python3
"""The numbers of bench/replicas.sh.

  replicas.py summarize A.csv [B.csv ...]   one load from oha's per-request CSV, merged over
                                            the load generators (one per replica) -> JSON
  replicas.py report RESULTS_DIR            the markdown report of a run -> stdout

Percentiles are over every request of every file merged (not an average of percentiles);
throughput is the sum of each generator's requests / its own duration.
"""
import csv
import json
import math
import os
import statistics
import sys


def pct(sorted_values, p):
    if not sorted_values:
        return None
    # Nearest rank: the smallest value with at least p % of the values at or below it.
    i = min(len(sorted_values) - 1, max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1))
    return sorted_values[i]


def summarize(paths):
    lat, statuses, rps, completed = [], {}, 0.0, 0
    for path in paths:
        n, end = 0, 0.0
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                start, took = float(row["request-start"]), float(row["request-duration"])
                lat.append(took * 1000.0)
                statuses[row["status"]] = statuses.get(row["status"], 0) + 1
                end = max(end, start + took)
                n += 1
        completed += n
        if end > 0:
            rps += n / end
    lat.sort()
    return {
        "completed": completed,
        "ok": statuses.get("200", 0),
        "rps": rps,
        "p50_ms": pct(lat, 50),
        "p90_ms": pct(lat, 90),
        "p99_ms": pct(lat, 99),
        "statuses": statuses,
        "generators": len(paths),
    }


def report(r):
    meta = dict(line.rstrip("\n").split("=", 1) for line in open(os.path.join(r, "meta.txt")) if "=" in line)
    tck = int(meta["clk_tck"])
    shared = meta["shared"] == "1"
    pg = meta.get("store") == "postgres"
    engines = "PostgreSQL + Redis" if pg else "SQLite each + Redis"

    def j(name):
        p = os.path.join(r, name + ".json")
        return json.load(open(p)) if os.path.exists(p) else None

    def text(name, default=""):
        p = os.path.join(r, name)
        return open(p).read().strip() if os.path.exists(p) else default

    def cpu(name, done):
        """CPU seconds per 1000 requests: (replicas summed, PostgreSQL, Redis)."""
        try:
            b = [int(v) for v in text(name + ".cpu_before").split()]
            a = [int(v) for v in text(name + ".cpu_after").split()]
        except ValueError:
            return (None, None, None)
        if not done:
            return (None, None, None)
        return tuple((x - y) / tck / done * 1000.0 for x, y in zip(a, b))

    f3 = lambda v: "-" if v is None else f"{v:.3f}"
    f2 = lambda v: "-" if v is None else f"{v:.2f}"
    mb = lambda kb: "-" if not kb else f"{int(kb) / 1024:.1f}"
    label = {
        "a": "(a) 1 replica, SQLite",
        "b": f"(b) 1 replica, {engines}" if shared else "(b) 1 replica, SQLite (dry run)",
        "c": f"(c) 3 replicas, {engines}" if shared else "(c) 3 replicas, SQLite each (dry run)",
    }
    members = {"a": ["a"], "b": ["b"], "c": ["c1", "c2", "c3"]}
    out = []
    w = out.append
    w("# Freeway as several replicas: `bench/replicas.sh`")
    w("")
    if shared and not pg:
        w("**Redis only (`REPL_STORE=sqlite`)**: (b) and (c) share the ledger through Redis, but each")
        w("replica keeps its own SQLite store (no PostgreSQL).")
        w("")
    if not shared:
        w("**Dry run (`REPL_SHARED=0`)**: (b) and (c) ran on SQLite, each replica with its own data")
        w("dir and ledger; nothing was shared. These figures test the script, not replicas.")
        w("")
    w(f"- date: {meta['date']}; commit {meta['commit']}")
    w(f"- machine: {meta['nproc']} CPUs, {meta['cpu']}, {meta['kernel']}; the load generator, the mock,")
    w("  every replica and the engines share these CPUs, with no pinning")
    if shared and pg:
        w(f"- load generator: {meta['driver']}; {meta['postgres']} with fsync=off; Redis {meta['redis']} without persistence")
    elif shared:
        w(f"- load generator: {meta['driver']}; Redis {meta['redis']} without persistence; no PostgreSQL")
    else:
        w(f"- load generator: {meta['driver']}; no PostgreSQL or Redis (dry run)")
    w("- the same mock upstream for every row; `mock-model` has caps far above the load (rpm 10^8,")
    w("  rpd 10^9), so every request reserves a ledger pool; pacing off")
    if shared:
        w(f"- (b) and (c) run side by side on the same {'PostgreSQL and Redis' if pg else 'Redis'}, each idle while the other is measured")
    w("- (c): the load is spread round-robin by client connection: one oha per replica, each with a")
    w("  third of the connections (and of the rate), started together; latencies merged over the three")
    w("- added = Freeway's percentile − the mock direct's percentile (a difference of percentiles)")
    w("- CPU per 1000 requests: utime + stime from /proc, from before a load until every process is")
    w("  idle again (the request-log writers' work counts); Freeway summed over the setup's replicas;")
    w("  PostgreSQL (the postmaster and its backends) and Redis beside it (in the rows of (a), Redis's")
    w("  figure is its idle work for the other replicas, which stay connected)")
    w("")

    d = j("thr_direct")
    w(f"## 1. Throughput, {meta['conc']} connections, {meta['dur']} s")
    w("")
    w("| setup | req/s | share of direct | p50 ms | p99 ms | added p50 | added p99 | Freeway CPU s / 1000 req | PostgreSQL | Redis | RSS after, MB | statuses |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    if d:
        w(f"| mock upstream, direct | {d['rps']:.0f} | 100 % | {f3(d['p50_ms'])} | {f3(d['p99_ms'])} | | | | | | | {d['statuses']} |")
    for s in ("a", "b", "c"):
        x = j(f"thr_{s}")
        if not x:
            continue
        c = cpu(f"thr_{s}", x["completed"])
        share = f"{100.0 * x['rps'] / d['rps']:.1f} %" if d and d["rps"] else "-"
        add50 = x["p50_ms"] - d["p50_ms"] if d else None
        add99 = x["p99_ms"] - d["p99_ms"] if d else None
        w(f"| {label[s]} | {x['rps']:.0f} | {share} | {f3(x['p50_ms'])} | {f3(x['p99_ms'])} | {f3(add50)} | {f3(add99)} "
          f"| {f3(c[0])} | {f3(c[1] if pg else None)} | {f3(c[2] if shared else None)} | {mb(text(f'thr_{s}.rss_kb'))} | {x['statuses']} |")
    w("")

    rounds = int(meta["rounds"])
    w(f"## 2. A fixed {meta['rate']} req/s, {meta['rate_dur']} s, {rounds} interleaved rounds (medians over the rounds)")
    w("")
    w("| setup | p50 ms | added p50 | p99 ms | added p99 | Freeway CPU s / 1000 req | PostgreSQL | Redis | non-200 |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    direct = [j(f"rate_direct.r{i}") for i in range(1, rounds + 1)]
    med = lambda xs: statistics.median(xs) if xs and None not in xs else None
    if all(direct):
        w(f"| mock upstream, direct | {f3(med([x['p50_ms'] for x in direct]))} | | {f3(med([x['p99_ms'] for x in direct]))} | | | | | "
          f"{sum(x['completed'] - x['ok'] for x in direct)} |")
    added50 = {}
    for s in ("a", "b", "c"):
        xs = [j(f"rate_{s}.r{i}") for i in range(1, rounds + 1)]
        if not all(xs) or not all(direct):
            continue
        a50 = med([x["p50_ms"] - dd["p50_ms"] for x, dd in zip(xs, direct)])
        a99 = med([x["p99_ms"] - dd["p99_ms"] for x, dd in zip(xs, direct)])
        added50[s] = a50
        cs = [cpu(f"rate_{s}.r{i}", x["completed"]) for i, x in enumerate(xs, 1)]
        c = [med([v[k] for v in cs]) for k in range(3)]
        w(f"| {label[s]} | {f3(med([x['p50_ms'] for x in xs]))} | {f3(a50)} | {f3(med([x['p99_ms'] for x in xs]))} | {f3(a99)} "
          f"| {f3(c[0])} | {f3(c[1] if pg else None)} | {f3(c[2] if shared else None)} | {sum(x['completed'] - x['ok'] for x in xs)} |")
    w("")
    if "a" in added50 and "b" in added50:
        diff = added50["b"] - added50["a"]
        verdict = "met" if diff <= 0.3 else "NOT met"
        w(f"- (b) − (a), added p50 at {meta['rate']} req/s: **{diff:+.3f} ms** (bar of issue 22: at most +0.3 ms): {verdict}")
        w("")

    x = j("cap")
    received = int(text("cap_received", "-1"))
    cap = int(meta["cap"])
    w(f"## 3. A capped model over the three replicas of (c)")
    w("")
    w(f"`mock-capped` with `rpd = {cap}`, asked {meta['cap_offer']} times over the replicas of (c) at once"
      f" ({meta['cap_conc']} connections, a third per replica):")
    w("")
    w("```")
    w(f"cap {cap}, upstream received {received}")
    w("```")
    w("")
    if x:
        w(f"- answers: {x['statuses']} ({x['ok']} served)")
    w(f"- {'held: the upstream never received more than the cap' if 0 <= received <= cap else 'EXCEEDED: the upstream received more than the cap'}")
    w("")

    w("## Memory and state")
    w("")
    w("| replica | RSS after warm-up, MB | peak RSS (VmHWM), MB | WARN/ERROR log lines |")
    w("|---|---:|---:|---:|")
    for s in ("a", "b", "c"):
        for n in members[s]:
            w(f"| {label[s].split(' ', 1)[0]} {n} | {mb(text(f'rss_idle_{n}'))} | {mb(text(f'hwm_{n}'))} | {text(f'warn_{n}', '-')} |")
    w("")
    w("`/readyz` at the start and at the end:")
    w("")
    for n in ("a", "b", "c1"):
        w(f"- {n}: `{text(f'readyz_{n}', '-')}` → `{text(f'readyz_end_{n}', '-')}`")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "summarize":
        print(json.dumps(summarize(sys.argv[2:])))
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        sys.stdout.write(report(sys.argv[2]))
    else:
        sys.exit(__doc__)

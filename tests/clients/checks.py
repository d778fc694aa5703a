"""What the SDK scripts share: the list of checks, `expect`, the mock upstream's request log,
and the runner that parses the command line and runs every check, one line each.

A script registers checks with `@check`, reads its options from `ARGS` (filled in place by
`run`, so `from checks import ARGS` sees them) and ends with `run(name, doc, banner)`.
"""
import argparse
import json
import os
import sys
import time
import traceback

ARGS = argparse.Namespace()
CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def upstream_requests(since):
    """Chat-completions requests the mock upstream logged after `since`."""
    if not ARGS.mock_log:
        return None
    out = []
    try:
        with open(ARGS.mock_log) as f:
            for line in f:
                e = json.loads(line)
                if e["t"] >= since and e["path"].split("?")[0].endswith("/chat/completions"):
                    out.append(e)
    except FileNotFoundError:
        pass
    return out


def run(name, doc, banner):
    """Parse the options into ARGS, print `banner(ARGS)`, run the checks (all, or those
    --only names, less those --skip names) and exit 1 if any failed or none ran."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default=os.environ.get("FREEWAY_URL"))
    p.add_argument("--api-key", default=os.environ.get("FREEWAY_KEY"))
    p.add_argument("--model", default=os.environ.get("FREEWAY_MODEL", "mock-model"))
    p.add_argument("--mock-log", default=os.environ.get("MOCK_LOG"))
    p.add_argument("--skip", default="")
    p.add_argument("--only", default="")
    vars(ARGS).update(vars(p.parse_args()))
    if not ARGS.base_url or not ARGS.api_key:
        p.error("--base-url and --api-key (or FREEWAY_URL and FREEWAY_KEY) are required")
    skip = set(filter(None, ARGS.skip.split(",")))
    only = set(filter(None, ARGS.only.split(",")))
    print(banner(ARGS), flush=True)
    failed = 0
    ran = 0
    for fn in CHECKS:
        check_name = fn.__name__
        if check_name in skip or (only and check_name not in only):
            continue
        ran += 1
        t0 = time.time()
        try:
            detail = fn()
            print(f"ok   {check_name} ({time.time() - t0:.2f}s): {detail}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check runs
            failed += 1
            print(f"FAIL {check_name} ({time.time() - t0:.2f}s): {type(e).__name__}: {e}", flush=True)
            if not isinstance(e, AssertionError):  # an unexpected exception: where it came from
                traceback.print_exception(e, limit=-3, file=sys.stdout, chain=False)
    print(f"{name}: {ran - failed} of {ran} checks ok" + (f", {failed} FAILED" if failed else ""), flush=True)
    sys.exit(1 if failed or not ran else 0)

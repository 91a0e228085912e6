#!/usr/bin/env python3
"""Issue 15's one table: every performance figure, the command that measured it, and its anchor
or target, all measured in this one invocation.

It runs the repo's measuring scripts one after the other, each with --json, and prints one
markdown table (or, with --json, one object holding the table and every script's raw output):

  validation   scripts/validate_bench.py --rounds R --json
               relay-fa3 and libxml2 (lxml) on the 12 official samples, interleaved in the same
               rounds: the figure is the ratio libxml2 time / relay-fa3 time (median of rounds)
  calls        scripts/aws_calls.py --invoices 20 --sim-time-scale 1 --json
               the relay's AWS requests per accepted invoice, online, counted at the emulator,
               and their cost per million invoices at list prices
  batch        scripts/aws_calls.py --invoices 200 --sim-time-scale 1 --batch-target-delay-secs 1 --json
               the same, mostly batch (the anchor: the online run above)
  compute      scripts/lambda_run.py --json
               the deployed function binaries end to end behind a fake Lambda Runtime API:
               GB-seconds and log bytes per accepted invoice, their cost per million
  cold         scripts/cold_start.py --runs N --json
               exec to the first /next and peak RSS of every function, beside curl's GET of
               /next in the same rounds (the anchor)

The machine is shared and noisy, so where a figure is a time it is given with its anchor, run
in the same rounds, and the ratio is the figure to compare across runs. Counts (AWS calls) and
sizes (RSS, log bytes) do not depend on the load. The load average is printed before and after
each step.

  .venv/bin/python scripts/perf_table.py                       # everything (about 25 minutes)
  .venv/bin/python scripts/perf_table.py --quick               # fewer rounds and invoices (a smoke run)
  .venv/bin/python scripts/perf_table.py --only validation,cold --save /tmp/perf
"""

import argparse
import json
import os
import subprocess
import sys
import time

from relay_scripts import REPO, git_commit, loadavg
STEPS = ("validation", "calls", "batch", "compute", "cold")

# The targets issue 15 sets.
TARGET_VALIDATION_RATIO = 3.0
TARGET_CALLS_ONLINE = 12
TARGET_USD_PER_MILLION = 15.0
TARGET_COLD_MS = 30.0
TARGET_COLD_MIB = 32.0


def python():
    py = os.path.join(REPO, ".venv/bin/python")
    return py if os.path.exists(py) else sys.executable


def last_json(text):
    """The last JSON object a script printed (validate_bench prints its rounds first)."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON object in the output")


def run_step(name, argv, save):
    print(f"[{time.strftime('%H:%M:%S')}] {name}: $ {' '.join(argv)}  (load {loadavg()})", file=sys.stderr, flush=True)
    t0 = time.time()
    p = subprocess.run(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    secs = time.time() - t0
    info = {"command": " ".join(os.path.relpath(a, REPO) if a.startswith(REPO) else a for a in argv),
            "rc": p.returncode, "seconds": round(secs, 1), "load_after": loadavg()}
    if save:
        with open(os.path.join(save, f"{name}.out"), "w") as f:
            f.write(p.stdout)
        with open(os.path.join(save, f"{name}.err"), "w") as f:
            f.write(p.stderr)
    print(f"[{time.strftime('%H:%M:%S')}] {name}: rc {p.returncode} in {secs:.0f} s (load {info['load_after']})",
          file=sys.stderr, flush=True)
    if p.returncode != 0:
        info["error"] = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return info, None
    try:
        return info, last_json(p.stdout)
    except ValueError as e:
        info["error"] = str(e)
        return info, None


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def verdict(ok):
    return "met" if ok else "**not met**"


def rows_validation(info, out):
    rounds = out["rounds"]
    full = median([r["ratio_full"] for r in rounds])
    schema = median([r["ratio_schema_only"] for r in rounds])
    cpu_full = median([r["cpu_ratio_full"] for r in rounds])
    lib = median([r["libxml2_us"] for r in rounds])
    ours = median([r["full_us"] for r in rounds])
    lo, hi = min(r["ratio_full"] for r in rounds), max(r["ratio_full"] for r in rounds)
    return [
        ("validation, full validator (input rules, XSD, business rules)",
         f"**{full:.2f}×** libxml2 (median of {len(rounds)} rounds, {lo:.2f}–{hi:.2f}; on-CPU {cpu_full:.2f}×); "
         f"{ours:.1f} µs vs {lib:.1f} µs per sample",
         f"libxml2 ({out['libxml2']}) in the same rounds; target ≥ {TARGET_VALIDATION_RATIO:.0f}×",
         verdict(full >= TARGET_VALIDATION_RATIO), info["command"]),
        ("validation, schema-only (like for like with libxml2)",
         f"**{schema:.2f}×** libxml2 (median)", "the same rounds", verdict(schema >= TARGET_VALIDATION_RATIO),
         info["command"]),
    ]


def rows_calls(info, out, label, target):
    relay = out["parties"]["relay"]["calls_per_invoice"]
    usd = out["usd_per_million"]
    load = out.get("load") or {}
    modes = load.get("send_modes")
    ksef = load.get("ksef_calls_per_invoice")
    rows = [
        (f"relay AWS calls per accepted invoice, {label}",
         f"**{relay:.2f}** ({out['invoices_accepted']} accepted; send modes {json.dumps(modes)}; "
         f"KSeF calls per invoice {ksef:.3f})" if ksef is not None else f"**{relay:.2f}**",
         target[0], verdict(target[1](relay)), info["command"]),
        (f"request cost per million invoices, {label} (relay + event-source deletes + Lambda requests)",
         f"**${usd['total_requests']:.2f}** (relay ${usd['relay_requests']:.2f})",
         "list prices in scripts/relay_scripts.py (not re-checked online)", "–", info["command"]),
    ]
    return rows, relay, usd["relay_requests"] + usd["esm_deletes"]


def rows_compute(info, out):
    t, u = out["totals"], out["usd_per_million_invoices"]
    waits = ""
    if t.get("ksef_wait_ms_per_invoice") is not None:
        waits = (f"; of the billed ms, waiting on moto {t['aws_wait_ms_per_invoice']:.1f}, on the simulator "
                 f"{t['ksef_wait_ms_per_invoice']:.1f} ({t['ksef_requests_per_invoice']:.2f} KSeF requests)")
    # The template deploys arm64: its GB-s price; Lambda requests measured here (one per invocation).
    compute = u["lambda_gb_s_arm64"] + u["lambda_requests"] + u["logs_ingestion"]
    return [
        ("Lambda GB-seconds per accepted invoice (intake, send, send-batch, status, dlq-replay)",
         f"**{t['gb_s_per_invoice']:.5f}** GB-s: {t['invocations_per_invoice']:.2f} invocations, "
         f"{t['billed_ms_per_invoice']:.1f} billed ms{waits} ({t['accepted']}/{t['invoices']} accepted; "
         f"{out.get('build_note', 'build not given')}; KSeF answered by the local simulator, so a lower bound)",
         "part of the < $15 per million", "–", info["command"]),
        ("CloudWatch log bytes per accepted invoice (the functions' output + Lambda's own lines)",
         f"**{t['log_bytes_per_invoice']:,.0f}** bytes (EMF {t['emf_bytes_per_invoice']:,.0f})",
         "part of the < $15 per million", "–", info["command"]),
        ("compute + Lambda requests + logs per million invoices (arm64, as deployed)",
         f"**${compute:.2f}** (duration ${u['lambda_gb_s_arm64']:.2f}, requests ${u['lambda_requests']:.2f}, "
         f"logs ${u['logs_ingestion']:.2f}; x86_64 duration would be ${u['lambda_gb_s_x86']:.2f})",
         "part of the < $15 per million", "–", info["command"]),
    ], compute


def rows_cold(info, out):
    fns = out["functions"]
    worst_med = max(fns.values(), key=lambda s: s["median_ms"])
    worst_name = [n for n, s in fns.items() if s is worst_med][0]
    cpu = max(s["median_cpu_ms"] for s in fns.values())
    rss = max(s["peak_rss_mib"] for s in fns.values())
    anchor = out.get("anchor")
    ratios = [s.get("median_ratio_to_anchor") for s in fns.values() if s.get("median_ratio_to_anchor") is not None]
    per_fn = ", ".join(f"{n} {s['median_ms']:.1f}" for n, s in fns.items())
    anchor_txt = (f"curl's GET of /next in the same rounds: median {anchor['median_ms']:.1f} ms; "
                  f"functions {min(ratios):.2f}–{max(ratios):.2f}× it" if anchor and ratios else "no anchor")
    return [
        ("cold start, exec to first /next (median ms per function)",
         f"worst median **{worst_med['median_ms']:.1f} ms** ({worst_name}); {per_fn}; on-CPU at most {cpu:.1f} ms "
         f"(load {out['loadavg_before']} before)",
         f"{anchor_txt}; target < {TARGET_COLD_MS:.0f} ms", verdict(worst_med["median_ms"] < TARGET_COLD_MS),
         info["command"]),
        ("cold start, peak RSS at first /next (max over functions)", f"**{rss:.1f} MiB**",
         f"target < {TARGET_COLD_MIB:.0f} MiB", verdict(rss < TARGET_COLD_MIB), info["command"]),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(STEPS), help=f"comma-separated steps of {', '.join(STEPS)}")
    ap.add_argument("--quick", action="store_true",
                    help="3 rounds, 3 cold starts, 60 invoices in the batch run, 10 in the compute run")
    ap.add_argument("--relay-binary", default=os.path.join(REPO, "target/debug/ksef-relay"),
                    help="the ksef-relay binary for the AWS-call runs (default the debug one)")
    ap.add_argument("--functions-dir", default=os.path.join(REPO, "target/release"),
                    help="where the seven function binaries are, for the compute and cold steps")
    ap.add_argument("--build-note", default="not given (pass --build-note)",
                    help="how the function binaries were built, passed on and printed")
    ap.add_argument("--save", default=None, help="a directory to keep every step's raw output in")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    for s in only:
        if s not in STEPS:
            sys.exit(f"unknown step {s}: one of {STEPS}")
    if args.save:
        os.makedirs(args.save, exist_ok=True)
    py = python()
    rounds, runs, batch_n, compute_n = (3, 3, 60, 10) if args.quick else (11, 11, 200, 100)

    # The simulator for the compute run: the functions' build of ksef-relay when there is one.
    sim_binary = os.path.join(args.functions_dir, "ksef-relay")
    if not os.path.exists(sim_binary):
        sim_binary = args.relay_binary
    commands = {
        "validation": [py, os.path.join(REPO, "scripts/validate_bench.py"), "--rounds", str(rounds), "--json"],
        "calls": [py, os.path.join(REPO, "scripts/aws_calls.py"), "--invoices", "20", "--sim-time-scale", "1",
                  "--binary", args.relay_binary, "--json"],
        "batch": [py, os.path.join(REPO, "scripts/aws_calls.py"), "--invoices", str(batch_n), "--sim-time-scale", "1",
                  "--batch-target-delay-secs", "1", "--binary", args.relay_binary, "--json"],
        "compute": [py, os.path.join(REPO, "scripts/lambda_run.py"), "--invoices", str(compute_n), "--direct", "--bin-dir",
                    args.functions_dir, "--sim-binary", sim_binary, "--build-note", args.build_note, "--json"],
        "cold": [py, os.path.join(REPO, "scripts/cold_start.py"), "--runs", str(runs), "--bin-dir", args.functions_dir,
                 "--build-note", args.build_note, "--json"],
    }
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    raw, infos, rows = {}, {}, []
    online_usd = compute_usd = None
    for step in STEPS:
        if step not in only:
            continue
        info, out = run_step(step, commands[step], args.save)
        infos[step], raw[step] = info, out
        if out is None:
            rows.append((f"{step}: FAILED", info.get("error", "?"), "–", "**failed**", info["command"]))
            continue
        if step == "validation":
            rows += rows_validation(info, out)
        elif step == "calls":
            r, _, online_usd = rows_calls(info, out, "online",
                                          (f"≤ {TARGET_CALLS_ONLINE} (issue 15)", lambda x: x <= TARGET_CALLS_ONLINE))
            rows += r
        elif step == "batch":
            online = raw.get("calls")
            anchor = online["parties"]["relay"]["calls_per_invoice"] if online else None
            text = (f"fewer than online ({anchor:.2f}, the run above)" if anchor is not None
                    else "fewer than online (not run here)")
            r, _, _ = rows_calls(info, out, "mostly batch",
                                 (text, lambda x: anchor is not None and x < anchor))
            rows += r
        elif step == "compute":
            r, compute_usd = rows_compute(info, out)
            rows += r
        elif step == "cold":
            rows += rows_cold(info, out)
    if online_usd is not None and compute_usd is not None:
        total = online_usd + compute_usd
        rows.append(("total cost per million invoices: AWS requests (online run) + compute, Lambda requests, logs",
                     f"**${total:.2f}** (the relay's requests and the event source's deletes ${online_usd:.2f}, "
                     f"compute, Lambda requests and logs ${compute_usd:.2f})",
                     f"< ${TARGET_USD_PER_MILLION:.0f} (issue 15)", verdict(total < TARGET_USD_PER_MILLION),
                     "the calls and compute rows above"))

    if args.json:
        print(json.dumps({"started": started, "commit": git_commit(), "steps": infos, "raw": raw,
                          "table": [dict(zip(("figure", "measured", "anchor_or_target", "verdict", "command"), r))
                                    for r in rows]}, indent=1))
        return
    print(f"issue 15's table: commit {git_commit()}, started {started}, host load now {loadavg()}")
    print()
    print("| figure | measured | anchor / target | verdict | command |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c).replace("|", "\\|") for c in r[:4]) + f" | `{r[4]}` |")
    print()
    for step, info in infos.items():
        print(f"- {step}: rc {info['rc']}, {info['seconds']:.0f} s, load average after {info['load_after']}")


if __name__ == "__main__":
    main()

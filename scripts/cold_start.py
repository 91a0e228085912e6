#!/usr/bin/env python3
"""Measures each Lambda function's cold start: exec of the release binary to its first
`GET /2018-06-01/runtime/invocation/next`, and its peak RSS at that moment (issue 15 item 4:
under 30 ms and 32 MB for every function).

What it does:
  1. starts a moto server (scripts/moto_server.py) on a free port in 5680-5689 and points every
     function's AWS clients at it (`KSEF_RELAY_AWS_ENDPOINT`, read by crates/aws/src/settings.rs;
     with it crates/aws/src/clients.rs uses static credentials, here `test`/`test`, region
     eu-central-1), so any AWS call a function made at init would be answered locally and counted
     (moto's access log, one line per request);
  2. serves a fake Lambda Runtime API on loopback (`AWS_LAMBDA_RUNTIME_API=127.0.0.1:PORT`);
  3. for each run, for each function in turn (round-robin, the starting function rotating each
     run, so machine noise falls on all alike): takes the clock, starts the binary with the
     environment the SAM template gives it (infra/template.yaml: its variables, RUST_LOG=info,
     its memory size; resource names and queue URLs made up, pointing at the moto server) plus
     the variables Lambda sets, and waits for its first `/next`. When that request arrives, before
     answering, it takes the clock again and reads `/proc/PID/status` (VmHWM, the peak resident
     set so far, and VmRSS). Then it kills the process (SIGKILL) and reaps it with `wait4`. Its
     `ru_maxrss` (in the JSON, not the figure) is NOT the function's peak: Linux keeps in it the
     high-water mark of the memory before exec too, i.e. that of this Python process, which the
     child was forked from (about 21 MiB for a 100-byte shell script here), so VmHWM at `/next` is the figure;
  4. runs an anchor in the same rounds, started the same way: curl's GET of the same `/next`
     (a small C program that loads its shared libraries and makes one HTTP request: the least a
     process does to reach the Runtime API, on this machine at this moment). Each function's
     time over the anchor's in the same run, median over the runs, is the "x anchor" column: it
     moves less with the machine's load than the milliseconds do (`--no-anchor` leaves it out);
  5. prints per function the median and max ms, the median on-CPU ms and runnable-but-waiting
     ms of its threads (summed /proc/PID/task/*/schedstat at `/next`: how much of the wall time
     was the function's own work and how much the shared machine's queue), the peak RSS (max over runs of VmHWM at `/next`,
     MiB), the AWS requests moto saw during the starts, and whether it is under 30 ms and 32 MiB;
     `--json` prints one JSON object instead.

What each function does at init (read from functions/*/src/main.rs and their deps'
`from_settings`/`new`): logging set-up (relay_observe::logging::init_lambda), its typed settings
from the environment, `aws_config` loaded once and six SDK clients built (DynamoDB, SQS, S3,
Secrets Manager, SNS, KMS: crates/aws/src/clients.rs), its adapters wrapped around them; send,
send-batch, status and dlq-replay also build `KsefContexts` (relay_lambda::ksef_contexts:
environment, shared cache, Secrets Manager provider, KMS sealer, governor), the sweeper its
availability poll (a Latarnia HTTP client for KSEF_ENV=TEST). The AWS SDK's HTTPS connector
reads the system's CA store once (rustls-native-certs: on a Debian host the bundle and then every
file of /etc/ssl/certs; `--env SSL_CERT_FILE=...` limits it to one file, for comparison). NO
function makes an AWS call at
init: the KSeF credentials are read from Secrets Manager on a seller's first use (the
`CredentialsProvider` in `KsefContexts`, docs/architecture.md "Credentials per seller, on
demand"), i.e. in the first invocation that needs that seller, not in the cold start. So the
script creates nothing in moto (no secret, table or queue); the moto request count per function
(expected 0) is the check that this stays true. If a function ever reads a secret at init, the
count shows it and its time is then inside the figure (it would fail here without the secret:
create it with boto3 in `prepare_moto` then).

Limits (honest):
  - The clock starts in this script just before `subprocess.Popen` (fork/exec from Python, about
    a millisecond of it), and stops when the request is handled in this script's server thread:
    both ends add a little to the function's own time. Lambda's own Init also loads the binary
    from its storage; here it comes from the page cache after the first run.
  - The binaries are whatever is in `--bin-dir` (default target/release). The script cannot tell
    from a binary which profile built it: it prints each path, size and modification time and the
    `--build-note` you give it. The figures in docs/performance.md come from
    `CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 cargo build --release`;
    the repo's own release profile (thin LTO, one codegen unit) may give slightly different
    numbers (it was not measured: it takes over an hour to build here).
  - x86_64 Linux, a shared 2-core machine: not Lambda's Firecracker microVM at 512 MB (a fraction
    of a vCPU there, so a CPU-bound init would take longer in AWS than here).
  - MiB: 32 MB is read as 32 MiB (33.5 million bytes).

  .venv/bin/python scripts/cold_start.py --runs 11
  .venv/bin/python scripts/cold_start.py --runs 3 --functions send,intake --json
"""

import argparse
import http.server
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import shutil
import threading
import time

from relay_scripts import (ACCOUNT, REGION, REPO, free_port, git_commit, lambda_env as _lambda_env, loadavg,
                           start_moto, stop_moto)

LIMIT_MS = 30.0
# The anchor run beside the functions, in the same rounds: curl's GET of /next (a small C program
# that loads its shared libraries and makes one HTTP request), i.e. what the least a process does
# to reach the Runtime API costs on this machine at this moment. Ratios to it carry over between
# runs at different loads better than the milliseconds do.
ANCHOR = "anchor:curl"
LIMIT_MIB = 32.0


def queue(port, name):
    return f"http://127.0.0.1:{port}/{ACCOUNT}/ksef-relay-{name}"


def function_envs(aws_port):
    """Each function's variables as infra/template.yaml sets them (names made up), and its
    MemorySize there."""
    q = lambda name: queue(aws_port, name)  # noqa: E731
    common = {"DOCUMENTS_TABLE": "ksef-relay-documents", "ARCHIVE_BUCKET": "ksef-relay-archive"}
    ksef = {
        "KSEF_ENV": "TEST",
        "KSEF_SELLER_NIPS": "9999999999",
        "KSEF_TOKEN_SECRET_PREFIX": "ksef-relay/dev/ksef-token/",
        "KSEF_CACHE_KEY_ID": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-0000-0000-000000000000",
    }
    return {
        "intake": (512, dict(common, SEND_QUEUE_URL=q("send"), BATCH_QUEUE_URL=q("batch"),
                             BATCH_TARGET_DELAY_SECONDS="300", CORRECTIONS_QUEUE_URL=q("corrections"))),
        "send": (512, dict(common, **ksef, SEND_QUEUE_URL=q("send"), SEND_DLQ_URL=q("send-dlq"),
                           BATCH_QUEUE_URL=q("batch"), STATUS_QUEUE_URL=q("status"),
                           CORRECTIONS_QUEUE_URL=q("corrections"), MAX_ATTEMPTS="10", LEASE_SECONDS="120")),
        "send-batch": (1024, dict(common, **ksef, BATCH_QUEUE_URL=q("batch"), BATCH_DLQ_URL=q("batch-dlq"),
                                  SEND_QUEUE_URL=q("send"), STATUS_QUEUE_URL=q("status"),
                                  CORRECTIONS_QUEUE_URL=q("corrections"), MAX_ATTEMPTS="10", LEASE_SECONDS="660")),
        "status": (512, dict(common, **ksef, STATUS_QUEUE_URL=q("status"), STATUS_DLQ_URL=q("status-dlq"),
                             SEND_QUEUE_URL=q("send"), BATCH_QUEUE_URL=q("batch"),
                             CORRECTIONS_QUEUE_URL=q("corrections"), MAX_ATTEMPTS="10")),
        "dlq-replay": (512, dict(common, **ksef, REPLAY_QUEUES=(
            f"send={q('send-dlq')}>{q('send')},batch={q('batch-dlq')}>{q('batch')},"
            f"status={q('status-dlq')}>{q('status')}"))),
        "report": (512, dict(common, ALARM_TOPIC_ARN=f"arn:aws:sns:{REGION}:{ACCOUNT}:ksef-relay-alarms",
                             OVERDUE_AFTER_HOURS="4", KSEF_SELLER_NIPS="9999999999")),
        "sweeper": (512, dict(common, SEND_QUEUE_URL=q("send"), BATCH_QUEUE_URL=q("batch"),
                              STATUS_QUEUE_URL=q("status"), CORRECTIONS_QUEUE_URL=q("corrections"),
                              KSEF_ENV="TEST")),
    }


def lambda_env(name, memory, runtime_port, aws_port):
    """What the Lambda service sets for a provided.al2023 function, plus the emulator endpoint
    (relay_scripts.lambda_env). Nothing is inherited from this script's environment but PATH."""
    return _lambda_env(name, memory, runtime_port, f"http://127.0.0.1:{aws_port}",
                       log_stream="2026/11/28/[$LATEST]cold-start")


def prepare_moto(port):
    """What the functions need in AWS before their init: nothing (see the docstring). A function
    that starts reading something at init would fail here, visibly, until it is created."""


def proc_status(pid):
    """VmHWM and VmRSS of a live process, in KiB; and, summed over its threads alive now
    (/proc/PID/task/*/schedstat), the ns they ran on a CPU and the ns they waited, runnable, for
    one (the shared machine's share of the wall time), and the thread count."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    cpu = wait = threads = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                on_cpu, waited, _ = f.read().split()
        except OSError:
            continue
        cpu, wait, threads = cpu + int(on_cpu), wait + int(waited), threads + 1
    out.update(cpu_ns=cpu, runqueue_ns=wait, threads=threads)
    return out


class RuntimeApi(http.server.ThreadingHTTPServer):
    """The fake Runtime API: the first `/next` of the current process is recorded (time, memory),
    then held unanswered until the process is killed."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RuntimeHandler)
        self.pid_known = threading.Event()
        self.arrived = threading.Event()
        self.pid = None
        self.seen = None
        self.done = threading.Event()

    def expect(self):
        self.pid_known.clear()
        self.arrived.clear()
        self.done.clear()
        self.pid, self.seen = None, None


class RuntimeHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        t = time.perf_counter()
        srv = self.server
        if self.path != "/2018-06-01/runtime/invocation/next" or srv.arrived.is_set():
            self.send_error(404)
            return
        srv.pid_known.wait(10)
        try:
            mem = proc_status(srv.pid)
        except OSError as e:
            mem = {"error": str(e)}
        srv.seen = (t, mem)
        srv.arrived.set()
        srv.done.wait(30)  # the process is killed meanwhile; no answer is needed

    def log_message(self, *args):
        pass


def binaries(bin_dir, names):
    out = {}
    for n in names:
        path = os.path.join(bin_dir, n)
        if not os.path.isfile(path):
            sys.exit(f"{path} is missing: cargo build --release -p relay-fn-{n} (see the docstring)")
        st = os.stat(path)
        out[n] = {"path": os.path.relpath(path, REPO), "bytes": st.st_size,
                  "modified": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st.st_mtime))}
    return out


def one_start(api, argv, env, moto_log, timeout):
    path = argv[0]
    api.expect()
    before = moto_log.count()
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, cwd=REPO)
    api.pid = p.pid
    api.pid_known.set()
    ok = api.arrived.wait(timeout)
    try:
        p.send_signal(signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, status, rusage = os.wait4(p.pid, 0)
    p.returncode = status
    output = p.stdout.read()
    p.stdout.close()
    api.done.set()
    time.sleep(0.05)  # moto writes its access-log line after answering
    aws_requests = moto_log.count() - before
    if not ok:
        raise RuntimeError(f"{path}: no /next within {timeout} s (wait status {status}); its output:\n"
                           + output.decode("utf-8", "replace")[-4000:])
    t1, mem = api.seen
    if "error" in mem:
        raise RuntimeError(f"{path}: /proc read failed at /next: {mem['error']}")
    return {
        "ms": (t1 - t0) * 1000.0,
        "vm_hwm_kib": mem["VmHWM"],
        "vm_rss_kib": mem["VmRSS"],
        "cpu_ms": mem["cpu_ns"] / 1e6,
        "runqueue_ms": mem["runqueue_ns"] / 1e6,
        "threads": mem["threads"],
        "ru_maxrss_kib": rusage.ru_maxrss,
        "aws_requests": aws_requests,
        "output_lines": len(output.splitlines()),
    }


def summarise(runs):
    ms = [r["ms"] for r in runs]
    hwm = max(r["vm_hwm_kib"] for r in runs)
    maxrss = max(r["ru_maxrss_kib"] for r in runs)
    med, worst = statistics.median(ms), max(ms)
    mib = hwm / 1024.0
    return {
        "runs": len(runs),
        "median_ms": round(med, 2),
        "max_ms": round(worst, 2),
        "min_ms": round(min(ms), 2),
        "median_cpu_ms": round(statistics.median(r["cpu_ms"] for r in runs), 2),
        "median_runqueue_ms": round(statistics.median(r["runqueue_ms"] for r in runs), 2),
        "threads_at_next": max(r["threads"] for r in runs),
        "peak_rss_mib": round(mib, 2),
        "ru_maxrss_mib": round(maxrss / 1024.0, 2),
        "rss_at_next_mib": round(max(r["vm_rss_kib"] for r in runs) / 1024.0, 2),
        "aws_requests_at_init": sum(r["aws_requests"] for r in runs),
        "under_30ms_median": med < LIMIT_MS,
        "under_30ms_max": worst < LIMIT_MS,
        "under_32mib": mib < LIMIT_MIB,
        "all_ms": [round(x, 2) for x in ms],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=11, help="starts per function (default 11)")
    ap.add_argument("--bin-dir", default=os.path.join(REPO, "target/release"),
                    help="where the function binaries are (default target/release)")
    ap.add_argument("--functions", default="intake,send,send-batch,status,dlq-replay,report,sweeper",
                    help="comma-separated binary names (default: all seven)")
    ap.add_argument("--build-note", default="not given (pass --build-note)",
                    help="how the binaries were built, printed with the results")
    ap.add_argument("--ports", default="5680-5689", help="the moto server's port range")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for a first /next")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="one more variable for every function (repeatable), e.g. SSL_CERT_FILE=...")
    ap.add_argument("--no-anchor", action="store_true",
                    help="leave out the anchor (curl's GET of /next, started the same way in the same rounds)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args()

    names = [n.strip() for n in args.functions.split(",") if n.strip()]
    curl = shutil.which("curl")
    anchor = None if args.no_anchor or curl is None else ANCHOR
    more_env = dict(e.split("=", 1) for e in args.env)
    bins = binaries(os.path.abspath(args.bin_dir), names)
    lo, hi = map(int, args.ports.split("-"))
    aws_port = free_port(lo, hi)
    envs = function_envs(aws_port)
    unknown = [n for n in names if n not in envs]
    if unknown:
        sys.exit(f"no environment known for {unknown}: add it to function_envs")

    moto, api = None, None
    results = {n: [] for n in names}
    load_before = loadavg()
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        moto, moto_log = start_moto(aws_port)
        prepare_moto(aws_port)
        api = RuntimeApi()
        threading.Thread(target=api.serve_forever, daemon=True).start()
        runtime_port = api.server_address[1]
        everyone = names + ([anchor] if anchor else [])
        if anchor:
            results[anchor] = []
        for r in range(args.runs):
            order = everyone[r % len(everyone):] + everyone[:r % len(everyone)]
            for n in order:
                if n == anchor:
                    env = lambda_env("anchor", 128, runtime_port, aws_port)
                    argv = [curl, "-s", "-o", "/dev/null", f"http://127.0.0.1:{runtime_port}/2018-06-01/runtime/invocation/next"]
                else:
                    memory, extra = envs[n]
                    env = dict(lambda_env(n, memory, runtime_port, aws_port), **extra, **more_env)
                    argv = [os.path.join(os.path.abspath(args.bin_dir), n)]
                results[n].append(one_start(api, argv, env, moto_log, args.timeout))
            if not args.json:
                print(f"run {r + 1}/{args.runs} done", file=sys.stderr)
    finally:
        if api is not None:
            api.shutdown()
            api.server_close()
        stop_moto(moto)
    load_after = loadavg()

    summary = {n: summarise(results[n]) for n in names}
    anchor_summary = None
    if anchor:
        anchor_summary = summarise(results[anchor])
        anchor_summary["argv"] = "curl -s -o /dev/null http://127.0.0.1:PORT/2018-06-01/runtime/invocation/next"
        for n in names:
            # Within each run: the function's time over the anchor's in the same run; the median.
            per_run = [f["ms"] / a["ms"] for f, a in zip(results[n], results[anchor])]
            summary[n]["median_ratio_to_anchor"] = round(statistics.median(per_run), 2)
    out = {
        "started": started,
        "commit": git_commit(),
        "host": f"{platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs",
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "build_note": args.build_note,
        "extra_env": more_env,
        "binaries": bins,
        "runs": args.runs,
        "limits": {"ms": LIMIT_MS, "mib": LIMIT_MIB},
        "peak_rss_source": "VmHWM from /proc/PID/status when the first /next arrives; ru_maxrss (wait4 after the kill) also counts the forked Python image before exec",
        "functions": summary,
        "anchor": anchor_summary,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"cold start, exec to first /next: {args.runs} runs per function, round-robin; started {started}")
    print(f"commit {out['commit']}, {out['host']}, load average {load_before} before, {load_after} after")
    print(f"build: {args.build_note}")
    if more_env:
        print(f"extra environment: {more_env}")
    for n in names:
        b = bins[n]
        print(f"  {b['path']}: {b['bytes']:,} bytes, built {b['modified']}")
    print()
    print(f"{'function':<11} {'median ms':>9} {'max ms':>7} {'min ms':>7} {'CPU ms':>6} {'queued ms':>9} "
          f"{'peak RSS MiB':>12} {'AWS calls':>9} {'x anchor':>8}  under 30 ms / 32 MiB")
    for n in names:
        s = summary[n]
        verdict = ("yes" if s["under_30ms_median"] else "NO") + (
            "" if s["under_30ms_max"] else " (max over)") + " / " + ("yes" if s["under_32mib"] else "NO")
        ratio = f"{s['median_ratio_to_anchor']:>8.2f}" if anchor else f"{'-':>8}"
        print(f"{n:<11} {s['median_ms']:>9.2f} {s['max_ms']:>7.2f} {s['min_ms']:>7.2f} {s['median_cpu_ms']:>6.2f} "
              f"{s['median_runqueue_ms']:>9.2f} {s['peak_rss_mib']:>12.2f} {s['aws_requests_at_init']:>9} {ratio}  {verdict}")
    if anchor:
        a = anchor_summary
        print(f"{'(anchor)':<11} {a['median_ms']:>9.2f} {a['max_ms']:>7.2f} {a['min_ms']:>7.2f} {a['median_cpu_ms']:>6.2f} "
              f"{a['median_runqueue_ms']:>9.2f} {a['peak_rss_mib']:>12.2f} {'':>9} {1:>8.2f}  curl's GET of /next, same rounds")
    print()
    print("x anchor: the median over the runs of the function's time over the anchor's in the same run.")
    print("CPU ms / queued ms: medians of the time the process's threads ran on a CPU / waited runnable for one")
    print("(schedstat, summed over the threads alive at /next; threads that ended before are not counted).")
    print("peak RSS: VmHWM in /proc/PID/status when the first /next arrived, max over the runs (MiB).")
    print("AWS calls: requests moto logged during all the starts of that function (0: none at init).")
    worst = max(summary[n]["ru_maxrss_mib"] for n in names)
    print(f"wait4's ru_maxrss after the kill (max {worst:.2f} MiB) is not used: on Linux it also keeps the")
    print("high-water mark of the memory before exec, i.e. that of this Python process, forked from.")


if __name__ == "__main__":
    main()

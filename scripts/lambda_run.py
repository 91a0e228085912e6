#!/usr/bin/env python3
"""Runs the real Lambda function binaries end to end, locally, and measures what AWS bills per
accepted invoice: Lambda GB-seconds and requests, and CloudWatch Logs bytes (issue 15 item 3).

What it does:
  1. starts a moto server (scripts/moto_server.py) and the KSeF simulator (`ksef-relay sim`,
     crates/ksef-sim: HTTP, the built-in test token, invoices decided after --sim-delay-ms in
     status 100 and again in 150); deploys infra/template.yaml to moto as a CloudFormation stack
     (scripts/template_on_emulator.py: SAM translated offline; the bucket's inbox/ -> intake
     queue notification applied through the S3 API; the stack's event source mappings disabled,
     this script plays them), so every function gets the environment CloudFormation resolved
     for it: the stack's table (GSI), queues with their DLQs and redrive, bucket, KMS key, alarm
     topic; then creates the seller's secret `{KsefTokenSecretPrefix}9999999999` holding the
     simulator's token, as an operator does at first deploy (docs/runbook.md);
  2. starts each function binary ONCE (one warm container each, never restarted) behind its own
     fake Lambda Runtime API, with that environment, the variables Lambda sets (its MemorySize
     from the stack), KSEF_ENV pointed at the simulator and KSEF_RELAY_AWS_ENDPOINT at moto. Each
     function reaches moto and the simulator through its own timing proxy (this script, loopback
     HTTP) so the time it waited on AWS and on KSeF is measured per function (--direct: none);
  3. is the Lambda service: per event source mapping of the stack, a poller receives from the
     queue (MaxNumberOfMessages min(10, BatchSize); a BatchSize over 10 with a batching window
     gathers up to BatchSize or the window), delivers the SQS event JSON (the records as Lambda
     builds them) through `/next`, takes the `/response`, deletes the messages not named in
     `batchItemFailures` (all of them on `/error`: they come back after the visibility
     timeout); the scheduled functions get their Input (sweeper `{"trigger":"schedule"}` every
     5 minutes, report `{"kind":"snapshot"}` every 15) at that cadence divided by
     --schedule-scale;
  4. PUTs N distinct invoices into inbox/9999999999/ (sample 1 as `ksef-relay load` builds them:
     P_1 today, P_2 LAMBDA/{i}), and waits until every outbox/9999999999/{id}.json says ACCEPTED
     or --timeout-secs;
  5. reports per function: invocations, billed duration (from the moment `/next` answered with
     the event to the moment `/response` or `/error` arrived, rounded up to 1 ms as Lambda
     bills), MemorySize, GB-s, the time it waited on AWS and on KSeF (the union of its requests'
     intervals at its proxies), its log bytes (everything the process wrote to stdout/stderr,
     which Lambda ships to CloudWatch Logs; EMF metric lines counted apart) plus Lambda's own
     platform lines (INIT_START once, START/END/REPORT per invocation: their text is rebuilt from
     the measured values in Lambda's documented text format, an estimate of their bytes), and
     the totals per accepted invoice and per million invoices at eu-central-1 list prices.

Limits (honest, also printed):
  - the durations include waiting on moto (a Python emulator, slower per request than DynamoDB,
    SQS and S3, or not) and on the simulator (answers in milliseconds; real KSeF takes hundreds):
    the per-function AWS and KSeF wait columns say how much; a reader can replace them with
    production latencies. Send and status wait on KSeF: their GB-s here is a LOWER bound.
  - one container per function and a shared 2-core machine; debug binaries (the default
    --bin-dir target/debug) are much slower than the release build Lambda runs: say which;
  - the timing proxies (Python threads in this process) lengthen every request the functions
    make: on 2026-11-29 the billed time per invoice was 1.7 to 2.0 times that of the same run
    with --direct. Take GB-s from a --direct run, the split (AWS / KSeF / other) from a proxied one;
  - cold starts: each container's init (exec to first `/next`) is reported apart; Lambda bills
    it for provided runtimes, per container, not per invoice;
  - the scheduled functions cost per hour, not per invoice: reported apart, per month.

  .venv/bin/python scripts/lambda_run.py --invoices 50
  .venv/bin/python scripts/lambda_run.py --invoices 50 --bin-dir target/release --build-note "release" --json
"""

import argparse
import base64
import collections
import datetime
import hashlib
import http.client
import http.server
import json
import math
import os
import platform
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from relay_scripts import (ACCOUNT, PRICES, REGION, REPO, binary_info, free_port, git_commit, lambda_env, loadavg,
                           start_moto, stop_group, stop_moto)

NIP = "9999999999"
SECRET_PREFIX = "ksef-relay/dev/ksef-token/"
STACK = "ksef-relay"
RUNTIME = "/2018-06-01/runtime"
# Lambda's platform lines in its text log format (the template sets no LogFormat: Text).
INIT_START = ("INIT_START Runtime Version: provided:al2023.v100\tRuntime Version ARN: "
              "arn:aws:lambda:eu-central-1::runtime:" + "0" * 64 + "\n")
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
       "expect", "content-length"}
# Each function's schedule in the template (Input, minutes); the others are SQS-fed or manual.
SCHEDULES = {"SweeperFunction": ({"trigger": "schedule"}, 5), "ReportFunction": ({"kind": "snapshot"}, 15)}
BINARY = {"IntakeFunction": "intake", "SendFunction": "send", "SendBatchFunction": "send-batch",
          "StatusFunction": "status", "DlqReplayFunction": "dlq-replay", "ReportFunction": "report",
          "SweeperFunction": "sweeper"}


def merged_seconds(intervals):
    """Length of the union of (start, end) intervals: the time at least one request was open."""
    total, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total


# ------------------------------------------------------------------ timing proxy

class TimingProxy(http.server.ThreadingHTTPServer):
    """Loopback HTTP proxy in front of moto or the simulator for one function: forwards each
    request unchanged (Host kept: the SigV4 signature covers it), records its interval."""

    daemon_threads = True

    def __init__(self, upstream_port, kind):
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        self.upstream_port = upstream_port
        self.kind = kind
        self.lock = threading.Lock()
        self.intervals = []
        self.by_what = collections.Counter()
        self.errors = 0

    def record(self, t0, t1, what):
        with self.lock:
            self.intervals.append((t0, t1))
            self.by_what[what] += 1

    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


def what_of(kind, handler):
    if kind == "aws":
        target = handler.headers.get("X-Amz-Target")
        if target:
            return target.split(".")[-1] if "." in target else target
        path = handler.path.split("?")[0].strip("/").split("/")
        return f"S3 {handler.command} {path[1] if len(path) > 1 else '(bucket)'}"
    path = handler.path.split("?")[0]
    path = re.sub(r"/[0-9A-Za-z-]{20,}", "/{id}", path)
    return f"{handler.command} {path}"


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _upstream(self, fresh=False):
        if fresh or getattr(self, "_conn", None) is None:
            self._conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=300)
        return self._conn

    def _forward(self):
        t0 = time.perf_counter()
        srv = self.server
        body = self._body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP]
        resp = None
        for attempt in range(2):
            conn = self._upstream(fresh=attempt > 0)
            try:
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                if body or self.command in ("POST", "PUT", "PATCH"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._conn = None
                if attempt == 1:
                    with srv.lock:
                        srv.errors += 1
                    self.send_error(502)
                    return
        self.send_response_only(resp.status, resp.reason)
        length = None
        for k, v in resp.getheaders():
            if k.lower() == "content-length":
                length = v
            elif k.lower() not in HOP:
                self.send_header(k, v)
        self.send_header("Content-Length", length if self.command == "HEAD" and length else str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
        srv.record(t0, time.perf_counter(), what_of(srv.kind, self))

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward

    def log_message(self, *args):
        pass


# ------------------------------------------------------------------ fake Runtime API

class Invocation:
    def __init__(self, payload, deadline_s):
        self.id = str(uuid.uuid4())
        self.payload = json.dumps(payload).encode()
        self.deadline_ms = int((time.time() + deadline_s) * 1000)
        self.t_start = self.t_end = None
        self.outcome = None  # "response" or "error"
        self.body = None
        self.done = threading.Event()


class RuntimeApi(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, function_arn):
        super().__init__(("127.0.0.1", 0), RuntimeHandler)
        self.function_arn = function_arn
        self.pending = queue.Queue()
        self.by_id = {}
        self.first_next = None
        self.init_error = None
        self.closing = threading.Event()


class RuntimeHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        srv = self.server
        if self.path != RUNTIME + "/invocation/next":
            self.send_error(404)
            return
        if srv.first_next is None:
            srv.first_next = time.perf_counter()
        while True:
            try:
                inv = srv.pending.get(timeout=0.5)
                break
            except queue.Empty:
                if srv.closing.is_set():
                    self.close_connection = True
                    return
        srv.by_id[inv.id] = inv
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Lambda-Runtime-Aws-Request-Id", inv.id)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(inv.deadline_ms))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", srv.function_arn)
        self.send_header("Lambda-Runtime-Trace-Id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0")
        self.send_header("Content-Length", str(len(inv.payload)))
        self.end_headers()
        self.wfile.write(inv.payload)
        self.wfile.flush()
        inv.t_start = time.perf_counter()

    def do_POST(self):  # noqa: N802
        t = time.perf_counter()
        srv = self.server
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        m = re.fullmatch(RUNTIME + r"/invocation/([^/]+)/(response|error)", self.path)
        if self.path == RUNTIME + "/init/error":
            srv.init_error = body.decode("utf-8", "replace")
        elif not m or m.group(1) not in srv.by_id:
            self.send_error(404)
            return
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "16")
        self.end_headers()
        self.wfile.write(b'{"status":"OK"}\n')
        self.wfile.flush()
        if m:
            inv = srv.by_id.pop(m.group(1))
            inv.t_end, inv.outcome, inv.body = t, m.group(2), body
            inv.done.set()

    def log_message(self, *args):
        pass


def vm_hwm_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def sched_ns(pid):
    """Summed over the process's threads alive now (/proc/PID/task/*/schedstat): ns on a CPU, and
    ns runnable but waiting for one (the shared machine's queue)."""
    cpu = wait = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                on_cpu, waited, _ = f.read().split()
        except (OSError, ValueError):
            continue
        cpu, wait = cpu + int(on_cpu), wait + int(waited)
    return cpu, wait


class Container:
    """One function binary, started once, behind its Runtime API; invocations run one at a time."""

    def __init__(self, logical, conf, binary, aws_port, ksef_url, ksef_port, direct, work_dir, ksef_env):
        self.logical, self.name = logical, BINARY[logical]
        self.memory = int(conf["memory"])
        self.timeout = int(conf["timeout"] or 60)
        arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{conf['name']}"
        self.api = RuntimeApi(arn)
        threading.Thread(target=self.api.serve_forever, daemon=True).start()
        self.aws_proxy = self.ksef_proxy = None
        if direct:
            aws_endpoint = f"http://127.0.0.1:{aws_port}"
        else:
            self.aws_proxy = TimingProxy(aws_port, "aws")
            threading.Thread(target=self.aws_proxy.serve_forever, daemon=True).start()
            aws_endpoint = self.aws_proxy.url()
        env = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in conf["environment"].items()}
        if "KSEF_ENV" in env:
            if direct:
                env["KSEF_ENV"] = ksef_url
            else:
                self.ksef_proxy = TimingProxy(ksef_port, "ksef")
                threading.Thread(target=self.ksef_proxy.serve_forever, daemon=True).start()
                env["KSEF_ENV"] = ksef_url.replace(f"127.0.0.1:{ksef_port}", f"127.0.0.1:{self.ksef_proxy.server_address[1]}")
            if ksef_env:
                env["KSEF_ENV"] = ksef_env
        full = dict(lambda_env(self.name, self.memory, self.api.server_address[1], aws_endpoint,
                               log_stream=time.strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex), **env)
        full["AWS_LAMBDA_FUNCTION_NAME"] = conf["name"]
        full["AWS_LAMBDA_LOG_GROUP_NAME"] = f"/aws/lambda/{conf['name']}"
        self.env = full
        self.log_path = os.path.join(work_dir, f"{self.name}.log")
        self.log_bytes = self.emf_bytes = self.log_lines = self.emf_lines = 0
        self.init_log_bytes = None
        self.final = (0, 0)
        self.invocations = []
        self.lock = threading.Lock()
        self.t_spawn = time.perf_counter()
        self.proc = subprocess.Popen([binary], env=full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, cwd=work_dir, start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        with open(self.log_path, "wb") as out:
            for line in iter(self.proc.stdout.readline, b""):
                out.write(line)
                with self.lock:
                    self.log_bytes += len(line)
                    self.log_lines += 1
                    if b'"_aws"' in line:
                        self.emf_bytes += len(line)
                        self.emf_lines += 1

    def wait_ready(self, timeout=30):
        end = time.time() + timeout
        while self.api.first_next is None:
            if self.proc.poll() is not None or self.api.init_error:
                raise RuntimeError(f"{self.name}: exited at init ({self.proc.returncode}), init error "
                                   f"{self.api.init_error}; see {self.log_path}")
            if time.time() > end:
                raise RuntimeError(f"{self.name}: no /next within {timeout} s; see {self.log_path}")
            time.sleep(0.01)
        self.init_ms = (self.api.first_next - self.t_spawn) * 1000.0
        with self.lock:
            self.init_log_bytes = self.log_bytes

    def invoke(self, payload, what):
        inv = Invocation(payload, self.timeout)
        cpu0, wait0 = sched_ns(self.proc.pid)  # idle between invocations: as at /next
        self.api.pending.put(inv)
        end = time.time() + self.timeout + 30
        while not inv.done.wait(0.5):
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}) during an invocation; see {self.log_path}")
            if time.time() > end:
                raise RuntimeError(f"{self.name}: no answer within its timeout {self.timeout} s")
        ms = (inv.t_end - inv.t_start) * 1000.0
        cpu1, wait1 = sched_ns(self.proc.pid)
        rec = {"cpu_ms": (cpu1 - cpu0) / 1e6, "runqueue_ms": (wait1 - wait0) / 1e6, "what": what, "ms": ms, "billed_ms": max(1, math.ceil(ms)), "outcome": inv.outcome,
               "t": (inv.t_start, inv.t_end), "max_mib": vm_hwm_mib(self.proc.pid), "id": inv.id}
        with self.lock:
            self.invocations.append(rec)
        try:
            body = json.loads(inv.body) if inv.body else None
        except ValueError:
            body = None
        return inv.outcome, body

    def stop(self):
        # What the process wrote until now is what Lambda would ship; the line its runtime client
        # writes when this fake Runtime API goes away below is the harness's doing, not counted.
        time.sleep(0.3)
        with self.lock:
            self.final = (self.log_bytes, self.log_lines)
        self.api.closing.set()
        time.sleep(0.6)
        stop_group(self.proc, wait=5)
        self.reader.join(5)
        self.api.shutdown()
        self.api.server_close()
        for p in (self.aws_proxy, self.ksef_proxy):
            if p is not None:
                p.shutdown()
                p.server_close()


# ------------------------------------------------------------------ the event sources

def sqs_record(m, arn):
    attrs = {}
    for name, a in (m.get("MessageAttributes") or {}).items():
        v = {"stringListValues": [], "binaryListValues": [], "dataType": a["DataType"]}
        if "StringValue" in a:
            v["stringValue"] = a["StringValue"]
        if "BinaryValue" in a:
            v["binaryValue"] = base64.b64encode(a["BinaryValue"]).decode()
        attrs[name] = v
    rec = {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
           "attributes": m.get("Attributes", {}), "messageAttributes": attrs,
           "md5OfBody": m.get("MD5OfBody") or hashlib.md5(m["Body"].encode()).hexdigest(),
           "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": REGION}
    if m.get("MD5OfMessageAttributes"):
        rec["md5OfMessageAttributes"] = m["MD5OfMessageAttributes"]
    return rec


class SqsSource(threading.Thread):
    """What Lambda's SQS event source mapping does for one function."""

    def __init__(self, sqs, container, queue_url, queue_arn, batch_size, window_s, stop, errors):
        super().__init__(daemon=True)
        self.sqs, self.c, self.url, self.arn = sqs, container, queue_url, queue_arn
        self.batch_size, self.window_s, self.stop_ev, self.errors = batch_size, window_s, stop, errors
        self.messages = self.deleted = self.failed_items = self.errored = 0

    def receive(self, n, wait):
        r = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=n, WaitTimeSeconds=wait,
                                     AttributeNames=["All"], MessageAttributeNames=["All"])
        return r.get("Messages", [])

    def run(self):
        try:
            while not self.stop_ev.is_set():
                msgs = self.receive(min(10, self.batch_size), 1)
                if not msgs:
                    continue
                if self.batch_size > 10 and self.window_s > 0:
                    deadline = time.time() + self.window_s
                    while len(msgs) < self.batch_size and time.time() < deadline and not self.stop_ev.is_set():
                        more = self.receive(min(10, self.batch_size - len(msgs)), 0)
                        msgs += more
                        if not more:
                            time.sleep(0.2)
                event = {"Records": [sqs_record(m, self.arn) for m in msgs]}
                self.messages += len(msgs)
                outcome, body = self.c.invoke(event, f"sqs:{len(msgs)}")
                if outcome == "response":
                    failed = {f.get("itemIdentifier") for f in (body or {}).get("batchItemFailures", [])}
                else:
                    self.errored += 1
                    failed = {m["MessageId"] for m in msgs}
                self.failed_items += len(failed)
                done = [m for m in msgs if m["MessageId"] not in failed]
                for i in range(0, len(done), 10):
                    chunk = done[i:i + 10]
                    self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                        {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(chunk)])
                    self.deleted += len(chunk)
        except Exception as e:  # reported, not hidden
            self.errors.append(f"{self.c.name} event source: {e!r}")


class Scheduler(threading.Thread):
    """EventBridge: each scheduled function gets its Input at its rate / scale, first at once."""

    def __init__(self, jobs, stop, errors):
        super().__init__(daemon=True)
        self.jobs, self.stop_ev, self.errors = jobs, stop, errors  # [(container, payload, every_s)]

    def run(self):
        nxt = [time.time() for _ in self.jobs]
        try:
            while not self.stop_ev.is_set():
                for i, (c, payload, every) in enumerate(self.jobs):
                    if time.time() >= nxt[i]:
                        c.invoke(payload, "schedule")
                        nxt[i] += every
                self.stop_ev.wait(0.2)
        except Exception as e:
            self.errors.append(f"scheduler: {e!r}")


# ------------------------------------------------------------------ set-up

def start_sim(binary, port, delay_ms, work_dir):
    log = open(os.path.join(work_dir, "ksef-sim.log"), "w")
    p = subprocess.Popen([binary, "sim", "--addr", f"127.0.0.1:{port}", "--delay-ms", str(delay_ms)],
                         stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    url = token = None
    end = time.time() + 30
    while time.time() < end and (url is None or token is None):
        line = p.stdout.readline()
        if not line:
            if p.poll() is not None:
                raise RuntimeError(f"the simulator exited: see {log.name}")
            continue
        if "listening on" in line:
            url = line.split("listening on", 1)[1].strip()
        elif "KSeF token:" in line:
            token = line.split("KSeF token:", 1)[1].strip()
    if url is None or token is None:
        raise RuntimeError("the simulator did not print its URL and token")
    threading.Thread(target=lambda: [None for _ in iter(p.stdout.readline, "")], daemon=True).start()
    return p, url, token


def deploy_stack(endpoint, params, work_dir):
    sys.path.insert(0, os.path.join(REPO, "scripts"))
    import template_on_emulator as toe  # needs aws-sam-translator and boto3 (.venv)

    out = os.path.join(work_dir, "stack.json")
    ns = argparse.Namespace(template=os.path.join(REPO, "infra/template.yaml"), endpoint=endpoint, stack=STACK,
                            out=out, param=params)
    toe.deploy(ns)
    with open(out) as f:
        return json.load(f)


def invoices(n, issued):
    """`ksef-relay load`'s generator (crates/cli/src/load_cmd.rs) for one seller: sample 1 with
    P_1 = issued and P_2 = LAMBDA/{i}; the key's file name is the ERP's document id."""
    with open(os.path.join(REPO, "data/ksef/samples/FA_3_Przykład_1.xml"), encoding="utf-8") as f:
        text = f.read()
    p1, p2 = "<P_1>2026-02-15</P_1>", "<P_2>FV2026/02/150</P_2>"
    if p1 not in text or p2 not in text:
        sys.exit("sample 1 no longer has the P_1 and P_2 this script replaces")
    text = text.replace(p1, f"<P_1>{issued}</P_1>", 1)
    return [(f"lambda-{i:07d}", text.replace(p2, f"<P_2>LAMBDA/{i:07d}</P_2>", 1).encode()) for i in range(n)]


# ------------------------------------------------------------------ the report

def platform_bytes(c):
    """Lambda's own lines for this container: INIT_START once, START/END/REPORT per invocation,
    rebuilt in Lambda's text format from the measured values."""
    total = len(INIT_START.encode())
    for i, r in enumerate(c.invocations):
        rid = r["id"]
        report = (f"REPORT RequestId: {rid}\tDuration: {r['ms']:.2f} ms\tBilled Duration: {r['billed_ms']} ms\t"
                  f"Memory Size: {c.memory} MB\tMax Memory Used: {math.ceil(r['max_mib'] or 0)} MB\t")
        if i == 0:
            report += f"Init Duration: {c.init_ms:.2f} ms\t"
        total += len(f"START RequestId: {rid} Version: $LATEST\n".encode())
        total += len(f"END RequestId: {rid}\n".encode()) + len((report + "\n").encode())
    return total


def summarise(c, run_window):
    inv = c.invocations
    billed_ms = sum(r["billed_ms"] for r in inv)
    spans = [r["t"] for r in inv]

    def waited(proxy):
        if proxy is None:
            return None
        with proxy.lock:
            iv = list(proxy.intervals)
            what = dict(proxy.by_what)
        # only the requests made inside an invocation (init makes none; a check)
        inside = [(max(s, a), min(e, b)) for s, e in iv for a, b in spans if s < b and e > a]
        return {"requests": len(iv), "wait_ms": merged_seconds(inside) * 1000.0,
                "sum_ms": sum(e - s for s, e in iv) * 1000.0, "by_what": what, "errors": proxy.errors}

    aws, ksef = waited(c.aws_proxy), waited(c.ksef_proxy)
    both = []
    for p in (c.aws_proxy, c.ksef_proxy):
        if p is not None:
            with p.lock:
                both += p.intervals
    inside = [(max(s, a), min(e, b)) for s, e in both for a, b in spans if s < b and e > a]
    plat = platform_bytes(c) if inv or c.init_ms else 0
    return {
        "binary": c.name,
        "memory_mb": c.memory,
        "timeout_s": c.timeout,
        "init_ms": round(c.init_ms, 2),
        "invocations": len(inv),
        "errors": sum(1 for r in inv if r["outcome"] != "response"),
        "billed_ms": billed_ms,
        "billed_ms_per_invocation": round(billed_ms / len(inv), 2) if inv else None,
        "max_ms": round(max((r["ms"] for r in inv), default=0), 2),
        "gb_s": billed_ms / 1000.0 * c.memory / 1024.0,
        "aws": aws,
        "ksef": ksef,
        "waiting_ms": merged_seconds(inside) * 1000.0 if (aws or ksef) else None,
        "other_ms": billed_ms - merged_seconds(inside) * 1000.0 if (aws or ksef) else None,
        "cpu_ms": sum(r["cpu_ms"] for r in inv),
        "runqueue_ms": sum(r["runqueue_ms"] for r in inv),
        "max_memory_mib": round(max((r["max_mib"] or 0 for r in inv), default=vm_hwm_mib(c.proc.pid) or 0), 1),
        "log_bytes_process": c.final[0],
        "log_bytes_after_stop": c.log_bytes - c.final[0],
        "log_bytes_at_init": c.init_log_bytes,
        "log_lines": c.final[1],
        "emf_bytes": c.emf_bytes,
        "emf_lines": c.emf_lines,
        "log_bytes_platform_estimate": plat,
        "messages": None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--invoices", type=int, default=50)
    ap.add_argument("--bin-dir", default=os.path.join(REPO, "target/debug"),
                    help="where the function binaries and ksef-relay (the simulator) are (default target/debug)")
    ap.add_argument("--build-note", default=None, help="how the binaries were built (default: guessed from --bin-dir)")
    ap.add_argument("--sim-binary", default=None, help="the ksef-relay binary for `sim` (default: --bin-dir's)")
    ap.add_argument("--rate", type=float, default=0.0,
                    help="invoices PUT per second (default 0: all at once, a burst; batches fill up)")
    ap.add_argument("--timeout-secs", type=float, default=600)
    ap.add_argument("--sim-delay-ms", type=int, default=500, help="the simulator's time in status 100 and in 150")
    ap.add_argument("--schedule-scale", type=float, default=10.0,
                    help="scheduled functions run at their cadence / this (default 10: the sweeper every 30 s)")
    ap.add_argument("--batch-window", type=float, default=None,
                    help="seconds a gathering event source waits (default: the template's MaximumBatchingWindowInSeconds)")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a template parameter (repeatable)")
    ap.add_argument("--direct", action="store_true", help="no timing proxies (no AWS/KSeF wait columns)")
    ap.add_argument("--ports", default="5690-5699", help="range for moto and the simulator")
    ap.add_argument("--work-dir", default=None, help="where the functions' logs go (default a new /tmp dir, kept)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args()

    import boto3

    bin_dir = os.path.abspath(args.bin_dir)
    build_note = args.build_note or ("debug (cargo build): durations overstate a release build's"
                                     if bin_dir.rstrip("/").endswith("debug") else "release? (pass --build-note)")
    sim_bin = os.path.abspath(args.sim_binary) if args.sim_binary else os.path.join(bin_dir, "ksef-relay")
    if not os.path.isfile(sim_bin):
        sys.exit(f"{sim_bin} is missing: cargo build -p ksef-relay")
    for b in BINARY.values():
        if not os.path.isfile(os.path.join(bin_dir, b)):
            sys.exit(f"{bin_dir}/{b} is missing: cargo build -p relay-fn-{b} (ksef-relay: -p ksef-relay)")
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="lambda-run-")
    os.makedirs(work_dir, exist_ok=True)
    lo, hi = map(int, args.ports.split("-"))
    aws_port = free_port(lo, hi)
    moto = sim = None
    containers = {}
    stop = threading.Event()
    errors = []
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_before = loadavg()
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    try:
        moto, _ = start_moto(aws_port)
        endpoint = f"http://127.0.0.1:{aws_port}"
        sim_port = free_port(aws_port + 1, hi)
        sim, sim_url, token = start_sim(sim_bin, sim_port, args.sim_delay_ms, work_dir)
        say(f"moto on {aws_port}, simulator {sim_url}; deploying the template")
        params = ["KsefSellerNips=" + NIP, "KsefTokenSecretPrefix=" + SECRET_PREFIX, "EnableReport=true",
                  "Architecture=x86_64"] + args.param
        stack = deploy_stack(endpoint, params, work_dir)
        session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
        client = lambda s: session.client(s, endpoint_url=endpoint)  # noqa: E731
        sqs, s3 = client("sqs"), client("s3")
        client("secretsmanager").create_secret(Name=SECRET_PREFIX + NIP, SecretString=token)
        bucket = stack["resources"]["ArchiveBucket"]["physical_id"]

        for logical, conf in stack["functions"].items():
            if logical not in BINARY:
                continue
            containers[logical] = Container(logical, conf, os.path.join(bin_dir, BINARY[logical]), aws_port, sim_url,
                                            sim_port, args.direct, work_dir, None)
        for c in containers.values():
            c.wait_ready()
        say("functions up: " + ", ".join(f"{c.name} {c.init_ms:.0f} ms" for c in containers.values()))

        # the event source mappings of the stack (disabled in moto; played here)
        by_name = {conf["name"]: logical for logical, conf in stack["functions"].items()}
        arn_to_url = {}
        for logical, r in stack["resources"].items():
            if r["type"] == "AWS::SQS::Queue":
                a = sqs.get_queue_attributes(QueueUrl=r["physical_id"], AttributeNames=["QueueArn"])
                arn_to_url[a["Attributes"]["QueueArn"]] = r["physical_id"]
        translated_windows = {}
        with open(os.path.join(REPO, "infra/template.yaml"), encoding="utf-8") as f:
            for m in re.finditer(r"BatchSize: (\d+)\s+MaximumBatchingWindowInSeconds: (\d+)", f.read()):
                translated_windows[int(m.group(1))] = int(m.group(2))
        sources = []
        for m in stack["event_source_mappings"]:
            logical = by_name[m["function_arn"].rsplit(":", 1)[-1]]
            bs = int(m["batch_size"] or 10)
            window = args.batch_window if args.batch_window is not None else translated_windows.get(bs, 0)
            src = SqsSource(sqs, containers[logical], arn_to_url[m["source_arn"]], m["source_arn"], bs, window, stop, errors)
            sources.append(src)
        jobs = [(containers[l], payload, minutes * 60.0 / args.schedule_scale)
                for l, (payload, minutes) in SCHEDULES.items() if l in containers]
        scheduler = Scheduler(jobs, stop, errors)

        issued = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=1))).date().isoformat()
        docs = invoices(args.invoices, issued)
        for s in sources:
            s.start()
        scheduler.start()
        t0 = time.time()

        def put_all():
            for i, (doc_id, body) in enumerate(docs):
                if args.rate > 0:
                    time.sleep(max(0.0, t0 + i / args.rate - time.time()))
                s3.put_object(Bucket=bucket, Key=f"inbox/{NIP}/{doc_id}.xml", Body=body)
            say(f"{len(docs)} invoices put into inbox/ in {time.time() - t0:.1f} s")

        putter = threading.Thread(target=put_all, daemon=True)
        putter.start()
        if args.rate <= 0:
            putter.join()
        say("waiting for ACCEPTED")
        # The harness's own reads go to moto directly (not through a function's proxy): one
        # listing every 2 s, and a GET only of an outbox result whose ETag changed.
        states, accepted, etags = {}, set(), {}
        last = 0
        while len(accepted) < len(docs) and time.time() - t0 < args.timeout_secs and not errors:
            keys = []
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"outbox/{NIP}/"):
                keys += [(o["Key"], o["ETag"]) for o in page.get("Contents", [])]
            for k, etag in keys:
                doc_id = k.rsplit("/", 1)[-1][:-len(".json")]
                if doc_id in accepted or etags.get(k) == etag:
                    continue
                etags[k] = etag
                try:
                    st = json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read()).get("state")
                except Exception as e:
                    st = f"unreadable: {e}"
                states[doc_id] = st
                if st == "ACCEPTED":
                    accepted.add(doc_id)
            if len(accepted) != last or int(time.time() - t0) % 15 == 0:
                say(f"  {time.time() - t0:6.1f} s: {len(accepted)}/{len(docs)} accepted")
                last = len(accepted)
            time.sleep(2)
        wall = time.time() - t0
        stop.set()
        for s in sources:
            s.join(max(c.timeout for c in containers.values()) + 5)
        scheduler.join(300)
        dlq = {}
        for logical, r in stack["resources"].items():
            if r["type"] == "AWS::SQS::Queue":
                a = sqs.get_queue_attributes(QueueUrl=r["physical_id"], AttributeNames=["ApproximateNumberOfMessages",
                                                                                        "ApproximateNumberOfMessagesNotVisible",
                                                                                        "ApproximateNumberOfMessagesDelayed"])
                n = sum(int(v) for v in a["Attributes"].values())
                if n:
                    dlq[logical] = n
    finally:
        stop.set()
        for c in containers.values():
            try:
                c.stop()
            except Exception as e:
                errors.append(f"stopping {c.name}: {e!r}")
        stop_group(sim)
        stop_moto(moto)
    load_after = loadavg()

    n_acc = len(accepted)
    funcs = {}
    for logical, c in containers.items():
        s = summarise(c, None)
        s["scheduled"] = logical in SCHEDULES
        for src in sources:
            if src.c is c:
                s["messages"] = src.messages
                s["items_failed"] = src.failed_items
        funcs[c.name] = s
    per_inv = [s for s in funcs.values() if not s["scheduled"]]
    gb_s = sum(s["gb_s"] for s in per_inv)
    reqs = sum(s["invocations"] for s in per_inv)
    log_proc = sum(s["log_bytes_process"] - (s["log_bytes_at_init"] or 0) for s in per_inv)
    log_plat = sum(s["log_bytes_platform_estimate"] - len(INIT_START) for s in per_inv)
    per = (lambda x: x / n_acc) if n_acc else (lambda x: float("nan"))
    totals = {
        "invoices": len(docs), "accepted": n_acc, "wall_s": round(wall, 1),
        "gb_s_per_invoice": per(gb_s),
        "billed_ms_per_invoice": per(sum(s["billed_ms"] for s in per_inv)),
        "other_ms_per_invoice": per(sum(s["other_ms"] or 0 for s in per_inv)) if not args.direct else None,
        "cpu_ms_per_invoice": per(sum(s["cpu_ms"] for s in per_inv)),
        "runqueue_ms_per_invoice": per(sum(s["runqueue_ms"] for s in per_inv)),
        "aws_requests_per_invoice": per(sum((s["aws"] or {}).get("requests", 0) for s in per_inv)) if not args.direct else None,
        "invocations_per_invoice": per(reqs),
        "log_bytes_per_invoice_process": per(log_proc),
        "log_bytes_per_invoice_platform_estimate": per(log_plat),
        "log_bytes_per_invoice": per(log_proc + log_plat),
        "emf_bytes_per_invoice": per(sum(s["emf_bytes"] for s in per_inv)),
        "aws_wait_ms_per_invoice": per(sum((s["aws"] or {}).get("wait_ms", 0) for s in per_inv)) if not args.direct else None,
        "ksef_wait_ms_per_invoice": per(sum((s["ksef"] or {}).get("wait_ms", 0) for s in per_inv)) if not args.direct else None,
        "ksef_requests_per_invoice": per(sum((s["ksef"] or {}).get("requests", 0) for s in per_inv)) if not args.direct else None,
    }
    p = PRICES
    m = 1e6
    usd = {
        "lambda_gb_s_x86": totals["gb_s_per_invoice"] * m * p["lambda_gb_s_x86"],
        "lambda_gb_s_arm64": totals["gb_s_per_invoice"] * m * p["lambda_gb_s_arm64"],
        "lambda_requests": totals["invocations_per_invoice"] * m * p["lambda_request"],
        "logs_ingestion": totals["log_bytes_per_invoice"] * m / 1e9 * p["logs_ingest_gb"],
    }
    usd["total_x86"] = usd["lambda_gb_s_x86"] + usd["lambda_requests"] + usd["logs_ingestion"]
    sched = {}
    month_s = 30 * 24 * 3600
    for logical, (payload, minutes) in SCHEDULES.items():
        name = BINARY[logical]
        if name in funcs and funcs[name]["invocations"]:
            s = funcs[name]
            per_call_gb_s = s["gb_s"] / s["invocations"]
            calls = month_s / (minutes * 60)
            per_call_log = (s["log_bytes_process"] - (s["log_bytes_at_init"] or 0)
                            + s["log_bytes_platform_estimate"] - len(INIT_START)) / s["invocations"]
            sched[name] = {"every_minutes": minutes, "gb_s_per_call": per_call_gb_s, "log_bytes_per_call": per_call_log,
                           "usd_per_month_x86": calls * (per_call_gb_s * p["lambda_gb_s_x86"] + p["lambda_request"]
                                                         + per_call_log / 1e9 * p["logs_ingest_gb"])}
    bins = {b: binary_info(os.path.join(bin_dir, b)) for b in BINARY.values()}
    out = {
        "started": started, "commit": git_commit(),
        "host": f"{platform.machine()} {platform.system()} {platform.release()}, {os.cpu_count()} CPUs",
        "loadavg_before": load_before, "loadavg_after": load_after, "build_note": build_note,
        "binaries": bins, "sim_delay_ms": args.sim_delay_ms, "schedule_scale": args.schedule_scale,
        "proxies": not args.direct, "params": params, "work_dir": work_dir, "rate": args.rate,
        "simulator_binary": binary_info(sim_bin),
        "totals": totals, "usd_per_million_invoices": usd, "scheduled_per_month": sched,
        "functions": funcs, "prices": PRICES, "errors": errors,
        "not_accepted": {k: v for k, v in states.items() if v != "ACCEPTED"},
        "no_outbox": len(docs) - len(states), "messages_left_in_queues": dlq,
        "platform_lines": "INIT_START once per container, START/END/REPORT per invocation, rebuilt in Lambda's text format from the measured values (an estimate of their bytes)",
    }
    if args.json:
        print(json.dumps(out, indent=1, default=str))
        return
    print_tables(out)


def print_tables(o):
    t, u = o["totals"], o["usd_per_million_invoices"]
    print(f"lambda_run: {t['accepted']}/{t['invoices']} invoices ACCEPTED in {t['wall_s']} s; started {o['started']}")
    print(f"commit {o['commit']}, {o['host']}, load average {o['loadavg_before']} before, {o['loadavg_after']} after")
    print(f"build: {o['build_note']}; simulator delay {o['sim_delay_ms']} ms per status; timing proxies: {o['proxies']}; "
          f"invoices PUT {'all at once' if not o['rate'] else str(o['rate']) + ' a second'}")
    print(f"logs of the functions: {o['work_dir']}")
    print()
    hdr = (f"{'function':<11} {'MB':>5} {'init ms':>7} {'calls':>6} {'msgs':>5} {'err':>4} {'billed ms':>10} {'ms/call':>8} "
           f"{'GB-s':>8} {'AWS req':>7} {'AWS ms':>8} {'KSeF req':>8} {'KSeF ms':>8} {'other ms':>8} {'CPU ms':>7} {'queued':>7} {'log B':>9} {'EMF B':>7} {'plat B':>7} {'RSS MiB':>7}")
    print(hdr)
    for name, s in o["functions"].items():
        a, k = s["aws"] or {}, s["ksef"] or {}
        print(f"{name + ('*' if s['scheduled'] else ''):<11} {s['memory_mb']:>5} {s['init_ms']:>7.1f} {s['invocations']:>6} "
              f"{s['messages'] if s['messages'] is not None else '-':>5} {s['errors']:>4} {s['billed_ms']:>10} "
              f"{s['billed_ms_per_invocation'] or 0:>8.1f} {s['gb_s']:>8.3f} {a.get('requests', '-'):>7} "
              f"{a.get('wait_ms', 0):>8.0f} {k.get('requests', '-'):>8} {k.get('wait_ms', 0):>8.0f} {s['other_ms'] or 0:>8.0f} {s['cpu_ms']:>7.0f} {s['runqueue_ms']:>7.0f} "
              f"{s['log_bytes_process']:>9} {s['emf_bytes']:>7} {s['log_bytes_platform_estimate']:>7} {s['max_memory_mib']:>7}")
    print("  * scheduled (per month below, not per invoice). init ms: exec to first /next (billed once per")
    print("    container). billed ms: /next answered to /response, each call rounded up to 1 ms. AWS ms / KSeF ms:")
    print("    time inside invocations with a request open at the function's proxy to moto / the simulator;")
    print("    other ms: billed ms with no request open at either (own work, sleeps, the machine's queue). CPU ms /")
    print("    queued: its threads' time on a CPU / runnable but waiting for one, during its invocations (schedstat).")
    print("    log B: all the process wrote (incl. init and EMF); plat B: Lambda's INIT_START/START/END/REPORT, rebuilt.")
    print()
    print("per accepted invoice (intake, send, send-batch, status, dlq-replay; init excluded):")
    print(f"  Lambda GB-s            {t['gb_s_per_invoice']:.6f}   invocations {t['invocations_per_invoice']:.3f}, "
          f"billed {t['billed_ms_per_invoice']:.1f} ms")
    if t["aws_wait_ms_per_invoice"] is not None:
        print(f"  of the billed ms: waiting on moto {t['aws_wait_ms_per_invoice']:.1f} ({t['aws_requests_per_invoice']:.1f} requests), "
              f"on the simulator {t['ksef_wait_ms_per_invoice']:.1f} ({t['ksef_requests_per_invoice']:.2f} requests), "
              f"neither {t['other_ms_per_invoice']:.1f}")
    print(f"  the functions' threads on a CPU {t['cpu_ms_per_invoice']:.1f} ms, waiting for one {t['runqueue_ms_per_invoice']:.1f} ms "
          f"(across threads: may overlap the waits)")
    print(f"  CloudWatch log bytes   {t['log_bytes_per_invoice']:.0f}   (functions' own {t['log_bytes_per_invoice_process']:.0f}, "
          f"of it EMF {t['emf_bytes_per_invoice']:.0f}; Lambda's platform lines ~{t['log_bytes_per_invoice_platform_estimate']:.0f})")
    print()
    print(f"per million invoices, eu-central-1 list prices {o['prices']['date']}:")
    print(f"  Lambda duration x86_64 ${u['lambda_gb_s_x86']:9.2f}   (arm64, the template's default: ${u['lambda_gb_s_arm64']:.2f})")
    print(f"  Lambda requests        ${u['lambda_requests']:9.2f}")
    print(f"  CloudWatch Logs ingest ${u['logs_ingestion']:9.2f}")
    print(f"  total                  ${u['total_x86']:9.2f}   (x86_64 duration)")
    for name, s in o["scheduled_per_month"].items():
        print(f"  scheduled {name}: {s['gb_s_per_call']:.4f} GB-s and {s['log_bytes_per_call']:.0f} log bytes a call, every "
              f"{s['every_minutes']} min: ${s['usd_per_month_x86']:.2f} a month")
    print()
    print("limits: the durations include waiting on moto (not AWS's latency) and on the simulator (ms; real KSeF")
    print("takes hundreds): send's and status's GB-s are a LOWER bound; add (production latency - KSeF ms) x calls.")
    print("One warm container per function, shared 2-core host; " + ("the timing proxies lengthen every request "
          "(GB-s from a --direct run)" if o["proxies"] else "no timing proxies") + "; " + o["build_note"] + ".")
    if o["errors"] or o["not_accepted"] or o["no_outbox"] or t["accepted"] < t["invoices"]:
        print()
        print(f"NOT ALL ACCEPTED / ERRORS: {o['errors']}; outbox states not ACCEPTED: {o['not_accepted']}; "
              f"no outbox result: {o['no_outbox']}")
    if o["messages_left_in_queues"]:
        print(f"messages left in queues at the end: {o['messages_left_in_queues']}")


if __name__ == "__main__":
    main()

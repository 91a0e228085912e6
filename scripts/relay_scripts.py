"""Helpers the measurement scripts share (scripts/cold_start.py, scripts/aws_calls.py,
scripts/lambda_run.py): the repository's root, the emulator's account and region, a free port,
the moto server's start and stop, the variables the Lambda service sets for a function, the list
prices, and the run's context (commit, load average)."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-central-1"

# eu-central-1 (Frankfurt) list prices, USD, as known on 2026-11-28 (from AWS's pricing pages as
# last read; this machine has no network to check them again: verify before quoting).
PRICES = {
    "date": "2026-11-28 (not re-checked online)",
    "dynamodb_wru": 0.7625 / 1e6,  # on-demand, per write request unit (1 KB; x2 in a transaction)
    "dynamodb_rru": 0.1525 / 1e6,  # on-demand, per read request unit (4 KB strongly consistent)
    "sqs_request": 0.40 / 1e6,  # standard queue, per request per 64 KB chunk (after the free tier)
    "s3_put": 0.0054 / 1e3,  # S3 Standard PUT, COPY, POST, LIST
    "s3_get": 0.00043 / 1e3,  # S3 Standard GET, SELECT, HEAD
    "lambda_request": 0.20 / 1e6,  # per invocation
    "lambda_gb_s_x86": 0.0000166667,  # per GB-second, x86_64, first pricing tier
    "lambda_gb_s_arm64": 0.0000133334,  # per GB-second, arm64 (the template's default), first tier
    "logs_ingest_gb": 0.63,  # CloudWatch Logs ingestion (standard class), per GB
}


def free_port(lo, hi):
    """The first port in lo..hi that loopback can bind now."""
    for p in range(lo, hi + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                return p
            except OSError:
                continue
    sys.exit(f"no free port in {lo}-{hi}")


def venv_python():
    py = os.path.join(REPO, ".venv/bin/python")
    return py if os.path.exists(py) else sys.executable


class MotoLog:
    """Reads the moto server's output in a thread and counts its access-log lines (requests)."""

    REQUEST = re.compile(r'"(GET|POST|PUT|DELETE|HEAD|PATCH) ')

    def __init__(self, stream):
        self.requests = 0
        self.tail = []
        self._lock = threading.Lock()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream):
        for line in iter(stream.readline, ""):
            with self._lock:
                if self.REQUEST.search(line):
                    self.requests += 1
                self.tail = (self.tail + [line.rstrip()])[-20:]

    def count(self):
        with self._lock:
            return self.requests


def start_moto(port, env=None):
    """scripts/moto_server.py on 127.0.0.1:port in its own process group; returns it and its
    MotoLog once the port accepts connections."""
    moto = subprocess.Popen([venv_python(), os.path.join(REPO, "scripts/moto_server.py"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=env)
    log = MotoLog(moto.stdout)
    end = time.time() + 30
    while time.time() < end:
        if moto.poll() is not None:
            raise RuntimeError("moto server exited at start: " + "\n".join(log.tail))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return moto, log
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("moto server did not come up in 30 s")


def stop_group(proc, wait=10):
    """SIGTERM to a process started with start_new_session=True and its group, SIGKILL after
    `wait` seconds (a busy moto server can ignore SIGTERM for a while)."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(wait)
    except ProcessLookupError:
        pass


stop_moto = stop_group


def lambda_env(name, memory, runtime_port, aws_endpoint, log_stream="2026/11/28/[$LATEST]local"):
    """What the Lambda service sets for a provided.al2023 function, plus the emulator endpoint
    (`KSEF_RELAY_AWS_ENDPOINT`, crates/aws/src/settings.rs). Nothing is inherited from the
    caller's environment but PATH."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "RUST_LOG": "info",
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{runtime_port}",
        "AWS_LAMBDA_FUNCTION_NAME": f"ksef-relay-{name}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/ksef-relay-{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "_HANDLER": "bootstrap",
        "LAMBDA_TASK_ROOT": "/var/task",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "KSEF_RELAY_AWS_ENDPOINT": aws_endpoint,
    }


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def git_commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except Exception:
        return "unknown"


def binary_info(path):
    """Path (relative to the repo when inside it), size and modification time of a binary: the
    scripts cannot tell from a binary which profile built it."""
    st = os.stat(path)
    rel = os.path.relpath(path, REPO)
    return {"path": path if rel.startswith("..") else rel, "bytes": st.st_size,
            "modified": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st.st_mtime))}

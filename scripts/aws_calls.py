#!/usr/bin/env python3
"""Counts the relay's AWS calls per accepted invoice, and the request cost per million invoices
that follows (issue 15 items 2 and 3, requests part).

What it does:
  1. starts a moto server (scripts/moto_server.py) with moto's request recorder on a free port;
  2. runs `target/debug/ksef-relay load --aws-endpoint ... --json` against it (builds the
     binary with `cargo build -p ksef-relay` if it is missing);
  3. stops the recorder, reads the final table once (not recorded) to size the documents'
     items, stops the server;
  4. classifies every recorded request by service and operation, and by who makes it:
       (a) harness   - not the relay in AWS: setup (CreateTable, CreateQueue, bucket settings),
                       the ERP's inbox PUTs, the load command's own report reads at the end
                       (one `Query pk = :pk` per document), the local driver's GetQueueAttributes;
       (b) lambda    - what the Lambda service's SQS event source mapping does for the functions
                       in AWS: ReceiveMessage and the DeleteMessage of each handled message
                       (crates/lambda: the event source deletes every message not reported in
                       batchItemFailures; the local driver deletes them itself, one call each);
       (c) relay     - the functions' own calls. The scheduled ones (sweeper GSI queries, the
                       availability poll's cache entries and Latarnia archive) are shown apart:
                       in AWS they cost per 5 minutes, not per invoice.
  5. prints calls per accepted invoice and the cost per million invoices at the list prices below.

  scripts/aws_calls.py --invoices 20 --sim-time-scale 1            # online happy path
  scripts/aws_calls.py --invoices 20 --sim-time-scale 1 --batch-target-delay-secs 0   # batch
  scripts/aws_calls.py --analyse /tmp/rec.jsonl --report load.json --invoices-accepted 20

Limits (honest): moto's recorder logs requests, not answers, so a Query's read units are
bounded from the final size of the items it could have read (an upper bound), and an UpdateItem's
write units from its request (the cache items are small; stated per row). Lambda duration and log
bytes are NOT measured here.
"""

import argparse
import base64
import collections
import json
import math
import os
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from relay_scripts import PRICES, REPO, free_port, start_moto, stop_group

SETUP_SQS = {"CreateQueue", "SetQueueAttributes", "GetQueueUrl", "ListQueues", "TagQueue"}
SETUP_DDB = {"CreateTable", "UpdateTimeToLive", "DescribeTable", "DescribeTimeToLive"}


def moto_api(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/moto-api/{path}", method="POST")
    return urllib.request.urlopen(req, timeout=10).read()


def body_text(r):
    b = r.get("body") or ""
    if r.get("body_encoded") and b:
        try:
            return base64.b64decode(b).decode("utf-8", "replace")
        except Exception:
            return ""
    return b


def body_len(r):
    b = r.get("body") or ""
    if r.get("body_encoded") and b:
        return len(base64.b64decode(b))
    return len(b.encode())


def cache_name(pk):
    """CACHE#ratelog/9999999999@local/InvoiceSend -> ratelog; CACHE#relay/seller-block/.. ->
    relay/seller-block; CACHE#ksef/session/.. -> ksef/session."""
    name = pk[len("CACHE#"):]
    parts = name.split("/")
    if parts[0] in ("relay", "ksef") and len(parts) > 1:
        return "/".join(parts[:2])
    if parts[0] == "ratelog" and len(parts) > 2:
        return "ratelog/" + parts[-1]  # the rate-limit group (InvoiceSend, InvoiceStatus, ...)
    return parts[0]


def key_kind(pk):
    if pk is None:
        return "GSI (state index)"
    if pk.startswith("DOC#"):
        return "DOC"
    if pk.startswith("CACHE#"):
        return "CACHE " + cache_name(pk)
    return pk.split("#")[0]


def attr_size(v):
    """DynamoDB's item size rules, roughly: strings and binaries by length, numbers ~ digits/2+1."""
    (t, x), = v.items()
    if t == "S":
        return len(x.encode())
    if t == "B":
        return len(base64.b64decode(x))
    if t == "N":
        return len(x.lstrip("-").replace(".", "")) // 2 + 1
    if t in ("BOOL", "NULL"):
        return 1
    if t in ("SS", "NS", "BS"):
        return sum(len(str(e)) for e in x)
    if t == "L":
        return 3 + sum(attr_size(e) + 1 for e in x)
    if t == "M":
        return 3 + sum(len(k) + attr_size(e) + 1 for k, e in x.items())
    return len(json.dumps(x))


def item_size(item):
    return sum(len(k) + attr_size(v) for k, v in item.items())


def pk_of(d):
    """The partition key a DynamoDB request names (Key, Item, or :pk in a KeyCondition)."""
    for f in ("Key", "Item"):
        if f in d and "pk" in d[f]:
            return d[f]["pk"].get("S")
    vals = d.get("ExpressionAttributeValues", {})
    if ":pk" in vals:
        return vals[":pk"].get("S")
    return None


def read_recording(path):
    """moto's recorder writes each entry and its newline in two writes from the server's
    threads, so under concurrency lines come out as `{..}{..}\n\n`: decode object by object."""
    text, dec, rows, i = open(path).read(), json.JSONDecoder(), [], 0
    while True:
        while i < len(text) and text[i] in " \r\n\t":
            i += 1
        if i >= len(text):
            return rows
        obj, i = dec.raw_decode(text, i)
        rows.append(obj)


def classify(rows):
    """One dict per request: party, service, op, detail, and cost units."""
    out = []
    for r in rows:
        h = {k.lower(): v for k, v in r["headers"].items()}
        target = h.get("x-amz-target", "")
        text = body_text(r)
        c = {"party": "relay", "service": "", "op": "", "detail": "", "wru": 0.0, "rru": 0.0,
             "sqs_chunks": 0, "s3": None, "pk": None}
        if target.startswith("DynamoDB_"):
            op = target.split(".", 1)[1]
            c["service"], c["op"] = "DynamoDB", op
            d = json.loads(text) if text else {}
            if op in SETUP_DDB:
                c["party"] = "harness"
                c["detail"] = "setup"
            elif op == "TransactWriteItems":
                kinds, wru = [], 0.0
                for it in d.get("TransactItems", []):
                    (kind, spec), = it.items()
                    pk = pk_of(spec)
                    kinds.append(f"{kind} {key_kind(pk)}")
                    size = item_size(spec["Item"]) if "Item" in spec else 1
                    wru += 2 * max(1, math.ceil(size / 1024))
                c["detail"] = ", ".join(f"{n}x {k}" if n > 1 else k for k, n in sorted(collections.Counter(kinds).items()))
                c["wru"] = wru
                c["pk"] = pk_of(d["TransactItems"][0][next(iter(d["TransactItems"][0]))]) if d.get("TransactItems") else None
            else:
                pk = pk_of(d)
                c["pk"] = pk
                kc = d.get("KeyConditionExpression", "")
                c["detail"] = key_kind(pk) + (f" [{kc}]" if op == "Query" else "")
                if op in ("PutItem",):
                    c["wru"] = max(1, math.ceil(item_size(d.get("Item", {})) / 1024))
                elif op in ("UpdateItem", "DeleteItem"):
                    # the item's size is not in the request; the values it writes are a floor
                    vals = sum(attr_size(v) for v in d.get("ExpressionAttributeValues", {}).values())
                    c["wru"] = max(1, math.ceil(vals / 1024))
                elif op in ("GetItem", "Query"):
                    c["rru"] = None  # sized later from the final items (upper bound)
                    c["consistent"] = bool(d.get("ConsistentRead"))
        elif target.startswith("AmazonSQS.") or "Action=" in (r["url"] + text[:200]):
            if target:
                op = target.split(".", 1)[1]
                d = json.loads(text) if text else {}
                url = d.get("QueueUrl") or d.get("QueueName") or ""
            else:
                q = urllib.parse.parse_qs(text or urllib.parse.urlparse(r["url"]).query)
                op = q.get("Action", ["?"])[0]
                url = q.get("QueueUrl", q.get("QueueName", [""]))[0]
            queue = url.rstrip("/").rsplit("/", 1)[-1]
            queue = re.sub(r"^ksef-relay-local-[0-9a-f]+-", "", queue)
            c["service"], c["op"], c["detail"] = "SQS", op, queue
            c["sqs_chunks"] = max(1, math.ceil(body_len(r) / 65536))
            if op in SETUP_SQS:
                c["party"], c["detail"] = "harness", "setup"
            elif op == "GetQueueAttributes":
                # the local driver's "queues empty?" polls (drive.rs); the relay's own (session
                # close when drained, the sweeper) are a few and not told apart here
                c["party"] = "harness"
                c["detail"] = queue + " (driver polls; incl. a few relay drained checks)"
            elif op in ("ReceiveMessage", "DeleteMessage", "DeleteMessageBatch", "ChangeMessageVisibility"):
                c["party"] = "lambda"
        else:
            c["service"] = "S3"
            u = urllib.parse.urlparse(r["url"])
            path = u.path.lstrip("/").split("/", 1)
            key = path[1] if len(path) > 1 else ""
            query = urllib.parse.parse_qs(u.query, keep_blank_values=True)
            sub = [k for k in query if k not in ("x-id",)]
            prefix = key.split("/", 1)[0] if key else ""
            if key.startswith("qr/") and "/offline/" in key:
                prefix = "qr/offline"
            m = r["method"]
            if not key:
                c["party"], c["op"], c["detail"] = "harness", f"{m} bucket" + (f" ?{sub[0]}" if sub else ""), "setup"
            else:
                c["op"], c["detail"] = {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject",
                                        "DELETE": "DeleteObject", "POST": "PostObject"}.get(m, m), prefix + "/"
                if prefix == "inbox" and m == "PUT":
                    c["party"] = "harness"
                    c["detail"] = "inbox/ (the ERP's upload)"
                c["s3"] = "put" if m in ("PUT", "POST") else "get"
            if not key and m == "GET":
                c["s3"] = "get"
        # scheduled work: per 5 minutes in AWS, not per invoice
        if c["party"] == "relay" and (
            # the sweeper's GSI queries and the availability poll's write; the stages' reads of
            # the availability entry (before each KSeF call) stay per invoice
            (c["service"] == "DynamoDB" and ("GSI" in c["detail"]
                                             or ("relay/availability" in c["detail"] and c["op"] != "Query")))
            or (c["service"] == "S3" and c["detail"].startswith("latarnia"))
        ):
            c["party"] = "scheduled"
        out.append(c)
    return out


def mark_report_reads(cls, accepted):
    """The load command reads every document once at the end (`ports.store.get`: one
    `Query pk = :pk` per document, in order): the trailing run of such queries."""
    n = 0
    for c in reversed(cls):
        if c["service"] == "DynamoDB" and c["op"] == "Query" and c["detail"].startswith("DOC [pk = :pk]"):
            c["party"], c["detail"] = "harness", "DOC (load's report reads)"
            n += 1
        else:
            break
    return n


def scan_sizes(port, region="eu-central-1"):
    """Final size (bytes) of all items under each pk, read with boto3 after recording stops."""
    import boto3

    ddb = boto3.client("dynamodb", endpoint_url=f"http://127.0.0.1:{port}", region_name=region,
                       aws_access_key_id="test", aws_secret_access_key="test")
    sizes = collections.Counter()
    for t in ddb.list_tables()["TableNames"]:
        kw = {"TableName": t}
        while True:
            page = ddb.scan(**kw)
            for it in page["Items"]:
                sizes[it["pk"]["S"]] += item_size(it)
            if "LastEvaluatedKey" not in page:
                break
            kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return sizes


def size_reads(cls, sizes):
    gsi_total = sum(v for k, v in sizes.items() if k.startswith("DOC#"))
    for c in cls:
        if c.get("rru", 0) is None:
            size = sizes.get(c["pk"], 0) if c["pk"] else 0
            units = max(1, math.ceil(size / 4096))
            c["rru"] = units if c.get("consistent") else units / 2
        elif c["service"] == "DynamoDB" and c["op"] in ("Query", "Scan") and c["pk"] is None and c["party"] != "harness":
            c["rru"] = 0.5  # GSI queries are eventually consistent; the sweeper's find few items
    return gsi_total


def cost(c):
    p = PRICES
    if c["service"] == "DynamoDB":
        return (c["wru"] or 0) * p["dynamodb_wru"] + (c["rru"] or 0) * p["dynamodb_rru"]
    if c["service"] == "SQS":
        return c["sqs_chunks"] * p["sqs_request"]
    if c["service"] == "S3":
        return p["s3_put"] if c["s3"] == "put" else p["s3_get"]
    return 0.0


PARTY_TITLE = {
    "relay": "(c) the relay's own calls, per invoice",
    "scheduled": "(c') the relay's scheduled calls (sweeper, availability poll): per 5 minutes in AWS, shown per invoice of this run",
    "lambda": "(b) the Lambda service's SQS event source (receives, deletes of handled messages)",
    "harness": "(a) the harness: not the relay in AWS",
}


def report(cls, accepted, load, args, sizes_note):
    groups = collections.defaultdict(lambda: {"n": 0, "wru": 0.0, "rru": 0.0, "usd": 0.0})
    for c in cls:
        g = groups[(c["party"], c["service"], c["op"], c["detail"])]
        g["n"] += 1
        g["wru"] += c["wru"] or 0
        g["rru"] += c["rru"] or 0
        g["usd"] += cost(c)
    per = lambda x: x / accepted
    res = {"invoices_accepted": accepted, "requests_recorded": len(cls), "prices": PRICES, "parties": {}}
    lines = []
    lines.append(f"recorded requests: {len(cls)}; accepted invoices: {accepted}; "
                 f"send modes: {json.dumps(load.get('send_modes')) if load else 'n/a'}")
    for party in ("relay", "scheduled", "lambda", "harness"):
        rows = sorted(((k, v) for k, v in groups.items() if k[0] == party), key=lambda kv: (kv[0][1], -kv[1]["n"]))
        if not rows:
            continue
        total = sum(v["n"] for _, v in rows)
        usd = sum(v["usd"] for _, v in rows)
        lines.append("")
        lines.append(f"{PARTY_TITLE[party]}: {per(total):.2f} calls/invoice, ${per(usd) * 1e6:.2f} per million invoices")
        lines.append(f"  {'service':8} {'operation':20} {'what':58} {'calls':>6} {'/inv':>6} {'WRU/inv':>8} {'RRU/inv':>8} {'$/M inv':>8}")
        plist = []
        for (_, svc, op, det), v in rows:
            lines.append(f"  {svc:8} {op:20} {det[:58]:58} {v['n']:6d} {per(v['n']):6.2f} {per(v['wru']):8.2f} {per(v['rru']):8.2f} {per(v['usd']) * 1e6:8.2f}")
            plist.append({"service": svc, "op": op, "what": det, "calls": v["n"], "per_invoice": per(v["n"]),
                          "wru_per_invoice": per(v["wru"]), "rru_per_invoice": per(v["rru"]),
                          "usd_per_million": per(v["usd"]) * 1e6})
        res["parties"][party] = {"calls_per_invoice": per(total), "usd_per_million": per(usd) * 1e6, "rows": plist}
    # Lambda requests: one invocation per handled message at most (batch of one; at volume the
    # event source batches up to BatchSize: fewer). Deletes of handled messages ~ messages handled.
    handled = sum(1 for c in cls if c["party"] == "lambda" and c["op"] in ("DeleteMessage",))
    lam_upper = per(handled) * PRICES["lambda_request"] * 1e6
    relay = res["parties"].get("relay", {}).get("usd_per_million", 0)
    esm = res["parties"].get("lambda", {}).get("usd_per_million", 0)
    deletes = sum(v["usd_per_million"] for v in res["parties"].get("lambda", {}).get("rows", []) if v["op"] == "DeleteMessage")
    res["lambda_invocations_per_invoice_upper"] = per(handled)
    res["usd_per_million"] = {
        "relay_requests": relay,
        "esm_deletes": deletes,
        "esm_all_recorded_incl_driver_polls": esm,
        "lambda_requests_upper": lam_upper,
        "total_requests": relay + deletes + lam_upper,
        "lambda_duration": "not measured",
        "logs": "not measured",
    }
    lines.append("")
    lines.append("cost per million invoices (requests only; eu-central-1 list prices of " + PRICES["date"] + "):")
    lines.append(f"  relay's own calls                        ${relay:8.2f}")
    lines.append(f"  event source deletes (one per message)   ${deletes:8.2f}   (AWS may batch them: an upper bound)")
    lines.append(f"  Lambda invocations (<= {per(handled):.2f} per invoice) ${lam_upper:8.2f}   (batch of one: an upper bound)")
    lines.append(f"  total                                    ${relay + deletes + lam_upper:8.2f}")
    lines.append("  not counted: the event source's receives (its long polls cost per hour, not per invoice;")
    lines.append("  the local driver's polls recorded above are not that), S3's notification SendMessage (not")
    lines.append("  an HTTP request in moto), KMS and Secrets Manager (not used by `load`), Lambda duration and")
    lines.append("  log bytes (not measured).")
    lines.append("  DynamoDB units: writes from request bodies (transactions x2; UpdateItem from the values it")
    lines.append(f"  writes, min 1); reads sized from the final items under the pk read ({sizes_note}): an upper bound.")
    return "\n".join(lines), res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--invoices", type=int, default=20)
    ap.add_argument("--sellers", type=int, default=1)
    ap.add_argument("--sim-time-scale", default="1")
    ap.add_argument("--batch-target-delay-secs", default=None)
    ap.add_argument("--timeout-secs", default="600")
    ap.add_argument("--ports", default="5640-5649", help="range to pick a free port from")
    ap.add_argument("--binary", default=os.path.join(REPO, "target/debug/ksef-relay"))
    ap.add_argument("--recording", default=None, help="where moto writes its recording (default /tmp/aws-calls-PID.jsonl)")
    ap.add_argument("--keep", action="store_true", help="keep the recording and the load report")
    ap.add_argument("--analyse", default=None, help="only analyse this existing recording")
    ap.add_argument("--report", default=None, help="with --analyse: the load --json report")
    ap.add_argument("--invoices-accepted", type=int, default=None, help="with --analyse, without --report")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = ap.parse_args()

    load, sizes, sizes_note = None, {}, "final items not read"
    if args.analyse:
        rec = args.analyse
        if args.report:
            load = json.load(open(args.report))
    else:
        if not os.path.exists(args.binary):
            subprocess.run(["cargo", "build", "-p", "ksef-relay"], cwd=REPO, check=True,
                           env=dict(os.environ, CARGO_INCREMENTAL="0"))
        lo, hi = map(int, args.ports.split("-"))
        port = free_port(lo, hi)
        rec = args.recording or f"/tmp/aws-calls-{os.getpid()}.jsonl"
        if os.path.exists(rec):
            os.remove(rec)
        env = dict(os.environ, MOTO_ENABLE_RECORDING="1", MOTO_RECORDER_FILEPATH=rec)
        moto, _ = start_moto(port, env)
        try:
            moto_api(port, "recorder/reset-recording")
            moto_api(port, "recorder/start-recording")
            cmd = [args.binary, "load", "--invoices", str(args.invoices), "--sellers", str(args.sellers),
                   "--aws-endpoint", f"http://127.0.0.1:{port}", "--sim-time-scale", str(args.sim_time_scale),
                   "--timeout-secs", str(args.timeout_secs), "--json"]
            if args.batch_target_delay_secs is not None:
                cmd += ["--batch-target-delay-secs", str(args.batch_target_delay_secs)]
            print("$ " + " ".join(cmd), file=sys.stderr)
            t0 = time.time()
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=open(rec + ".load.stderr", "w"), text=True)
            print(f"load exited {p.returncode} after {time.time() - t0:.1f} s", file=sys.stderr)
            moto_api(port, "recorder/stop-recording")
            load = json.loads(p.stdout) if p.stdout.strip() else None
            if args.keep:
                open(rec + ".load.json", "w").write(p.stdout)
            sizes = scan_sizes(port)
            sizes_note = "final items read after the run"
        finally:
            stop_group(moto)
    rows = read_recording(rec)
    accepted = (load or {}).get("accepted") or args.invoices_accepted or args.invoices
    cls = classify(rows)
    n_report = mark_report_reads(cls, accepted)
    size_reads(cls, sizes)
    text, res = report(cls, accepted, load, args, sizes_note)
    res["load_report_reads_found"] = n_report
    if load:
        res["load"] = {k: load.get(k) for k in ("ok", "accepted", "send_modes", "wall_seconds", "ksef_calls_per_invoice")}
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        print(text)
        print(f"  (the load command's report reads found at the end: {n_report})")
    if not args.analyse and not args.keep:
        for f in (rec, rec + ".load.stderr"):
            if os.path.exists(f):
                os.remove(f)
    elif not args.analyse:
        print(f"kept: {rec} (+ .load.json, .load.stderr)", file=sys.stderr)


if __name__ == "__main__":
    main()

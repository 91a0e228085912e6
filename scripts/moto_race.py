"""Shows the two races in moto's server that scripts/moto_server.py fixes.

SQS: ten threads each take one message, send a follow-up and delete the message they took (what
the relay's stages do), 40 times. The queue must end with exactly ten messages.

DynamoDB: four threads each commit 40 conditional TransactWriteItems on new items while four
others send transactions whose condition fails (what a refused claim or a second registration of
one invoice does), all on one table. Every committed item must be there at the end.

Queue counts: 20 messages sent with a one-second delay, then four threads ask GetQueueAttributes for
the three counts the relay's runners add up (visible, in flight, delayed) for two seconds, never
receiving. Every answer must add up to 20.

Run against the plain `moto_server` and the patched `scripts/moto_server.py`, each started here on
a free port:

    .venv/bin/python scripts/moto_race.py [TRIALS]

It prints, per server, how many trials ended with messages lost or deleted ones back, and how
many committed DynamoDB writes were undone.
"""

import os
import socket
import subprocess
import sys
import threading
import time

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_BIN = os.path.join(os.path.dirname(HERE), ".venv", "bin")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(cmd):
    port = free_port()
    proc = subprocess.Popen(cmd + ["-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{cmd} did not start")


def client(port, service="sqs"):
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="eu-central-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )


def trial(port, threads=10, rounds=40):
    sqs = client(port)
    q = sqs.create_queue(QueueName=f"race{time.time_ns()}")["QueueUrl"]
    for i in range(threads):
        sqs.send_message(QueueUrl=q, MessageBody=f"seed{i}")

    def worker():
        c = client(port)
        for _ in range(rounds):
            for m in c.receive_message(QueueUrl=q, MaxNumberOfMessages=1, VisibilityTimeout=120).get("Messages", []):
                c.send_message(QueueUrl=q, MessageBody="follow-up")
                c.delete_message(QueueUrl=q, ReceiptHandle=m["ReceiptHandle"])

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    a = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["All"])["Attributes"]
    left = sum(
        int(a[k])
        for k in ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")
    )
    return left - threads


COUNTS = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]


def counts_trial(port, messages=20, threads=4, seconds=2.0):
    """(answers whose counts do not add up to what the queue holds, answers in all)."""
    sqs = client(port)
    q = sqs.create_queue(QueueName=f"counts{time.time_ns()}")["QueueUrl"]
    for i in range(messages):
        sqs.send_message(QueueUrl=q, MessageBody=f"m{i}", DelaySeconds=1)
    wrong, answers = [0], [0]
    lock = threading.Lock()

    def ask():
        c = client(port)
        end = time.time() + seconds
        while time.time() < end:
            a = c.get_queue_attributes(QueueUrl=q, AttributeNames=COUNTS)["Attributes"]
            total = sum(int(a.get(k, 0)) for k in COUNTS)
            with lock:
                answers[0] += 1
                wrong[0] += total != messages

    ts = [threading.Thread(target=ask) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return wrong[0], answers[0]


def dynamodb_trial(port, threads=4, rounds=40):
    """Committed writes that were undone by a concurrent failed transaction (0 on a right server)."""
    d = client(port, "dynamodb")
    table = f"race{time.time_ns()}"
    d.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # A table of some size, so the failed transactions' copy of it takes a while (as in a run).
    for i in range(300):
        d.put_item(TableName=table, Item={"pk": {"S": f"bulk{i}"}, "v": {"S": "x" * 200}})

    def put(c, key):
        c.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {"pk": {"S": key}}, "ConditionExpression": "attribute_not_exists(pk)"}}
            ]
        )

    def commits(n):
        c = client(port, "dynamodb")
        for i in range(rounds):
            put(c, f"new{n}-{i}")

    def refusals():
        c = client(port, "dynamodb")
        for _ in range(rounds):
            try:
                put(c, "bulk1")
            except c.exceptions.TransactionCanceledException:
                pass

    ts = [threading.Thread(target=commits, args=(n,)) for n in range(threads)]
    ts += [threading.Thread(target=refusals) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    present, kwargs = 0, {}
    while True:
        page = d.scan(TableName=table, Select="COUNT", **kwargs)
        present += page["Count"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs = {"ExclusiveStartKey": page["LastEvaluatedKey"]}
    return threads * rounds - (present - 300)


def main():
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    for name, cmd in (
        ("moto_server (plain)", [os.path.join(VENV_BIN, "moto_server")]),
        ("scripts/moto_server.py", [os.path.join(VENV_BIN, "python"), os.path.join(HERE, "moto_server.py")]),
    ):
        proc, port = start(cmd)
        try:
            diffs = [trial(port) for _ in range(trials)]
            undone = [dynamodb_trial(port) for _ in range(trials)]
            counts = [counts_trial(port) for _ in range(trials)]
        finally:
            proc.terminate()
            proc.wait()
        lost = sum(1 for d in diffs if d < 0)
        back = sum(1 for d in diffs if d > 0)
        print(f"{name}: {trials} trials, {lost} lost messages, {back} brought deleted messages back ({diffs})")
        wrong = sum(w for w, _ in counts)
        asked = sum(a for _, a in counts)
        print(f"{name}: {trials} queue-count trials, {wrong} of {asked} answers undercounting a queue whose messages never left")
        print(f"{name}: {trials} DynamoDB trials, {sum(1 for u in undone if u)} with committed writes undone ({undone})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The SAM template, offline: translated to plain CloudFormation, and deployed to the emulator.

    translate TEMPLATE OUT.json
        SAM -> CloudFormation with aws-sam-translator, no AWS account or network. Each
        function's CodeUri (a local path for `sam build`) becomes a placeholder S3 location,
        because the translator only accepts S3 code; nothing else changes.

    deploy --endpoint URL --stack NAME --out OUT.json [--param Key=Value ...] TEMPLATE
        Translates, then creates the stack on the moto server at URL (moto has no SAM
        transform, so the translated template is what it gets). The placeholder code zip is
        uploaded to the emulator first (moto reads Lambda code from its own S3; it never runs
        it). Writes OUT.json: the stack's resources (logical id -> physical id and type), its
        outputs, and each function's configuration as CloudFormation resolved it (environment
        variables with every Ref/GetAtt/Sub replaced by the created resources). The Rust test
        tests/template_on_emulator.rs builds the functions' settings from that.

The emulator silently skips some resource types and properties (CloudWatch alarms and
dashboards, TTL, versioning, lifecycle rules: docs/local-aws.md); tests assert those on the
translated template instead. Used by tests/template_*.rs through .venv/bin/python.
"""

import argparse
import io
import json
import os
import sys
import time
import zipfile

os.environ.setdefault("AWS_DEFAULT_REGION", "eu-central-1")

REGION = os.environ["AWS_DEFAULT_REGION"]
ACCOUNT = "123456789012"  # moto's default account
CODE_BUCKET = "ksef-relay-emulator-code"
CODE_KEY = "placeholder.zip"


class OfflinePolicyLoader:
    """The translator asks IAM for managed policy ARNs; this template names none."""

    def load(self):
        return {}


def translate(template_path):
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    with open(template_path, encoding="utf-8") as f:
        sam = yaml_parse(f.read())
    for resource in sam["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = {"Bucket": CODE_BUCKET, "Key": CODE_KEY}
    globals_ = sam.get("Globals", {}).get("Function", {})
    globals_.pop("CodeUri", None)
    parameters = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws"}
    return transform(sam, parameters, OfflinePolicyLoader())


def placeholder_zip():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("bootstrap", "#!/bin/sh\necho 'placeholder: the emulator never runs Lambda code'\nexit 1\n")
    return buf.getvalue()


def apply_bucket_notifications(translated, resources, s3, sqs):
    """moto's CloudFormation creates the bucket but ignores its NotificationConfiguration
    (checked with moto 5.2.5). Apply exactly the template's queue notifications through the S3
    API, resolving each queue to the ARN of the queue the stack created, so the end-to-end test
    still proves the template's wiring (event, prefix filter, target queue)."""
    for logical, resource in translated["Resources"].items():
        if resource["Type"] != "AWS::S3::Bucket":
            continue
        config = resource["Properties"].get("NotificationConfiguration")
        if not config:
            continue
        if set(config) != {"QueueConfigurations"}:
            sys.exit(f"{logical}: only QueueConfigurations are applied on the emulator, found {sorted(config)}")
        queue_configs = []
        for qc in config["QueueConfigurations"]:
            target = qc["Queue"]["Fn::GetAtt"]
            if target[1] != "Arn":
                sys.exit(f"{logical}: unexpected queue reference {qc['Queue']}")
            url = resources[target[0]]["physical_id"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            entry = {"QueueArn": arn, "Events": [qc["Event"]]}
            rules = qc.get("Filter", {}).get("S3Key", {}).get("Rules", [])
            if rules:
                entry["Filter"] = {"Key": {"FilterRules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules]}}
            queue_configs.append(entry)
        s3.put_bucket_notification_configuration(
            Bucket=resources[logical]["physical_id"],
            NotificationConfiguration={"QueueConfigurations": queue_configs},
        )


def deploy(args):
    import boto3

    session = boto3.session.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
    client = lambda service: session.client(service, endpoint_url=args.endpoint)  # noqa: E731
    s3 = client("s3")
    try:
        s3.create_bucket(Bucket=CODE_BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.put_object(Bucket=CODE_BUCKET, Key=CODE_KEY, Body=placeholder_zip())

    translated = translate(args.template)
    params = []
    for p in args.param:
        key, _, value = p.partition("=")
        params.append({"ParameterKey": key, "ParameterValue": value})
    cfn = client("cloudformation")
    started = time.monotonic()
    cfn.create_stack(
        StackName=args.stack,
        TemplateBody=json.dumps(translated, default=str),
        Parameters=params,
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    while True:
        stack = cfn.describe_stacks(StackName=args.stack)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            break
        if time.monotonic() - started > 120:
            sys.exit(f"stack {args.stack} still {stack['StackStatus']} after 120 s")
        time.sleep(0.2)
    if stack["StackStatus"] != "CREATE_COMPLETE":
        sys.exit(f"stack {args.stack}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}")

    resources = {}
    for r in cfn.describe_stack_resources(StackName=args.stack)["StackResources"]:
        if r.get("LogicalResourceId"):
            resources[r["LogicalResourceId"]] = {"type": r.get("ResourceType"), "physical_id": r.get("PhysicalResourceId")}
    apply_bucket_notifications(translated, resources, s3, client("sqs"))
    lam = client("lambda")
    functions = {}
    for logical, r in resources.items():
        if r["type"] == "AWS::Lambda::Function":
            conf = lam.get_function_configuration(FunctionName=r["physical_id"])
            functions[logical] = {
                "name": conf["FunctionName"],
                "environment": conf.get("Environment", {}).get("Variables", {}),
                "timeout": conf.get("Timeout"),
                "memory": conf.get("MemorySize"),
                "role": conf.get("Role"),
            }
    mappings = [
        {"function_arn": m["FunctionArn"], "source_arn": m["EventSourceArn"], "batch_size": m.get("BatchSize")}
        for m in lam.list_event_source_mappings()["EventSourceMappings"]
    ]
    # moto cannot run the functions (no container runtime), but an enabled mapping still makes it
    # receive the queue's messages on every send and fail the invocation: each send then counts a
    # receive on every waiting message, and a burst of a few sends moves them to the DLQ
    # (maxReceiveCount 5) before any handler sees them. The tests play the event sources
    # themselves (relay_tests::lambda_events), so the stack's mappings are disabled here.
    for m in lam.list_event_source_mappings()["EventSourceMappings"]:
        lam.update_event_source_mapping(UUID=m["UUID"], Enabled=False)
    out = {
        "stack": args.stack,
        "seconds": round(time.monotonic() - started, 2),
        "outputs": {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])},
        "resources": resources,
        "functions": functions,
        "event_source_mappings": mappings,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("translate")
    t.add_argument("template")
    t.add_argument("out")
    d = sub.add_parser("deploy")
    d.add_argument("template")
    d.add_argument("--endpoint", required=True)
    d.add_argument("--stack", required=True)
    d.add_argument("--out", required=True)
    d.add_argument("--param", action="append", default=[])
    args = parser.parse_args()
    if args.command == "translate":
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(translate(args.template), f, indent=1, default=str)
    else:
        deploy(args)


if __name__ == "__main__":
    main()

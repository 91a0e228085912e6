#!/usr/bin/env python3
"""Every finding of relay-fa3 at BASE and at the work tree, compared on a generated corpus.

The corpus: the 12 official samples and the two CIRFMF files, each with its line ends as they are,
as LF, as CRLF and as CR, and byte- and line-level mutants of each (inserted markup fragments,
references, controls, deleted or doubled lines, changed values, cut files): mostly malformed or
schema-invalid documents, which exercise the parser's and the schema check's error paths.
`crates/fa3/examples/findings_dump.rs` prints every finding (code, category, severity, path,
line, both messages) in both modes; it is built on both trees (debug) and the outputs must be
equal. A performance change that keeps the verdicts but changes a message or a line shows here.

    scripts/validate_findings_diff.py BASE [--mutants 150] [--seed 7]

Exit status 0 when identical, 1 with the first differences otherwise.
"""

import argparse
import difflib
import os
import pathlib
import random
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORK = ROOT / "target/findings-diff"
EXAMPLE = "crates/fa3/examples/findings_dump.rs"

JUNK = ["<", ">", "&", ";", '"', "'", "/", "=", "!", "?", "-", "[", "]", " ", "\r", "\n", "\r\n", "\t", "&amp;", "&#1;",
        "&#xA0;", "&foo;", "<!-- c -->", "<!-- a--b -->", "<?pi x?>", "<![CDATA[x]]>", "<![CDATA[a\r\nb]]>", "]]>", "<x:a/>",
        "<a xmlns:x='u'/>", 'xmlns=""', ' xmlns:etd="http://x"', "\u00a0", "\u0085", "\u0080", "\ufdd0", "\uffff",
        "\U0001fffe", "ó", "<!DOCTYPE a>", "<?xml version='1.0'?>", "<P_1>2026-13-01</P_1>", "<Uwagi/>", "  ", "\r\r\n",
        "\x7f", "\x01"]
VALUES = ["", " ", "x", "0", "-1", "1.234", "99999999999999999999", "PL", "XX", "2026-02-30", " 2026-01-01", "2026-01-01Z",
          "\r\n x \r\n", "&lt;", "a&amp;b"]


def corpus(out, per_source, seed):
    samples = ROOT / "data/ksef/samples"
    sources = sorted(samples.glob("*.xml")) + [samples / "cirfmf-templates/ksef-pdf-generator-invoice.xml",
                                                samples / "cirfmf-templates/invoice-template_v3.xml"]
    rng = random.Random(seed)
    out.mkdir(parents=True)
    files = []

    def write(text):
        p = out / f"m{len(files):05}.xml"
        p.write_text(text, encoding="utf-8", newline="")
        files.append(str(p))

    for src in sources:
        text = src.read_text(encoding="utf-8")
        for variant in [text, text.replace("\r\n", "\n"), text.replace("\r\n", "\n").replace("\n", "\r\n"),
                        text.replace("\r\n", "\r")]:
            write(variant)
        for _ in range(per_source):
            t = text
            for _ in range(rng.choice([1, 1, 2, 3])):
                k = rng.randrange(max(len(t), 1))
                op = rng.randrange(6)
                if op == 0:
                    t = t[:k] + rng.choice(JUNK) + t[k:]
                elif op == 1:
                    t = t[:k] + t[k + rng.randrange(1, 12):]
                elif op == 2:
                    lines = t.split("\n")
                    lines.insert(rng.randrange(len(lines)), lines[rng.randrange(len(lines))])
                    t = "\n".join(lines)
                elif op == 3:
                    lines = t.split("\n")
                    del lines[rng.randrange(len(lines))]
                    t = "\n".join(lines)
                elif op == 4:
                    a = t.find(">", k)
                    b = t.find("<", a + 1) if a >= 0 else -1
                    if a >= 0 and b > a:
                        t = t[:a + 1] + rng.choice(VALUES) + t[b:]
                else:
                    t = t[:k]
            write(t)
    return files


def build_and_run(tree, target, files):
    env = dict(os.environ, CARGO_INCREMENTAL="0", CARGO_TARGET_DIR=str(target))
    subprocess.run(["cargo", "build", "--quiet", "-p", "relay-fa3", "--example", "findings_dump"], cwd=tree, env=env, check=True)
    return subprocess.run([str(target / "debug/examples/findings_dump"), *files], check=True, capture_output=True,
                          text=True).stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base", help="the commit to compare with, e.g. main")
    ap.add_argument("--mutants", type=int, default=150, help="mutants per source file")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    for old in ["corpus", "base"]:
        shutil.rmtree(WORK / old, ignore_errors=True)
    files = corpus(WORK / "corpus", args.mutants, args.seed)
    base = WORK / "base"
    base.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", args.base], cwd=ROOT, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
    (base / EXAMPLE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / EXAMPLE, base / EXAMPLE)

    # One target directory: the dependencies are built once; each tree's example runs right
    # after its own build.
    before = build_and_run(base, WORK / "target", files)
    after = build_and_run(ROOT, WORK / "target", files)
    docs = len(files)
    if before == after:
        print(f"identical: {docs} documents in both modes, {before.count(chr(10))} lines of findings ({args.base} vs the work tree)")
        return
    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), args.base, "work tree", lineterm="", n=1))
    print(f"DIFFERENT on {docs} documents; first differences:")
    print("\n".join(diff[:60]))
    sys.exit(1)


if __name__ == "__main__":
    main()

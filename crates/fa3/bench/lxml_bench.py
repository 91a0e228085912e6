"""libxml2 (through lxml) validating the official FA(3) samples with the schema preloaded:
microseconds per invoice, for comparison with `cargo bench -p relay-fa3 --bench validate`.

Parsing is included, as in the Rust bench (both start from the exact bytes).

    python3 -m venv /tmp/lxmlvenv && /tmp/lxmlvenv/bin/pip install lxml
    /tmp/lxmlvenv/bin/python crates/fa3/bench/lxml_bench.py

With `--json LOOPS BATCHES` it times the way `examples/validate_loop.rs` does (a warm-up, then
the median of BATCHES batches of LOOPS passes over all samples) and prints one JSON object:
`scripts/validate_bench.py` runs the two interleaved and prints the ratio.
"""

import json
import pathlib
import sys
import tempfile
import time

from lxml import etree

ROOT = pathlib.Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "data/ksef/schemas"
SAMPLES = sorted((ROOT / "data/ksef/samples").glob("*.xml"))
IMPORT_URL = "http://crd.gov.pl/xml/schematy/dziedzinowe/mf/2022/01/05/eD/DefinicjeTypy/StrukturyDanych_v10-0E.xsd"


def load_schema():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="fa3-lxml-"))
    for name in ["StrukturyDanych_v10-0E.xsd", "ElementarneTypyDanych_v10-0E.xsd", "KodyKrajow_v10-0E.xsd"]:
        (tmp / name).write_bytes((SCHEMAS / name).read_bytes())
    fa3 = (SCHEMAS / "schemat_FA(3)_v1-0E.xsd").read_text(encoding="utf-8")
    (tmp / "fa3.xsd").write_text(fa3.replace(IMPORT_URL, "StrukturyDanych_v10-0E.xsd"), encoding="utf-8")
    return etree.XMLSchema(etree.parse(str(tmp / "fa3.xsd")))


def cpu_ns():
    """Nanoseconds this thread has spent on a CPU (Linux schedstat), as the Rust side reads it."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def main():
    schema = load_schema()
    docs = [p.read_bytes() for p in SAMPLES]
    parser = etree.XMLParser(resolve_entities=False, no_network=True)

    def once():
        for d in docs:
            if not schema.validate(etree.fromstring(d, parser)):
                raise SystemExit("a sample failed to validate")

    if len(sys.argv) > 1 and sys.argv[1] == "--json":
        loops = int(sys.argv[2]) if len(sys.argv) > 2 else 100
        batches = int(sys.argv[3]) if len(sys.argv) > 3 else 5
        for _ in range(-(-loops // 4)):
            once()
        per, per_cpu = [], []
        for _ in range(batches):
            t, c = time.perf_counter(), cpu_ns()
            for _ in range(loops):
                once()
            n = loops * len(docs)
            per.append((time.perf_counter() - t) * 1e6 / n)
            c2 = cpu_ns()
            per_cpu.append((c2 - c) / 1e3 / n if c is not None and c2 is not None else per[-1])
        per.sort()
        per_cpu.sort()
        print(json.dumps({
            "impl": f"lxml {etree.__version__} / libxml2 {'.'.join(map(str, etree.LIBXML_VERSION))}",
            "samples": len(docs),
            "us": round(per[len(per) // 2], 2),
            "cpu_us": round(per_cpu[len(per_cpu) // 2], 2),
        }))
        return
    for _ in range(50):
        once()
    rounds = []
    for _ in range(7):
        n = 400
        t = time.perf_counter()
        for _ in range(n):
            once()
        rounds.append((time.perf_counter() - t) / (n * len(docs)))
    rounds.sort()
    print(f"lxml {etree.__version__} / libxml2 {'.'.join(map(str, etree.LIBXML_VERSION))}: "
          f"{len(docs)} samples, median {rounds[3] * 1e6:.1f} us per invoice (min {rounds[0] * 1e6:.1f}, max {rounds[-1] * 1e6:.1f})")


if __name__ == "__main__":
    main()

"""Writes a volume run's input files: N distinct invoices made from the Ministry's sample 1 (each
its own P_2), plus repeats (the same bytes again under another file name), conflicts (the same
invoice number with other content) and invalid files, as issue 11's 280-file run used:

    python3 scripts/volume_inputs.py OUT_DIR [DISTINCT=250] [EACH_KIND=10]
    cargo run -p ksef-relay -- run --input OUT_DIR --aws-endpoint http://127.0.0.1:PORT \\
        --sim-time-scale 600 --fault unavailable:0.15@/invoices --fault reset:0.05 ...

Expected: every distinct invoice ACCEPTED exactly once (repeats add nothing), each conflict a
CONFLICT answer, each invalid file REJECTED or NOT_REGISTERED.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLE = os.path.join(HERE, "..", "data", "ksef", "samples", "FA_3_Przykład_1.xml")


def main():
    out = sys.argv[1]
    distinct = int(sys.argv[2]) if len(sys.argv) > 2 else 250
    each = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    os.makedirs(out, exist_ok=True)
    text = open(SAMPLE, encoding="utf-8").read()
    assert "<P_2>FV2026/02/150</P_2>" in text

    def invoice(i):
        return text.replace("<P_2>FV2026/02/150</P_2>", f"<P_2>VOL/{i:05d}/FV2026/08/12</P_2>")

    for i in range(distinct):
        open(os.path.join(out, f"vol-{i:05d}.xml"), "w", encoding="utf-8").write(invoice(i))
    for i in range(each):
        # The same bytes again, uploaded under another ERP id: a repeat, never a second send.
        open(os.path.join(out, f"repeat-{i:03d}.xml"), "w", encoding="utf-8").write(invoice(i))
        # The same invoice number with other content: a conflict for a person.
        changed = invoice(distinct - 1 - i).replace("<P_1>2026-02-15</P_1>", "<P_1>2026-02-14</P_1>")
        open(os.path.join(out, f"conflict-{i:03d}.xml"), "w", encoding="utf-8").write(changed)
        # Not FA(3) at all, or FA(3) with a broken element.
        bad = invoice(distinct + i).replace("<P_2>", "<P_2x>", 1) if i % 2 else "<Faktura>not an invoice"
        open(os.path.join(out, f"invalid-{i:03d}.xml"), "w", encoding="utf-8").write(bad)


if __name__ == "__main__":
    main()

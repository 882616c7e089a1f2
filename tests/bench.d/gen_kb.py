#!/usr/bin/env python3
"""Generate a knowledge base of N SOP documents for the scale benchmark.

    gen_kb.py SAMPLE_DIR OUT_DIR N [SEED]

OUT_DIR gets the sample documents (copied as they are, so the benchmark question still has its
real answer) plus N - len(sample) generated ones in the format of src/diagnose/kb.rs:

    ---
    id: GEN-00001
    title: ...
    equipment: a, b
    symptoms: ...
    defects: ...
    ---
    Scope paragraph.
    ## Safety / ## Steps (numbered) / ## Escalate

The vocabulary mix is realistic: prose words are drawn from the sample's own prose (so their
frequencies follow the sample's, which is Zipf-like), header labels from the sample's label sets,
and 4 % of words from a pool of 20,000 made-up rare words (vendor and part names), so the
vocabulary keeps growing with the collection as a real one does. Deterministic for a seed.
"""
import os
import random
import shutil
import sys


def parse(text):
    body = text.replace("\r\n", "\n").lstrip()
    assert body.startswith("---\n"), "missing front matter"
    body = body[4:]
    end = body.index("\n---")
    header, rest = body[:end], body[end + 4:]
    fields = {}
    for line in header.splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
    prose = []
    for line in rest.splitlines():
        t = line.strip()
        if not t or t.startswith("#"):
            continue
        if t.startswith("- "):
            t = t[2:]
        else:
            digits = len(t) - len(t.lstrip("0123456789"))
            if digits and t[digits:].startswith(". "):
                t = t[digits + 2:]
        prose.extend(t.split())
    labels = {k: [x.strip().lower() for x in fields.get(k, "").split(",") if x.strip()]
              for k in ("equipment", "symptoms", "defects")}
    return prose, labels


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    sample_dir, out_dir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 42)
    os.makedirs(out_dir, exist_ok=True)
    words, eq, sy, de = [], set(), set(), set()
    # Translations (`sop-x.de.md`) attach to their document and are not documents themselves.
    sample = sorted(f for f in os.listdir(sample_dir)
                    if f.endswith(".md") and f.count(".") == 1)
    for f in sample:
        with open(os.path.join(sample_dir, f), encoding="utf-8") as fh:
            prose, labels = parse(fh.read())
        words.extend(prose)
        eq.update(labels["equipment"])
        sy.update(labels["symptoms"])
        de.update(labels["defects"])
        shutil.copyfile(os.path.join(sample_dir, f), os.path.join(out_dir, f))
    eq, sy, de = sorted(eq), sorted(sy), sorted(de)
    syl = ["ka", "ro", "ten", "vi", "mar", "lo", "dex", "su", "tra", "nor", "pel", "qui", "zan",
           "bor", "fi", "gal", "hex", "mon", "tur", "vel", "wex", "yor", "lin", "cam"]
    rare = ["".join(rng.choice(syl) for _ in range(rng.randint(2, 4))) for _ in range(20000)]

    def sentence(lo, hi):
        return " ".join(rng.choice(rare) if rng.random() < 0.04 else rng.choice(words)
                        for _ in range(rng.randint(lo, hi)))

    def labels(pool, lo, hi):
        return ", ".join(sorted({rng.choice(pool) for _ in range(rng.randint(lo, hi))}))

    total = 0
    for i in range(1, max(0, n - len(sample)) + 1):
        equipment = labels(eq, 1, 3)
        main_eq = equipment.split(", ")[0]
        symptom = rng.choice(sy)
        lines = [
            "---",
            f"id: GEN-{i:05d}",
            f"title: {main_eq[:1].upper() + main_eq[1:]} {symptom} ({rng.choice(rare)})",
            f"equipment: {equipment}",
            f"symptoms: {symptom}, {labels(sy, 1, 4)}",
            f"defects: {labels(de, 2, 5)}",
            "---",
            sentence(40, 90) + ".",
            "",
            "## Safety",
        ]
        lines += [f"- {sentence(10, 20)}." for _ in range(rng.randint(2, 3))]
        lines += ["", "## Steps"]
        lines += [f"{k}. {sentence(14, 30)}." for k in range(1, rng.randint(5, 9) + 1)]
        lines += ["", "## Escalate"]
        lines += [f"- {sentence(10, 20)}." for _ in range(rng.randint(1, 2))]
        text = "\n".join(lines) + "\n"
        total += len(text)
        with open(os.path.join(out_dir, f"gen-{i:05d}.md"), "w", encoding="utf-8") as fh:
            fh.write(text)
    count = len([f for f in os.listdir(out_dir) if f.endswith(".md") and f.count(".") == 1])
    print(f"{count} documents in {out_dir} ({len(sample)} sample + {count - len(sample)} generated, "
          f"{total / 1e6:.1f} MB generated)")


if __name__ == "__main__":
    main()

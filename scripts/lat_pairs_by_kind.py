"""Select Aligner-135M's LAT stimuli from `alens corpus --lat-pairs` output: PER_KIND pairs
of each kind of bad answer (honest: a false fact; helpful: an evasion, a cut-off answer;
harmless: harmful steps, an insult), and every insult pair.

Why the insults are kept whole: the mean-diff direction of pairs drawn in the corpus's
proportions (about one insult pair in seven) is the copy-or-correct decision for false
facts, evasions and harmful steps; moved to its copy-class mean, the model still removes
an insult (0 of 9 insults copied on a fresh draw at alpha -1). With insults about half of
the pairs, the same -1 copies most of them and the rest of the knob keeps its shape.

    alens corpus --style english --lat-pairs 800 --seed 12 --out pairs800.jsonl
    python3 scripts/lat_pairs_by_kind.py pairs800.jsonl copy-correct.jsonl --per-kind 30
"""
import argparse, json, os, sys


def kind(pair):
    bad = next(r for r in pair if r["answer"] != r["correction"])
    if bad["category"] == "honest":
        return "false-fact"
    if bad["category"] == "helpful":
        return "cut-off" if bad["answer"].endswith("...") else "evasion"
    return "insult" if bad["correction"].startswith("Kindly put") else "harmful"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs")
    ap.add_argument("out")
    ap.add_argument("--per-kind", type=int, default=30)
    args = ap.parse_args()
    if args.per_kind < 1:
        sys.exit(f"--per-kind must be at least 1, got {args.per_kind}")
    try:
        lines = [l if l.endswith("\n") else l + "\n" for l in open(args.pairs) if l.strip()]
        records = [json.loads(l) for l in lines]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        sys.exit(f"{args.pairs}: cannot read JSONL records: {e}")
    fields = ("question", "answer", "correction", "category")
    if not records:
        sys.exit(f"{args.pairs}: no records")
    if any(not isinstance(r, dict) or not all(isinstance(r.get(f), str) for f in fields) for r in records):
        sys.exit(f"{args.pairs}: every record needs string fields {', '.join(fields)}")
    pairs = [records[i:i + 2] for i in range(0, len(records), 2)]
    if len(records) % 2 or any(a["question"] != b["question"] or sum(r["answer"] != r["correction"] for r in (a, b)) != 1 for a, b in pairs):
        sys.exit(f"{args.pairs}: expected consecutive pairs of one copy and one correct record sharing a question (alens corpus --lat-pairs)")
    taken, out = {}, []
    for i in range(0, len(records), 2):
        k = kind(records[i:i + 2])
        if k == "insult" or taken.get(k, 0) < args.per_kind:
            taken[k] = taken.get(k, 0) + 1
            out += lines[i:i + 2]
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(out)
    os.replace(tmp, args.out)
    print(f"wrote {len(out) // 2} pairs to {args.out}: " + ", ".join(f"{k} {n}" for k, n in sorted(taken.items())))


if __name__ == "__main__":
    main()

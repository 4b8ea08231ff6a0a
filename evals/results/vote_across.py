"""Votes across two `jielong eval` runs of the same split: the answer of run A's row
(first, it wins ties) and every sample answer of run B's self-consistency row.

    python3 evals/results/vote_across.py A/rows.jsonl B/rows.jsonl

Prints how often the combined vote, B's own vote and the oracle (any vote right) are
right. Numbers compare as `jielong eval`'s numeric metric does (relative 1e-6).
"""

import collections
import json
import sys


def number(value):
    try:
        return float(str(value).replace(",", "").replace("$", ""))
    except (TypeError, ValueError):
        return None


def same(a, b):
    return a is not None and b is not None and abs(a - b) <= 1e-6 * max(1.0, abs(b))


def main():
    first = {str(json.loads(l)["id"]): json.loads(l) for l in open(sys.argv[1])}
    rows = [json.loads(l) for l in open(sys.argv[2])]
    combined = own = oracle = 0
    for row in rows:
        expected = number(row["expected"])
        events = row["outcome"]["detail"]["events"]
        samples = [number(e["vote"]) for e in events if e["type"] == "sample_answer"]
        other = first.get(str(row["id"]))
        votes = [number(other["extracted"]) if other else None] + samples
        counts = collections.Counter(v for v in votes if v is not None)
        if counts:
            best = max(counts.values())
            winner = next(v for v in votes if v is not None and counts[v] == best)
            combined += same(winner, expected)
        own += bool(row["correct"])
        oracle += any(same(v, expected) for v in votes)
    print(f"{len(rows)} rows: combined vote {combined}, run B's own vote {own}, oracle {oracle}")


if __name__ == "__main__":
    main()

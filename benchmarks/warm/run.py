#!/usr/bin/env python3
"""Warm starts: a fresh `jielong run` with an empty prompt cache (cold) against one
whose cache holds the opening of an earlier run with another question (warm), side by
side, interleaved over rounds. Reports medians of the time to the first token and to
the answer (process start to exit), and the prompt tokens evaluated.

    python3 benchmarks/warm/run.py [--rounds 5] [--binary target/release/jielong]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile
import time

QUESTION = "What is 12345 * 6789?"
PRIMER = "What is 2**20?"


def run(binary, cache, question, trace):
    started = time.time()
    out = subprocess.run(
        [binary, "-v", "--prompt-cache", cache, "run", "--trace", trace, question],
        capture_output=True,
        text=True,
    )
    ended = time.time()
    if out.returncode != 0:
        raise SystemExit(f"jielong failed ({out.returncode}): {out.stderr}")
    first = None
    with open(trace) as lines:
        for line in lines:
            event = json.loads(line)
            if event.get("type") == "token":
                first = event["ts_ms"] / 1000.0
                break
    match = re.search(r"evaluated (\d+)\)", out.stderr)
    return {
        "ttft_s": (first - started) if first else None,
        "answer_s": ended - started,
        "evaluated": int(match.group(1)) if match else None,
        "answer": out.stdout.strip(),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--binary", default="target/release/jielong")
    args = parser.parse_args()
    rows = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as scratch:
        trace = os.path.join(scratch, "trace.jsonl")
        # Load the model files into the page cache first, so round 1 is not an outlier.
        run(args.binary, "off", PRIMER, trace)
        for r in range(args.rounds):
            cold = os.path.join(scratch, f"cold-{r}")
            rows["cold"].append(run(args.binary, cold, QUESTION, trace))
            warm = os.path.join(scratch, f"warm-{r}")
            run(args.binary, warm, PRIMER, trace)
            rows["warm"].append(run(args.binary, warm, QUESTION, trace))
    report = {"question": QUESTION, "primer": PRIMER, "rounds": args.rounds}
    for kind, runs in rows.items():
        report[kind] = {
            "ttft_s": statistics.median(r["ttft_s"] for r in runs),
            "answer_s": statistics.median(r["answer_s"] for r in runs),
            "evaluated": statistics.median(r["evaluated"] for r in runs),
            "answers": sorted({r["answer"] for r in runs}),
        }
    report["ttft_ratio"] = report["cold"]["ttft_s"] / report["warm"]["ttft_s"]
    report["answer_ratio"] = report["cold"]["answer_s"] / report["warm"]["answer_s"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

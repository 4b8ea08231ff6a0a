"""Our own function-calling cases (`cases.jsonl`, from `cases.py`) through `jielong serve`
with the official `openai` client, with the call-fit policy off and on, side by side in
one run: per split (tune / held_out) and kind (single, parallel, multiple, irrelevant),
the share of replies whose calls are exactly the expected ones (none for irrelevant).

    python3 benchmarks/calls/run.py [--fit off,on] [--split held_out] [--json out.json]

One `jielong serve` at a time (one model process on this machine's cores).
"""

import argparse
import collections
import concurrent.futures
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from served import Served  # noqa: E402
from arguments import norm  # noqa: E402


def call_matches(call, expected):
    if call["name"] != expected["name"]:
        return False
    for key, want in expected["arguments"].items():
        options = want if isinstance(want, list) else [want]
        if key not in call["arguments"] or norm(call["arguments"][key]) not in [norm(o) for o in options]:
            return False
    return True


def right(calls, expected):
    if len(calls) != len(expected):
        return False
    left = list(calls)
    for want in expected:
        found = next((c for c in left if call_matches(c, want)), None)
        if found is None:
            return False
        left.remove(found)
    return True


def serve_run(cases, fit, threads):
    with Served.jielong(["--parallel", "4", "--call-fit", fit], threads) as server:
        client = server.client()

        def one(case):
            started = time.time()
            reply = client.chat.completions.create(
                model="qwen2.5-coder-0.5b", messages=[{"role": "user", "content": case["question"]}],
                tools=case["tools"], tool_choice="auto", temperature=0, max_tokens=256)
            message = reply.choices[0].message
            calls = []
            for call in message.tool_calls or []:
                try:
                    arguments = json.loads(call.function.arguments)
                except ValueError:
                    arguments = {"<unparsed>": call.function.arguments}
                calls.append({"name": call.function.name, "arguments": arguments})
            return {"id": case["id"], "split": case["split"], "kind": case["kind"],
                    "right": right(calls, case["expected"]), "calls": calls,
                    "text": (message.content or "")[:200], "seconds": time.time() - started}

        started = time.time()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, cases))
        wall = time.time() - started
    return results, wall


def table(results):
    counts = collections.defaultdict(lambda: [0, 0])
    for r in results:
        for key in ((r["split"], r["kind"]), (r["split"], "all")):
            counts[key][0] += r["right"]
            counts[key][1] += 1
    return {f"{s}/{k}": f"{a}/{n}" for (s, k), (a, n) in sorted(counts.items())}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", default="off,on", help="the --call-fit settings to run, in order")
    parser.add_argument("--split", help="only this split")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    cases = [json.loads(l) for l in open(os.path.join(HERE, "cases.jsonl"))]
    if args.split:
        cases = [c for c in cases if c["split"] == args.split]
    report = {}
    for fit in args.fit.split(","):
        results, wall = serve_run(cases, fit, args.threads)
        report[fit] = {"right": table(results), "wall_s": round(wall, 1), "results": results}
        print(json.dumps({"call_fit": fit, "wall_s": round(wall, 1), **table(results)}, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()

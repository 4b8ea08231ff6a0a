"""BFCL v4 `simple_python` through `jielong serve` with the official `openai` client:
the share of well-formed calls and AST accuracy against the possible answers.

    python3 benchmarks/bfcl/run.py [--data DIR] [--limit N] [--ids A,B] [--json out.json]
                                   [--calls constrained|validated] [--tool-choice auto|required]

Starts `target/release/jielong serve` on a free loopback port (one at a time with any
other model process). Function names are sent with `.` as `_` (OpenAI names allow no
dots); BFCL's types (`dict`, `float`, `tuple`, `any`) become JSON Schema's.
"""

import argparse
import concurrent.futures
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from served import ROOT, Served  # noqa: E402
from arguments import norm  # noqa: E402

TYPES = {"dict": "object", "float": "number", "tuple": "array", "integer": "integer",
         "string": "string", "boolean": "boolean", "array": "array", "number": "number"}


def schema(node):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "type":
                if value in TYPES:
                    out["type"] = TYPES[value]
                # `any` (and unknown types): no constraint
            elif key in ("properties",):
                out[key] = {k: schema(v) for k, v in value.items()}
            elif key in ("items", "additionalProperties"):
                out[key] = schema(value)
            elif key in ("required", "enum", "description", "default", "minimum", "maximum"):
                out[key] = value
        return out
    return node


def matches(call_name, args, truth, required):
    (name, expected), = truth.items()
    if call_name != name.replace(".", "_"):
        return False, f"called {call_name}, expected {name}"
    for param in args:
        if param not in expected:
            return False, f"unexpected argument {param}"
    for param, options in expected.items():
        if param not in args:
            if "" in options or param not in required:
                if "" in options:
                    continue
            return False, f"missing {param}"
        if norm(args[param]) not in [norm(o) for o in options if o != ""]:
            return False, f"{param}={args[param]!r} not in {options!r}"
    return True, ""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "bfcl"))
    parser.add_argument("--limit", type=int)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--calls", choices=["constrained", "validated"], default="constrained",
                        help="jielong serve --calls: a grammar once a call opens, or free decoding")
    parser.add_argument("--ids", help="only these question ids, comma-separated")
    parser.add_argument("--call-fit", choices=["fitted", "as-written"], default="fitted",
                        help="jielong serve --call-fit")
    parser.add_argument("--tool-choice", choices=["auto", "required"], default="auto",
                        help="the request's tool_choice (auto: the model may answer in text)")
    args = parser.parse_args()
    rows = [json.loads(l) for l in open(os.path.join(args.data, "simple_python.json"))]
    answers = {json.loads(l)["id"]: json.loads(l)["ground_truth"][0]
               for l in open(os.path.join(args.data, "simple_python_answers.json"))}
    if args.ids:
        wanted = set(args.ids.split(","))
        rows = [r for r in rows if r["id"] in wanted]
    rows = rows[: args.limit] if args.limit else rows
    flags = ["--parallel", "4", "--calls", args.calls, "--call-fit", args.call_fit]
    with Served.jielong(flags, args.threads) as server:
        client = server.client()

        def one(row):
            fn = row["function"][0]
            tool = {"type": "function", "function": {
                "name": fn["name"].replace(".", "_"), "description": fn["description"],
                "parameters": schema(fn["parameters"])}}
            reply = client.chat.completions.create(
                model="qwen2.5-coder-0.5b", messages=row["question"][0], tools=[tool],
                tool_choice=args.tool_choice, temperature=0, max_tokens=256)
            calls = reply.choices[0].message.tool_calls or []
            if not calls:
                return row["id"], False, False, "no call: " + (reply.choices[0].message.content or "")[:400]
            try:
                call_args = json.loads(calls[0].function.arguments)
            except ValueError:
                return row["id"], False, False, "arguments are not JSON"
            ok, why = matches(calls[0].function.name, call_args, answers[row["id"]],
                              fn["parameters"].get("required", []))
            if ok and len(calls) > 1:
                # A simple question wants one call: more is wrong.
                ok, why = False, f"{len(calls)} calls"
            return row["id"], True, ok, why

        started = time.time()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, rows))
        wall = time.time() - started
        loops = server.metric("jielong_loops_broken_total")
        declined = server.metric("jielong_calls_declined_total")
        added = server.metric("jielong_calls_added_total")
    formed = sum(r[1] for r in results)
    correct = sum(r[2] for r in results)
    report = {"calls": args.calls, "call_fit": args.call_fit, "tool_choice": args.tool_choice, "questions": len(results),
              "well_formed_calls": formed, "ast_correct": correct,
              "well_formed_share": formed / len(results), "ast_accuracy": correct / len(results),
              "wall_s": wall, "loops_broken": loops, "calls_declined": declined,
              "calls_added": added,
              "no_call": [r for r in results if not r[1]],
              "failures": [r for r in results if r[1] and not r[2]][:40],
              "results": results}
    print(json.dumps({k: v for k, v in report.items() if k not in ("failures", "results")},
                     indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()

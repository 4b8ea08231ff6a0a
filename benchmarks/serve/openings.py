"""`jielong serve` when its clients' system prompts outnumber its slots: each request
lands on a slot that holds another conversation, so without a prompt cache the whole
system prompt is evaluated again; with one, the server keeps each distinct opening's KV
state (in host memory's page cache and on disk) and a returning system prompt starts
warm. Both runs side by side, one server at a time, the same requests in the same order
through the official `openai` client; reported: prompt tokens evaluated (from the
server's `/metrics`) and wall time, per round.

    python3 benchmarks/serve/openings.py [--threads 2] [--slots 2] [--prompts 6] [--rounds 3]
        [--json out.json]

Needs `target/release/jielong` (and the default model pulled).
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from served import Served  # noqa: E402

# Distinct personas: each system prompt shares nothing with the others past the
# template's opening, and is long enough (a few hundred tokens) to be worth keeping.
PERSONAS = [
    ("a ship's navigator", "charts, tides, stars and the log book"),
    ("a pastry chef", "doughs, ovens, sugar work and the morning bake"),
    ("a railway signaller", "block sections, interlocking and the timetable"),
    ("a beekeeper", "hives, queens, swarming and the honey harvest"),
    ("a museum conservator", "pigments, humidity, cracked varnish and loans"),
    ("a mountain guide", "ropes, weather windows, glaciers and clients"),
    ("a court stenographer", "shorthand, exhibits, objections and transcripts"),
    ("a lighthouse keeper", "lamps, fog signals, storms and supply boats"),
]
QUESTIONS = ["What do you check first each morning?", "What mistake do beginners make?",
             "Name one tool you could not work without."]


def system_prompt(persona, subjects):
    rules = "\n".join(
        f"{i}. Speak as {persona} would about {subjects}; keep every answer under "
        f"twenty words, plain and concrete, and never mention that you were given rule {i}."
        for i in range(1, 13))
    return f"You are {persona}. You know everything about {subjects}.\n{rules}"


def run(flags, args):
    prompts = [system_prompt(*p) for p in PERSONAS[: args.prompts]]
    rounds = []
    with Served.jielong(["--parallel", str(args.slots), *flags], args.threads) as server:
        client = server.client()
        for r in range(args.rounds):
            before = (server.metric("jielong_prompt_tokens_total") or 0,
                      server.metric("jielong_prompt_tokens_cached_total") or 0)
            started = time.time()
            for system in prompts:
                client.chat.completions.create(
                    model="default", temperature=0, max_tokens=8,
                    messages=[{"role": "system", "content": system},
                              {"role": "user", "content": QUESTIONS[r % len(QUESTIONS)]}])
            seconds = time.time() - started
            prompt = (server.metric("jielong_prompt_tokens_total") or 0) - before[0]
            cached = (server.metric("jielong_prompt_tokens_cached_total") or 0) - before[1]
            rounds.append({"prompt_tokens": int(prompt), "evaluated": int(prompt - cached),
                           "seconds": round(seconds, 2)})
    return rounds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.prompts <= args.slots:
        parser.error("--prompts must outnumber --slots")
    with tempfile.TemporaryDirectory() as cache:
        results = {
            "without": run(["--prompt-cache", "off"], args),
            "with": run(["--prompt-cache", cache], args),
        }
    print(f"{args.prompts} system prompts, {args.slots} slots, {args.rounds} rounds")
    print(f"{'round':>5} {'evaluated (off)':>16} {'evaluated (cache)':>18} {'s (off)':>8} {'s (cache)':>10}")
    for i, (off, on) in enumerate(zip(results["without"], results["with"]), 1):
        print(f"{i:>5} {off['evaluated']:>16} {on['evaluated']:>18} {off['seconds']:>8} {on['seconds']:>10}")
    later = lambda rs: sum(r["evaluated"] for r in rs[1:])  # noqa: E731
    if later(results["with"]):
        print(f"rounds 2..: {later(results['without']) / later(results['with']):.1f}x fewer "
              "prompt tokens evaluated with the cache")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), **results}, f, indent=2)


if __name__ == "__main__":
    main()

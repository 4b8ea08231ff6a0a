"""`jielong serve` against llama.cpp's own `llama-server` on the same GGUF, threads and
requests, both started and sent requests one at a time (never both decoding at once; the
order alternates per round), through the official
`openai` client: single-stream decode speed and time to first token, the aggregate
speed of 8 concurrent streams (requests that share their opening instruction, and
requests that share nothing but the chat template), and the prompt tokens a 10-turn
conversation evaluates. Each speed is measured `--rounds` times and the median run is
reported, with every round's figure beside it.

    python3 benchmarks/serve/run.py [--threads 2] [--rounds 3] [--json out.json]
                                    [--baseline path/to/older/jielong]

`--baseline` adds another build of `jielong serve` (say, the last commit's) to the same
run, interleaved like the others, and reports this build's ratios to it: before and
after a change, measured side by side.

Needs `target/release/jielong` and `~/.cache/jielong/llama-server/bin/llama-server`
(`scripts/llama-server.sh`).
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time
import urllib.request

from openai import OpenAI

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from served import JIELONG, Served, free_port  # noqa: E402

LLAMA_SERVER = os.path.expanduser("~/.cache/jielong/llama-server/bin/llama-server")
ESSAY = "Write a long, detailed essay about the history of rivers and the cities built on them."
STREAMS = 8
# Distinct opening words, so no two requests share more than the template.
QUESTIONS = [
    "Explain how a refrigerator keeps food cold.",
    "Describe the rules of chess for a beginner.",
    "Why do leaves change colour in autumn?",
    "Tell a short story about a lighthouse keeper.",
    "List the planets of the solar system with one fact each.",
    "How does compound interest work? Give an example.",
    "What makes bread rise when it is baked?",
    "Compare trains and planes for travel across Europe.",
    "Give advice to someone learning to play the guitar.",
    "Summarise the causes of the French Revolution.",
    "How do vaccines train the immune system?",
    "Write a poem about the sea at night.",
    "Which habits help people sleep better?",
    "Outline a plan for a small vegetable garden.",
    "Can you explain what a black hole is?",
    "Recommend three exercises for a stronger back.",
    "Translate the idea of recursion into everyday terms.",
    "Describe a day in the life of a medieval farmer.",
    "Suggest names for a bakery and explain each.",
    "Walk me through changing a flat bicycle tyre.",
    "Detail how glaciers shape valleys over time.",
    "Note the pros and cons of working from home.",
    "Picture a city in the year 2200 and describe it.",
    "Argue for and against school uniforms.",
]
TURNS = [
    "Hi! I am planning a trip to Japan in spring. What cities should I visit?",
    "How many days would you spend in Kyoto?",
    "What food should I try there?",
    "Is the rail pass worth it for that route?",
    "Give me a packing list in five items.",
    "Summarise the plan in two sentences.",
    "What phrases in Japanese are useful?",
    "What about the weather in April?",
    "Any tip for temples?",
    "Thanks! Any last tip?",
]


def single_stream(client, model, max_tokens=128):
    started = time.time()
    first = None
    pieces = 0
    usage = None
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": ESSAY}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.time()
            pieces += 1
    end = time.time()
    tokens = usage.completion_tokens if usage else pieces
    return {
        "ttft_s": (first or end) - started,
        "decode_tokens_per_s": (tokens - 1) / max(end - (first or end), 1e-9),
        "tokens": tokens,
    }


def concurrent_streams(client, model, prompts, max_tokens=64):
    """`prompts` sent at once, one client thread each; aggregate completion tokens/s."""

    def one(prompt):
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            temperature=0,
        )
        return reply.usage.completion_tokens, reply.usage.prompt_tokens

    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        done = list(pool.map(one, prompts))
    wall = time.time() - started
    tokens = sum(t for t, _ in done)
    return {
        "streams": len(prompts),
        "tokens": tokens,
        "prompt_tokens": sum(p for _, p in done),
        "wall_s": wall,
        "aggregate_tokens_per_s": tokens / wall,
    }


def shared_prompts(round_, n=STREAMS):
    """Requests that share their opening (one instruction, as clients of one app do)."""
    return [f"{ESSAY} Part {round_ + 1}.{i + 1}." for i in range(n)]


def distinct_prompts(round_, n=STREAMS):
    """Requests that share nothing but the chat template; new ones every round."""
    return [QUESTIONS[(round_ * n + i) % len(QUESTIONS)] for i in range(n)]


def median_run(runs, key="aggregate_tokens_per_s"):
    """The run with the median `key` (every round's figure kept beside it)."""
    ranked = sorted(runs, key=lambda r: r[key])
    return dict(ranked[len(ranked) // 2], rounds=[r[key] for r in runs])


def conversation(port, model):
    """Prompt tokens evaluated over a 10-turn chat (prompt - cached, per turn)."""
    messages = []
    total_prompt = evaluated = 0
    for turn in TURNS:
        messages.append({"role": "user", "content": turn})
        body = json.dumps(
            {"model": model, "messages": messages, "max_tokens": 48, "temperature": 0}
        ).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as r:
            reply = json.load(r)
        usage = reply["usage"]
        prompt = usage["prompt_tokens"]
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        if cached is None and "timings" in reply:
            cached = reply["timings"].get("cache_n", 0)
        total_prompt += prompt
        evaluated += prompt - (cached or 0)
        messages.append({"role": "assistant", "content": reply["choices"][0]["message"]["content"]})
    return {"turns": len(TURNS), "prompt_tokens": total_prompt, "evaluated": evaluated}


class Server:
    """One server under test: its process, client and every round's figures."""

    def __init__(self, name, command, port, model):
        self.name, self.port, self.model = name, port, model
        self.command, self.served = command, None
        self.client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        self.singles, self.shared, self.distinct = [], [], []

    def start(self):
        self.served = Served(self.command, self.port)
        single_stream(self.client, self.model, 16)  # warm

    def single_round(self):
        self.singles.append(single_stream(self.client, self.model))

    def concurrent_round(self, r):
        self.shared.append(concurrent_streams(self.client, self.model, shared_prompts(r)))
        self.distinct.append(concurrent_streams(self.client, self.model, distinct_prompts(r)))

    def result(self):
        result = {
            "single": median_run(self.singles, "decode_tokens_per_s"),
            "concurrent": median_run(self.shared),
            "concurrent_distinct": median_run(self.distinct),
            "conversation": conversation(self.port, self.model),
        }
        print(self.name, json.dumps(result), file=sys.stderr)
        return result

    def stop(self):
        if self.served is not None:
            self.served.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each measurement (the median is reported)"
    )
    parser.add_argument("--baseline", help="another jielong binary to measure side by side")
    args = parser.parse_args()
    gguf = subprocess.check_output([JIELONG, "models", "path"], text=True).strip()
    t = str(args.threads)
    llama_port = free_port()
    servers = [
        Server(
            "llama-server",
            [LLAMA_SERVER, "-m", gguf, "--host", "127.0.0.1", "--port", str(llama_port),
             "-t", t, "-tb", t, "-c", "8192", "-np", "8", "--jinja", "--alias", "qwen"],
            llama_port,
            "qwen",
        ),
    ]
    port = free_port()
    servers.append(
        Server(
            "jielong serve",
            [JIELONG, "-t", t, "serve", "--port", str(port), "--parallel", "8"],
            port,
            "qwen2.5-coder-0.5b",
        )
    )
    if args.baseline:
        port = free_port()
        servers.append(
            Server(
                "jielong serve (baseline)",
                [args.baseline, "-t", t, "serve", "--port", str(port), "--parallel", "8"],
                port,
                "qwen2.5-coder-0.5b",
            )
        )
    try:
        for server in servers:
            server.start()
        # Both are up, only one is sent requests at a time; the order alternates per
        # round so a machine that speeds up or slows down favours neither. The single
        # streams go first: their prompt stays cached on its slot (the concurrent
        # rounds fill every slot with other prompts).
        def turns(r):
            k = r % len(servers)
            order = servers[k:] + servers[:k]
            return order if r % 2 == 0 else list(reversed(order))

        for r in range(args.rounds):
            for server in turns(r):
                server.single_round()
        for r in range(args.rounds):
            for server in turns(r):
                server.concurrent_round(r)
        llama, ours, *rest = (server.result() for server in servers)
        baseline = rest[0] if rest else None
    finally:
        for server in servers:
            server.stop()
    report = {
        "threads": args.threads,
        "jielong": ours,
        "llama_server": llama,
        "single_decode_ratio": ours["single"]["decode_tokens_per_s"] / llama["single"]["decode_tokens_per_s"],
        "ttft_ratio": ours["single"]["ttft_s"] / llama["single"]["ttft_s"],
        "rounds": args.rounds,
        "concurrent_ratio": ours["concurrent"]["aggregate_tokens_per_s"] / llama["concurrent"]["aggregate_tokens_per_s"],
        "concurrent_distinct_ratio": ours["concurrent_distinct"]["aggregate_tokens_per_s"]
        / llama["concurrent_distinct"]["aggregate_tokens_per_s"],
    }
    if baseline:
        report["baseline"] = baseline
        report["vs_baseline"] = {
            "single_decode": ours["single"]["decode_tokens_per_s"] / baseline["single"]["decode_tokens_per_s"],
            "ttft": ours["single"]["ttft_s"] / baseline["single"]["ttft_s"],
            "concurrent": ours["concurrent"]["aggregate_tokens_per_s"]
            / baseline["concurrent"]["aggregate_tokens_per_s"],
            "concurrent_distinct": ours["concurrent_distinct"]["aggregate_tokens_per_s"]
            / baseline["concurrent_distinct"]["aggregate_tokens_per_s"],
        }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()

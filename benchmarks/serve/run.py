"""`jielong serve` against llama.cpp's own `llama-server` on the same GGUF, threads and
requests, one server at a time (never both on the cores at once), through the official
`openai` client: single-stream decode speed and time to first token, the aggregate
speed of 8 concurrent streams, and the prompt tokens a 10-turn conversation evaluates.

    python3 benchmarks/serve/run.py [--threads 2] [--json out.json]

Needs `target/release/jielong` and `~/.cache/jielong/llama-server/bin/llama-server`
(`scripts/llama-server.sh`).
"""

import argparse
import concurrent.futures
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

from openai import OpenAI

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
JIELONG = os.path.join(ROOT, "target", "release", "jielong")
LLAMA_SERVER = os.path.expanduser("~/.cache/jielong/llama-server/bin/llama-server")
ESSAY = "Write a long, detailed essay about the history of rivers and the cities built on them."
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(port, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become healthy")


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


def concurrent_streams(client, model, n=8, max_tokens=64):
    def one(i):
        reply = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": f"{ESSAY} Part {i + 1}."}],
            max_tokens=max_tokens,
            temperature=0,
        )
        return reply.usage.completion_tokens

    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        tokens = sum(pool.map(one, range(n)))
    wall = time.time() - started
    return {"streams": n, "tokens": tokens, "wall_s": wall, "aggregate_tokens_per_s": tokens / wall}


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


def measure(name, command, port, model):
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_healthy(port, proc)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        single_stream(client, model, 16)  # warm
        result = {
            "single": single_stream(client, model),
            "concurrent": concurrent_streams(client, model),
            "conversation": conversation(port, model),
        }
        print(name, json.dumps(result), file=sys.stderr)
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()
    gguf = subprocess.check_output([JIELONG, "models", "path"], text=True).strip()
    t = str(args.threads)
    port = free_port()
    llama = measure(
        "llama-server",
        [LLAMA_SERVER, "-m", gguf, "--host", "127.0.0.1", "--port", str(port), "-t", t, "-tb", t,
         "-c", "8192", "-np", "8", "--jinja", "--alias", "qwen"],
        port,
        "qwen",
    )
    port = free_port()
    ours = measure(
        "jielong serve",
        [JIELONG, "-t", t, "serve", "--port", str(port), "--parallel", "8"],
        port,
        "qwen2.5-coder-0.5b",
    )
    report = {
        "threads": args.threads,
        "jielong": ours,
        "llama_server": llama,
        "single_decode_ratio": ours["single"]["decode_tokens_per_s"] / llama["single"]["decode_tokens_per_s"],
        "ttft_ratio": ours["single"]["ttft_s"] / llama["single"]["ttft_s"],
        "concurrent_ratio": ours["concurrent"]["aggregate_tokens_per_s"] / llama["concurrent"]["aggregate_tokens_per_s"],
    }
    print(json.dumps(report, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()

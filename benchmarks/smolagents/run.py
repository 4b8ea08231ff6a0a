#!/usr/bin/env python3
"""Runs Jielong's agent task suite through smolagents' CodeAgent on llama-server.

The baseline for Jielong's own eval: the same tasks (evals/suite/tasks.jsonl), the
same GGUF, the same corpus and search index (through `jielong index search`), the
same scoring rule, but the agent is smolagents' `CodeAgent` (the model writes Python,
smolagents runs it) talking to llama.cpp's `llama-server` over its OpenAI-compatible
API. Prints accuracy (overall and per category) and median seconds per task.

    python3 -m pip install -r benchmarks/smolagents/requirements.txt
    python3 benchmarks/smolagents/run.py --limit 5

See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))
from served import free_port  # noqa: E402
AUTHORIZED_IMPORTS = ["datetime", "math", "fractions", "decimal"]
# Passages per search and longest passage shown, as Jielong's `rag_search` does.
PASSAGES = 3
PASSAGE_CHARS = 700


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Scoring (the rule Jielong's eval uses)
# ---------------------------------------------------------------------------

# A number: an optional sign, an optional `$`, digits with commas as thousands
# separators or plain digits, optional decimals, an optional `%`. A `-` only counts as
# a sign when it does not follow a letter or digit (so `2024-05-03` is not `-3`).
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-−+]?)\$?(?P<sign2>[-−]?)"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"%?"
)


def last_number(text: str) -> Decimal | None:
    """The last number in `text` (see `_NUMBER`), or None."""
    found = None
    for m in _NUMBER.finditer(text):
        found = m
    if found is None:
        return None
    digits = found.group("num").replace(",", "")
    negative = found.group("sign") in ("-", "−") or found.group("sign2") in ("-", "−")
    try:
        value = Decimal(digits)
    except InvalidOperation:
        return None
    return -value if negative else value


def _decimals(expected: str) -> int:
    """How many decimals `expected` is written with (0 for an integer)."""
    s = expected.strip().replace(",", "").rstrip("%")
    if "." not in s:
        return 0
    return len(s.split(".", 1)[1])


def score_numeric(answer: str, expected: str) -> bool:
    got = last_number(answer)
    want = last_number(expected)
    if got is None or want is None:
        return False
    if abs(got - want) <= Decimal("1e-6") * max(Decimal(1), abs(want)):
        return True
    # Rounded to the expected value's decimals (when it has some), half up.
    k = _decimals(expected)
    if k > 0:
        quantum = Decimal(1).scaleb(-k)
        return got.quantize(quantum, rounding=ROUND_HALF_UP) == want.quantize(quantum)
    return False


def _collapse(text: str) -> str:
    return " ".join(text.split()).casefold()


def score(metric: str, answer: str, expected: str) -> bool:
    """Whether `answer` is right for `expected` under `metric`."""
    if metric == "numeric":
        return score_numeric(answer, expected)
    if metric == "contains":
        return _collapse(expected) in _collapse(answer)
    if metric == "exact":
        return answer.strip().casefold() == expected.strip().casefold()
    raise ValueError(f"unknown metric {metric!r}")


def answer_text(output: Any) -> str:
    """The agent's final answer as text (floats without scientific notation)."""
    if output is None:
        return ""
    if isinstance(output, bool):
        return str(output)
    if isinstance(output, float):
        if math.isfinite(output) and "e" in repr(output).lower():
            return format(Decimal(repr(output)), "f")
        return repr(output)
    return str(output)


# ---------------------------------------------------------------------------
# llama-server
# ---------------------------------------------------------------------------


def http_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read() or b"null")
        except ValueError:
            body = None
        return e.code, body


def _server_preexec() -> None:
    """In the server's child process: a new session, and SIGTERM when the parent dies."""
    os.setsid()
    with contextlib.suppress(Exception):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class LlamaServer:
    """`llama-server` on 127.0.0.1, stopped by `stop()` (or leaving the `with`)."""

    def __init__(self, binary: str, gguf: str, port: int, threads: int, ctx: int, log_path: Path):
        self.binary = binary
        self.gguf = gguf
        self.port = port
        self.threads = threads
        self.ctx = ctx
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.base = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 600.0) -> None:
        cmd = [
            self.binary,
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "-m", self.gguf,
            "--jinja",
            "-t", str(self.threads),
            "-c", str(self.ctx),
            "-np", "1",  # one task at a time, the whole context for it
        ]
        log("starting:", " ".join(cmd))
        self._log = open(self.log_path, "wb")
        # Its own process group: Ctrl-C reaches this script, which then stops it; and
        # it gets SIGTERM if this script dies without stopping it (killed with -9).
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=_server_preexec,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"llama-server exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                status, body = http_json(self.base + "/health", timeout=2)
                if status == 200 and (not isinstance(body, dict) or body.get("status") in (None, "ok")):
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama-server not healthy after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def model_id(self) -> str:
        _, body = http_json(self.base + "/v1/models")
        try:
            return body["data"][0]["id"]
        except (KeyError, IndexError, TypeError):
            return Path(self.gguf).name

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None
        self._log.close()

    def __enter__(self) -> "LlamaServer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---------------------------------------------------------------------------
# rag_search over Jielong's index
# ---------------------------------------------------------------------------


def cut(text: str, limit: int) -> str:
    """`text` cut to `limit` characters at a word boundary, with an ellipsis."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    if any(c.isspace() for c in head):
        head = re.split(r"\s(?=\S*$)", head, maxsplit=1)[0]
    return head + " …"


def make_rag_tool(jielong: str, index_dir: str):
    """A smolagents Tool `rag_search` that runs `jielong index search … --json`."""
    from smolagents import Tool

    class RagSearchTool(Tool):
        name = "rag_search"
        description = (
            "Search the local documents. Returns numbered passages; cite them as [n]."
        )
        inputs = {
            "query": {"type": "string", "description": "What to look for: key words of the question."}
        }
        output_type = "string"

        def __init__(self) -> None:
            super().__init__()
            # Like Jielong's tool: a passage keeps its number for the whole run.
            self.numbers: dict[tuple[str, int], int] = {}

        def forward(self, query: str) -> str:
            query = (query or "").strip()
            if not query:
                raise ValueError("the query is empty")
            proc = subprocess.run(
                [jielong, "index", "search", query, "--index", index_dir, "-k", str(PASSAGES), "--json"],
                capture_output=True, text=True, timeout=60,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"search failed: {proc.stderr.strip()[-500:]}")
            hits = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
            if not hits:
                return f'No passage matches "{query}".'
            out = []
            for hit in hits:
                key = (hit["source"], int(hit["byte_start"]))
                number = self.numbers.setdefault(key, len(self.numbers) + 1)
                out.append(
                    f"[{number}] {hit['title']} ({hit['source']}:{hit['line_start']}-{hit['line_end']})\n"
                    f"{cut(hit['text'].strip(), PASSAGE_CHARS)}"
                )
            return "\n\n".join(out)

    return RagSearchTool()


def build_index(jielong: str, corpus: Path, index_dir: str) -> None:
    log(f"indexing {corpus} into {index_dir}")
    proc = subprocess.run(
        [jielong, "index", "add", str(corpus), "--index", index_dir],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"jielong index add failed:\n{proc.stderr}")
    last = [l for l in proc.stderr.splitlines() if l.strip()]
    if last:
        log("  " + last[-1].strip())


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def load_tasks(path: Path, ids: list[str] | None, limit: int | None) -> list[dict]:
    tasks = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            task = json.loads(line)
            for field in ("id", "category", "question", "answer", "metric", "tools"):
                if field not in task:
                    raise ValueError(f"{path}:{n}: no {field!r}")
            tasks.append(task)
    if ids:
        by_id = {t["id"]: t for t in tasks}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise ValueError(f"unknown task ids: {', '.join(unknown)}")
        tasks = [by_id[i] for i in ids]
    if limit is not None:
        tasks = tasks[:limit]
    return tasks


def parse_ids(value: str | None) -> list[str] | None:
    if not value:
        return None
    if value.startswith("@"):
        text = Path(value[1:]).read_text(encoding="utf-8")
        return [l.strip() for l in text.splitlines() if l.strip() and not l.startswith("#")]
    return [v.strip() for v in value.split(",") if v.strip()]


def resolve_gguf(args: argparse.Namespace) -> str:
    if args.model_path:
        path = Path(args.model_path)
    else:
        proc = subprocess.run(
            [args.jielong, "models", "path", args.model], capture_output=True, text=True
        )
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(
                f"`jielong models path {args.model}` failed ({proc.stderr.strip()}); "
                f"pull it (`jielong models pull {args.model}`) or pass --model-path"
            )
        path = Path(proc.stdout.strip().splitlines()[-1])
    if not path.is_file():
        raise RuntimeError(f"no GGUF at {path}")
    return str(path)


def resolve_server(args: argparse.Namespace) -> str:
    if args.server:
        return args.server
    log("building or finding llama-server (scripts/llama-server.sh)")
    proc = subprocess.run(
        [str(REPO / "scripts" / "llama-server.sh")], stdout=subprocess.PIPE, text=True
    )
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError("scripts/llama-server.sh failed")
    return lines[-1].strip()


def step_trace(agent: Any) -> tuple[int, list[dict], int | None, int | None]:
    """Steps taken, a compact trace, and input/output tokens of the agent's last run."""
    from smolagents.memory import ActionStep
    from smolagents.utils import AgentMaxStepsError

    steps, trace = 0, []
    tin = tout = 0
    usage_known = True
    for step in agent.memory.steps:
        if not isinstance(step, ActionStep):
            continue
        # Not counted: the extra call smolagents makes for an answer after max_steps.
        if not isinstance(step.error, AgentMaxStepsError):
            steps += 1
        entry: dict[str, Any] = {"step": step.step_number}
        if step.code_action:
            entry["code"] = step.code_action
        if step.observations:
            entry["observation"] = step.observations[:1500]
        if step.error is not None:
            entry["error"] = str(step.error)[:500]
        trace.append(entry)
        if step.token_usage is None:
            usage_known = False
        else:
            tin += step.token_usage.input_tokens
            tout += step.token_usage.output_tokens
    return steps, trace, (tin if usage_known else None), (tout if usage_known else None)


def run_task(task: dict, model: Any, args: argparse.Namespace, index_dir: str | None) -> dict:
    from smolagents import CodeAgent
    from smolagents.monitoring import AgentLogger, LogLevel
    from rich.console import Console

    tools = []
    if "rag_search" in task["tools"]:
        tools.append(make_rag_tool(args.jielong, index_dir))
    logger = AgentLogger(
        level=LogLevel.INFO if args.verbose else LogLevel.OFF,
        console=Console(file=sys.stderr, highlight=False),
    )
    # A new agent per task: its own tools (as Jielong's eval gives them) and memory.
    agent = CodeAgent(
        tools=tools,
        model=model,
        max_steps=args.max_steps,
        additional_authorized_imports=AUTHORIZED_IMPORTS,
        logger=logger,
    )
    started = time.monotonic()
    record: dict[str, Any] = {"id": task["id"], "category": task["category"]}
    output, error, state = None, None, "success"
    try:
        result = agent.run(task["question"], return_full_result=True)
        output = result.output
        if result.state == "max_steps_error":
            state = "max_steps"
    except KeyboardInterrupt:
        raise
    except Exception as e:  # the agent failed: record it, go on with the next task
        error = f"{type(e).__name__}: {e}"[:1000]
        state = "error"
    seconds = time.monotonic() - started
    answer = answer_text(output)
    steps, trace, tin, tout = step_trace(agent)
    record.update(
        correct=bool(error is None and score(task["metric"], answer, task["answer"])),
        answer=answer,
        expected=task["answer"],
        metric=task["metric"],
        seconds=round(seconds, 3),
        steps=steps,
        state=state,
        error=error,
        input_tokens=tin,
        output_tokens=tout,
        trace=trace,
    )
    return record


def summarize(records: list[dict], total_seconds: float, meta: dict) -> dict:
    def block(rs: list[dict]) -> dict:
        n = len(rs)
        correct = sum(r["correct"] for r in rs)
        return {
            "tasks": n,
            "correct": correct,
            "accuracy": round(correct / n, 4) if n else None,
            "median_seconds": round(statistics.median(r["seconds"] for r in rs), 3) if n else None,
            "errors": sum(r["error"] is not None for r in rs),
            "max_steps_reached": sum(r["state"] == "max_steps" for r in rs),
        }

    categories: dict[str, list[dict]] = {}
    for r in records:
        categories.setdefault(r["category"], []).append(r)
    overall = block(records)
    return {
        **meta,
        **overall,
        "total_seconds": round(total_seconds, 1),
        "categories": {c: block(rs) for c, rs in categories.items()},
    }


def print_table(summary: dict) -> None:
    rows = [(c, b) for c, b in summary["categories"].items()] + [("overall", summary)]
    print(f"{'category':<16} {'tasks':>5} {'correct':>7} {'accuracy':>8} {'median s':>9} {'errors':>6}")
    for name, b in rows:
        if name == "overall":
            print("-" * 56)
        acc = f"{100 * b['accuracy']:.1f}%" if b["accuracy"] is not None else "-"
        med = f"{b['median_seconds']:.1f}" if b["median_seconds"] is not None else "-"
        print(f"{name:<16} {b['tasks']:>5} {b['correct']:>7} {acc:>8} {med:>9} {b['errors']:>6}")
    print(f"total time {summary['total_seconds']:.0f} s")


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=str(REPO / "evals/suite/tasks.jsonl"), help="the task suite (JSON lines)")
    p.add_argument("--corpus", default=None, help="folder to index for rag_search (default: corpus/ beside --tasks)")
    p.add_argument("--model", default="qwen2.5-coder-0.5b", help="catalog model whose GGUF `jielong models path` gives")
    p.add_argument("--model-path", default=None, help="the GGUF file (default: from `jielong models path MODEL`)")
    p.add_argument("--jielong", default=str(REPO / "target/release/jielong"), help="the jielong binary")
    p.add_argument("--server", default=None, help="llama-server binary (default: built or found by scripts/llama-server.sh)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx-size", type=int, default=8192)
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--max-steps", type=int, default=6)
    p.add_argument("--max-tokens", type=int, default=512, help="most tokens per model call (Jielong's max_tokens_per_step)")
    p.add_argument("--limit", type=int, default=None, help="run only the first N tasks")
    p.add_argument("--ids", default=None, help="task ids to run: a,b,c or @FILE (one per line, e.g. @evals/suite/smoke.txt)")
    p.add_argument("--out", default=None, help="per-task results (JSON lines)")
    p.add_argument("--resume", action="store_true", help="keep the results already in --out and run only the tasks not there")
    p.add_argument("--summary", default=None, help="write the summary as JSON here")
    p.add_argument("--server-log", default=None, help="llama-server's output (default: a temp file)")
    p.add_argument("--verbose", action="store_true", help="show the agent's steps on stderr")
    args = p.parse_args()

    # SIGTERM unwinds like Ctrl-C, so the server is stopped either way.
    signal.signal(signal.SIGTERM, _terminated)

    tasks_path = Path(args.tasks)
    tasks = load_tasks(tasks_path, parse_ids(args.ids), args.limit)
    if not tasks:
        log("no tasks")
        return 2
    done: list[dict] = []
    if args.resume:
        if not args.out:
            log("--resume needs --out")
            return 2
        if Path(args.out).is_file():
            wanted = {t["id"] for t in tasks}
            with open(args.out, encoding="utf-8") as f:
                done = [r for r in (json.loads(l) for l in f if l.strip()) if r["id"] in wanted]
            seen = {r["id"] for r in done}
            tasks = [t for t in tasks if t["id"] not in seen]
            log(f"resuming: {len(done)} tasks already in {args.out}, {len(tasks)} to run")
    if not tasks:
        log("nothing left to run")
        summary = summarize(done, sum(r["seconds"] for r in done), {"resumed": True})
        print_table(summary)
        if args.summary:
            Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return 0
    needs_rag = any("rag_search" in t["tools"] for t in tasks)
    if needs_rag and not Path(args.jielong).is_file():
        log(f"{args.jielong} not found: build Jielong (scripts/bootstrap.sh) or pass --jielong")
        return 2
    gguf = resolve_gguf(args)
    server_bin = resolve_server(args)
    port = args.port or free_port()

    from smolagents import OpenAIServerModel
    import smolagents

    tmp = Path(tempfile.mkdtemp(prefix="jielong-smolagents-"))
    if args.resume and done:
        # Rewrite the file with only the kept records (a half-written last line goes).
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in done)
    out_file = open(args.out, "a" if args.resume else "w", encoding="utf-8") if args.out else None
    records: list[dict] = list(done)
    started = time.monotonic()
    interrupted = False
    meta: dict[str, Any] = {}
    try:
        index_dir = None
        if needs_rag:
            corpus = Path(args.corpus) if args.corpus else tasks_path.parent / "corpus"
            index_dir = str(tmp / "index")
            build_index(args.jielong, corpus, index_dir)
        server_log = Path(args.server_log) if args.server_log else tmp / "llama-server.log"
        with LlamaServer(server_bin, gguf, port, args.threads, args.ctx_size, server_log) as server:
            model_id = server.model_id()
            version = subprocess.run([server_bin, "--version"], capture_output=True, text=True)
            meta = {
                "framework": f"smolagents {smolagents.__version__}",
                "agent": "CodeAgent",
                "model_id": model_id,
                "gguf": gguf,
                "server": "llama-server " + ((version.stdout + version.stderr).strip().splitlines() or [""])[0],
                "threads": args.threads,
                "ctx_size": args.ctx_size,
                "max_steps": args.max_steps,
                "max_tokens": args.max_tokens,
                "tasks_file": str(tasks_path),
            }
            model = OpenAIServerModel(
                model_id=model_id,
                api_base=f"{server.base}/v1",
                api_key="none",
                temperature=0,
                max_tokens=args.max_tokens,
                client_kwargs={"timeout": 600, "max_retries": 0},
            )
            log(f"{len(tasks)} tasks, model {model_id}, server {server.base}")
            for i, task in enumerate(tasks, 1):
                r = run_task(task, model, args, index_dir)
                records.append(r)
                if out_file:
                    out_file.write(json.dumps(r, ensure_ascii=False) + "\n")
                    out_file.flush()
                mark = "ok " if r["correct"] else "BAD"
                extra = f"  [{r['state']}{': ' + r['error'] if r['error'] else ''}]" if r["state"] != "success" else ""
                log(
                    f"[{i}/{len(tasks)}] {mark} {r['id']:<12} {r['seconds']:6.1f} s  {r['steps']} steps  "
                    f"answer={r['answer'][:80]!r} expected={task['answer']!r}{extra}"
                )
    except KeyboardInterrupt:
        interrupted = True
        log(f"interrupted after {len(records)} tasks")
    finally:
        if out_file:
            out_file.close()
        shutil.rmtree(tmp, ignore_errors=True)

    if not records:
        return 130 if interrupted else 1
    # A resumed run's total counts the earlier tasks by their own seconds.
    total = time.monotonic() - started + sum(r["seconds"] for r in done)
    summary = summarize(records, total, meta)
    if done:
        summary["resumed_tasks"] = len(done)
    if interrupted:
        summary["interrupted"] = True
    print_table(summary)
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())

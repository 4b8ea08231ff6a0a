#!/usr/bin/env bash
# The task suite with three ways of answering, side by side (issue 29): `written` (the
# plain model's answer; it reads the passages `rag_search` fetches for the task), the
# old default `direct` (the tools), and `jielong run`'s default
# (route(adaptive(written, direct, n=3), written)). One model process at a time; each
# run resumes from its cache, so an interrupted comparison picks up where it stopped.
#
#   evals/suite/compare.sh [OUT_DIR]      (default eval-out/suite)
#
# Prints each run's summary line and `jielong eval compare` of the default against the
# other two.
set -euo pipefail
cd "$(dirname "$0")/../.."
jielong=target/release/jielong
out=${1:-eval-out/suite}
default=$(grep -o 'DEFAULT_RUN_STRATEGY: &str = "[^"]*"' src/cli.rs | sed 's/.*= "//; s/"$//')
for system in written direct default; do
  strategy=$system
  [ "$system" = default ] && strategy=$default
  echo "== $system ($strategy)"
  "$jielong" eval evals/suite/tasks.jsonl --sources evals/suite/corpus \
    --strategy "$strategy" --out "$out.$system" --resume
done
for other in written direct; do
  echo "== default against $other"
  "$jielong" eval compare "$out.$other" "$out.default"
done

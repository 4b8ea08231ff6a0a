#!/usr/bin/env bash
# Composition shown on the default model (issue 29): five samples of `plan`, `reflect`
# around the mixed vote, and best-of-N with a checker — each from the command line and
# from YAML (examples/workflows/strategies.yaml), on one question. Prints each answer,
# its time and its steps (-v), one model process at a time.
#
#   evals/compose/run.sh [QUESTION]
set -euo pipefail
cd "$(dirname "$0")/../.."
jielong=target/release/jielong
question=${1:-"A shop sells pens at 3 for \$2. How much do 12 pens cost?"}
for strategy in "vote(plan, n=5)" "reflect(mixed)" "sample(direct, written, n=4, pick=check)"; do
  echo "== jielong run --strategy \"$strategy\""
  SECONDS=0
  "$jielong" -v run "$question" --tools python --strategy "$strategy" 2>/tmp/compose.err || echo "(exit $?)"
  grep -E "steps,|unverified|tally|votes" /tmp/compose.err | tail -3 || true
  echo "   ${SECONDS} s"
done
echo "== jielong workflow run examples/workflows/strategies.yaml"
SECONDS=0
"$jielong" workflow run examples/workflows/strategies.yaml --input question="$question"
echo "   ${SECONDS} s"

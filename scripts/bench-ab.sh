#!/usr/bin/env bash
# Compare two revisions with the pipeline bench in alternating runs (single runs vary by ±30 %
# on a 2-core machine): ./scripts/bench-ab.sh BEFORE [AFTER=HEAD] [ROUNDS=2] [EVENTS=10000]
# SECTION=latency compares the latency section instead (P50/P99 per rate and sink, and the
# rate each sink drained at; EVENTS is then unused).
# Each side runs from a worktree of its revision (this checkout's .venv, the running local
# stack); reports land in /tmp/bench-ab/<side>-<round>/ (benchmarks.md, .json, py-spy profiles).
# BENCH_CODE=current measures both sides with this checkout's bench/ (a measurement added
# since BEFORE, e.g. the latency section's CPU per process, then exists on both sides).
# ENV_BEFORE / ENV_AFTER: settings for one side's run (and its worker), e.g. the same revision
# with two values: ENV_BEFORE='COSMIC_BATCH_MAX_WAIT_MS=20' ENV_AFTER='COSMIC_BATCH_MAX_WAIT_MS=50'
# ./scripts/bench-ab.sh HEAD HEAD 3.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: scripts/bench-ab.sh BEFORE [AFTER] [ROUNDS] [EVENTS]}
after=${2:-HEAD}
rounds=${3:-2}
events=${4:-10000}
section=${SECTION:-pipeline}
ENV_BEFORE=${ENV_BEFORE:-}
ENV_AFTER=${ENV_AFTER:-}
case $section in pipeline|latency) ;; *) echo "SECTION must be pipeline or latency" >&2; exit 2;; esac
out=/tmp/bench-ab
python=$PWD/.venv/bin/python
mkdir -p "$out"
for side in before after; do
  rev=$before; [ "$side" = after ] && rev=$after
  tree=$out/tree-$side
  [ -d "$tree" ] && git worktree remove --force "$tree"
  git worktree add -q --detach "$tree" "$rev"
  if [ "${BENCH_CODE:-}" = current ]; then rm -rf "$tree/bench"; cp -r bench "$tree/bench"; fi
done
for round in $(seq 1 "$rounds"); do
  for side in before after; do
    report=$out/$side-$round
    rm -rf "$report"; mkdir -p "$report"
    side_env=$ENV_BEFORE; [ "$side" = after ] && side_env=$ENV_AFTER
    (cd "$out/tree-$side" && env $side_env COSMIC_BENCH_PROFILE_DIR=$report/profiles \
       "$python" -m bench --only "$section" --events "$events" --output-dir "$report" > "$report/log" 2>&1)
    "$python" - "$report/benchmarks.json" "$side $round" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
if "latency" in data["sections"]:
    cells = [sys.argv[2]]
    for run in data["sections"]["latency"]["runs"]:
        for sink in ("table", "queue"):
            fig = run["sinks"][sink]
            cells.append(f"{run['rate']}/s {sink}: P50 {fig['p50']:,.1f} ms, P99 {fig['p99']:,.1f} ms, "
                         f"drained {fig['drained_eps']:,.0f}/s")
        worker = (run.get("cpu") or {}).get("worker")
        if worker:
            cells.append(f"{run['rate']}/s worker CPU {worker['cores']:.2f} cores, {worker['us_per_event']:,.0f} µs/event")
    print(" | ".join(cells))
    sys.exit(0)
section = data["sections"]["pipeline"]
counted, events = section["params"]["counted"], section["params"]["events"]
cells = [sys.argv[2], f"Faust floor {section['figures']['faust_floor']['value']:,.0f}/s"]
for path in ("bridge_off", "bridge_on"):
    run = counted[path]
    cells.append(f"{path}: whole {events / run['all_agents_done_s']:,.0f}/s, lifecycle agent {run['rate']:,.0f}/s, "
                 f"{run['changelog_writes_per_event']:.2f} changelog records/event")
print(" | ".join(cells))
PY
  done
done
for side in before after; do git worktree remove --force "$out/tree-$side"; done

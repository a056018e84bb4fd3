#!/usr/bin/env bash
# Times this engine and its peers (PyTorch CPU, burn on wgpu) on the workloads of
# ../shared/bench/WORKLOADS.md in one go on the same machine (ours and PyTorch alternating
# workload by workload, burn after them in the first rounds), and
# prints each engine's medians and our ratios to them. Peers are set up by
# ../shared/peers/setup.sh [--with-burn] (in $PEERS_WORK, default ~/.cache/proxyless-peers);
# a peer that is not set up is skipped.
#
# Usage: bash benches/compare_peers.sh [ROUNDS] [OUT.jsonl]   (defaults: 2, runs/peers.jsonl)
# BURN_ROUNDS (default 1) limits burn to the first rounds, BURN_STEP_REPS (default 3) its
# timed steps: its `step` takes minutes a run here; BURN_ONLY (default all five) picks burn's
# workloads, e.g. BURN_ONLY=step.
# Run nothing else meanwhile: the machine is shared by all three.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=${PEERS_DIR:-$root/../shared/peers}
W=${PEERS_WORK:-$HOME/.cache/proxyless-peers}
rounds=${1:-2}
out=${2:-$root/runs/peers.jsonl}
burn_rounds=${BURN_ROUNDS:-1}
mkdir -p "$(dirname "$out")"
: >"$out"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp/proxyless-xdg}
mkdir -p "$XDG_RUNTIME_DIR"
(cd "$root" && cargo build --release --quiet)
ours=$root/target/release/proxyless
tag() { sed -u "s/^{/{\"round\":$1,\"peer\":\"$2\",/"; }
for r in $(seq "$rounds"); do
  # Ours and PyTorch alternate workload by workload, so the machine's drift (up to 2x within
  # minutes on shared machines) hits both alike.
  for wl in pw dw5 dw3s2 mbconv step; do
    echo "round $r: $wl" >&2
    # As many timed runs as torch_bench.py makes (20, and 10 for the step).
    reps=20; [ "$wl" = step ] && reps=10
    "$ours" bench --workload "$wl" --json --reps "$reps" 2>/dev/null | grep --line-buffered '^{' | tag "$r" proxyless >>"$out"
    if [ -x "$W/venv/bin/python" ]; then
      # torch_bench.py tags its own lines with "peer":"torch-cpu".
      "$W/venv/bin/python" "$peers/torch_bench.py" --only "$wl" 2>/dev/null | grep --line-buffered '^{' \
        | sed -u "s/^{/{\"round\":$r,/" >>"$out"
    fi
  done
  if [ -x "$W/target/release/burn-bench" ] && [ "$r" -le "$burn_rounds" ]; then
    echo "round $r: burn" >&2
    "$W/target/release/burn-bench" --only "${BURN_ONLY:-pw,dw5,dw3s2,mbconv,step}" --warmup 3 --reps 10 --step-reps "${BURN_STEP_REPS:-3}" 2>/dev/null \
      | grep --line-buffered '^{' | sed -u "s/^{/{\"round\":$r,/" >>"$out"
  fi
done
python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
# (workload, peer) -> {round: median_ms}
med = {}
for r in rows:
    if "workload" in r and "median_ms" in r:
        med.setdefault((r["workload"], r["peer"]), {})[r.get("round", 0)] = r["median_ms"]
peers = ["proxyless", "torch-cpu", "burn-wgpu"]
print("| workload | " + " | ".join(f"{p} ms (per round)" for p in peers)
      + " | torch / ours (per round) | torch / ours | burn / ours |")
print("|---|" + "---|" * (len(peers) + 3))
for wl in ("pw", "dw5", "dw3s2", "mbconv", "step"):
    cells, best = [], {}
    for p in peers:
        v = med.get((wl, p), {})
        cells.append(" / ".join(f"{v[k]:.1f}" for k in sorted(v)) or "-")
        if v:
            best[p] = statistics.median(v.values())
    def ratio(p):
        return f"{best[p] / best['proxyless']:.2f}x" if p in best and "proxyless" in best else "-"
    # Ratios within a round, where ours and PyTorch ran minutes apart at most.
    ours, torch = med.get((wl, "proxyless"), {}), med.get((wl, "torch-cpu"), {})
    per_round = " / ".join(f"{torch[k] / ours[k]:.2f}" for k in sorted(ours) if k in torch) or "-"
    print(f"| {wl} | " + " | ".join(cells)
          + f" | {per_round} | {ratio('torch-cpu')} | {ratio('burn-wgpu')} |")
PY

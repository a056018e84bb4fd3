#!/usr/bin/env bash
# The CIFAR-10 search against random search (docs/RESULTS.md), after the search itself:
#   proxyless search --data $DATA --width 0.25 --train-images 15000 --valid 2500 \
#     --warmup-epochs 2 --epochs 4 --loss add#hinge --arch-lr 0.03 --out $RUN/search
# 1. draws random nets of the same space (`proxyless sample`, seeds 1..SEEDS) at the derived
#    net's table-predicted latency;
# 2. measures them and the derived net on this adapter (batch 8) in one process, ROUNDS
#    interleaved rounds, median; seeds outside +-5% of the derived net's measured latency are
#    drawn once more at a latency corrected by their own measurement and measured again;
# 3. keeps the first KEEP seeds inside the window (seed order: chosen by latency alone);
# 4. trains the derived net and those random nets from scratch with one recipe, once per
#    training seed in TRAIN_SEEDS (default "0"), and prints their test accuracy.
# Usage: [TRAIN_SEEDS="0 1"] docs/cifar_vs_random.sh DATA RUN [KEEP] [SEEDS] [ROUNDS]
set -euo pipefail
DATA=${1:?CIFAR-10 binary directory}
RUN=${2:?the run directory holding search/}
KEEP=${3:-3}
SEEDS=${4:-12}
ROUNDS=${5:-5}
P=${PROXYLESS:-target/release/proxyless}
LUT=$RUN/search/latency.yaml
WIDTH=0.25
RECIPE=(--data "$DATA" --train-images 20000 --valid 0 --epochs 5 --batch 64 --lr 0.1)
TRAIN_SEEDS=${TRAIN_SEEDS:-0}
HERE=$(dirname "$0")

derived=$RUN/search/net.config
pred=$("$P" latency --lut "$LUT" --net "$derived" | sed -n 's/.*: predicted \([0-9.]*\) ms.*/\1/p')
echo "derived net: predicted $pred ms"
draw() {
    "$P" sample --width $WIDTH --latency "$2" --lut "$LUT" --seed "$1" \
        --out "$RUN/random/seed$1.config" > /dev/null
}
# Every net measured in one process, in interleaved rounds: a shared machine's slow spells and
# a process's own state move single measurements by 20% and more.
measure_all() {
    local args=()
    for n in "$@"; do args+=(--net "$n"); done
    "$P" latency --lut "$LUT" "${args[@]}" --measure --batch 8 --rounds "$ROUNDS" |
        sed -n 's/^\(.*\): measured on .*: \([0-9.]*\) ms at batch 8.*/\1\t\2/p'
}
mkdir -p "$RUN/random"
rm -f "$RUN/chosen.txt" "$RUN/latency.tsv"
for s in $(seq 1 "$SEEDS"); do draw "$s" "$pred"; done
for pass in 1 2; do
    nets=("$derived")
    for s in $(seq 1 "$SEEDS"); do
        if [ "$pass" = 2 ] && grep -q "/seed$s.config" "$RUN/chosen.txt"; then continue; fi
        nets+=("$RUN/random/seed$s.config")
    done
    measure_all "${nets[@]}" > "$RUN/pass.tsv"
    sed "s/^/$pass\t/" "$RUN/pass.tsv" >> "$RUN/latency.tsv"
    python3 "$HERE/choose_random.py" "$RUN" "$KEEP" "$pass"
    [ "$(grep -c '^random' "$RUN/chosen.txt")" -ge "$KEEP" ] && break
    [ "$pass" = 2 ] && break
    while IFS=$'\t' read -r net factor; do
        s=${net##*seed}
        s=${s%.config}
        draw "$s" "$(python3 -c "print(round($pred * $factor, 3))")"
    done < "$RUN/corrections.tsv"
done
cat "$RUN/chosen.txt"
for seed in $TRAIN_SEEDS; do
    suffix=""
    [ "$seed" != 0 ] && suffix="-s$seed"
    grep -E '^(derived|random)' "$RUN/chosen.txt" | while IFS=$'\t' read -r kind net ms _; do
        name=$(basename "$net" .config)
        [ "$kind" = derived ] && name=derived
        out=$RUN/train-$name$suffix
        "$P" train --net "$net" "${RECIPE[@]}" --seed "$seed" --out "$out" > "$out.out" 2>&1
        echo "$kind $name seed $seed measured $ms ms: $(grep -i 'test accuracy' "$out.out" | tail -1)"
    done
done

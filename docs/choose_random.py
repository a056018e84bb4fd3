"""Keeps random nets whose measured latency lies within +-5% of the derived net's
(docs/cifar_vs_random.sh). Reads RUN/pass.tsv (net, measured ms; the derived net first),
writes RUN/chosen.txt (kind, net, ms, ratio to the derived net's) and, for the nets left out,
RUN/corrections.tsv (net, factor to draw it at next time)."""
import sys

run, keep, pass_ = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = [line.rstrip("\n").split("\t") for line in open(f"{run}/pass.tsv")]
derived, d = rows[0][0], float(rows[0][1])
kept = []
if pass_ == "2":
    kept = [l.rstrip("\n") for l in open(f"{run}/chosen.txt") if l.startswith("random")]
with open(f"{run}/chosen.txt", "w") as out, open(f"{run}/corrections.tsv", "w") as fix:
    print(f"derived\t{derived}\t{d:.3f}\t1.000", file=out)
    for line in kept:
        print(line, file=out)
    for net, m in rows[1:]:
        m = float(m)
        if len(kept) < keep and abs(m - d) <= 0.05 * d:
            kept.append(net)
            print(f"random\t{net}\t{m:.3f}\t{m / d:.3f}", file=out)
        else:
            print(f"{net}\t{d / m:.4f}", file=fix)

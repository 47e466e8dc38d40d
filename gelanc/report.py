"""Plain-text tables for the terminal (the ``--json`` forms are the data itself)."""

from __future__ import annotations


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    def fmt(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def _millions(n) -> str:
    return f"{n / 1e6:.1f}M" if isinstance(n, (int, float)) else "-"


def _num(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def stats_table(rows: list[dict], per_block: bool = False) -> str:
    header = ["model", "imgsz", "train params", "GFLOPs", "deploy params", "GFLOPs",
              "paper params", "GFLOPs", "AP", "Δ params"]
    lines = []
    for r in rows:
        paper = r.get("paper", {})
        size = r["imgsz"] if isinstance(r["imgsz"], int) else "×".join(map(str, r["imgsz"]))
        pp = paper.get("params")
        delta = f"{100 * (r['deploy']['params'] - pp) / pp:+.1f}%" if isinstance(pp, (int, float)) and pp else "-"
        lines.append([r["model"], str(size), f"{r['train']['params']:,}", f"{r['train']['gflops']:.3f}",
                      f"{r['deploy']['params']:,}", f"{r['deploy']['gflops']:.3f}", _millions(pp),
                      _num(paper.get("gflops"), ".1f"), _num(paper.get("ap"), ".1f"), delta])
    out = [_table(header, lines, right={2, 3, 4, 5, 6, 7, 8, 9})]
    if rows:
        out.append("\ntrain: as built for training (PGI aux branch, BatchNorm, RepConvN branches); "
                   "deploy: aux removed, BN and RepConvN fused.\nGFLOPs = 2 × multiply-accumulates "
                   "(thop 0.1.1 convention, as the paper); Δ params: deploy against the paper.")
    if per_block:
        for r in rows:
            out.append(f"\n{r['model']} by block ({r['imgsz']}):")
            body = [[b["scope"], b["block"], b["branch"], f"{b['train']['params']:,}", f"{b['train']['gflops']:.3f}",
                     f"{b['deploy']['params']:,}" if b["deploy"] else "-",
                     f"{b['deploy']['gflops']:.3f}" if b["deploy"] else "-"] for b in r["blocks"]]
            out.append(_table(["scope", "block", "branch", "train params", "GFLOPs", "deploy params", "GFLOPs"],
                              body, right={3, 4, 5, 6}))
    return "\n".join(out)

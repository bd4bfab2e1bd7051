"""Render a profile for people (a console table, a PNG of latency histograms) and
machines (the JSON the CLI writes)."""

from __future__ import annotations

from pathlib import Path


def engine_table(result: dict) -> str:
    rows = [("engine", "backend", "prec", "batch", "thr", "min ms", "p50 ms", "p90 ms", "p99 ms", "max ms", "MMAC", "GMAC/s")]
    for t in result["timings"]:
        ms = t["ms"]
        rows.append((
            t["modality"], t["backend"], t["precision"], str(t["batch"]), str(t["threads"]),
            *(f"{ms[k]:.3f}" for k in ("min", "p50", "p90", "p99", "max")),
            f"{t['macs'] / 1e6:.2f}" if t.get("macs") else "-",
            f"{t['gmacs_per_s']:.2f}" if t.get("gmacs_per_s") else "-",
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i >= 3 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    rat = result.get("ratios", {})
    for name, vals in rat.items():
        if vals:
            lines.append(f"{name} (p50, same run): " + ", ".join(f"{k} {v:.2f}x" for k, v in sorted(vals.items())))
    m = result.get("machine", {})
    lines.append(f"machine: {m.get('cpu')} ({m.get('cores')} cores, {' '.join(m.get('isa', []))}), onnxruntime {m.get('onnxruntime')}")
    for n in result.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


def runtime_table(rt: dict) -> str:
    lines = [f"runtime on {'replay ' + rt['replay'] if rt.get('replay') else 'live sensors'} for {rt['duration_s']:.1f} s: "
             f"{rt['decisions']} decisions, {rt['no_decisions']} no-decision, CPU {rt['cpu_percent']:.0f}%, peak RSS {rt['peak_rss_mb']:.0f} MB"]
    for m, st in rt["stages"].items():
        lines.append(f"  {m} ({st['n']} results used):")
        for k, v in st.items():
            if isinstance(v, dict) and "p50" in v:
                lines.append(f"    {k:<26} p50 {v['p50']:8.3f} ms   p90 {v['p90']:8.3f}   p99 {v['p99']:8.3f}   max {v['max']:8.3f}")
        lines.append(f"    end-to-end / engine (p50): {st['e2e_over_engine_p50']:.2f}x")
    for m, w in rt.get("workers", {}).items():
        lines.append(f"  worker {m}: " + ", ".join(f"{k} {v}" for k, v in w.items() if not isinstance(v, (dict, list))))
    return "\n".join(lines)


def plot_profile(result: dict, path: Path) -> None:
    """Histograms of per-run latency: one panel per engine (all backends/precisions
    at batch 1, one thread), plus the runtime's stages when profiled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = sorted({t["modality"] for t in result["timings"]})
    rt = result.get("runtime")
    panels = len(engines) + (len(rt["stages"]) if rt else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(5 * max(panels, 1), 3.6), squeeze=False)
    axes = axes[0]
    for ax, m in zip(axes, engines):
        for t in result["timings"]:
            if t["modality"] == m and t["batch"] == 1 and t["threads"] == min(result["config"]["threads"]) and t.get("samples_ms"):
                ax.hist(t["samples_ms"], bins=40, alpha=0.6, label=f"{t['backend']} {t['precision']} (p50 {t['ms']['p50']:.2f})")
        ax.set_title(f"{m} engine, batch 1")
        ax.set_xlabel("ms")
        ax.legend(fontsize=7)
    if rt:
        for ax, (m, st) in zip(axes[len(engines):], rt["stages"].items()):
            raw = st.get("_raw", {})
            for k in ("engine", "end_to_end"):
                if raw.get(k):
                    ax.hist(raw[k], bins=40, alpha=0.6, label=k)
            ax.set_title(f"runtime: {m}")
            ax.set_xlabel("ms")
            ax.legend(fontsize=7)
    fig.tight_layout()
    from edge_mla.staging import replace_file

    try:  # a link at ``path`` is replaced, never written through
        replace_file(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    finally:
        plt.close(fig)

"""The export summary: one row per engine variant (and the fused result), as a
plain-text table for the terminal and markdown for report.md."""

from __future__ import annotations

from typing import Sequence


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


HEADER = ("engine", "precision", "size", "accuracy", "ms (b=1, 1 thr)", "speed-up", "chosen", "note")


def summary_rows(gate: dict, chosen: dict) -> list:
    """Rows from the gate results (see pipeline.run_gate)."""
    rows = []
    for mod, g in gate["engines"].items():
        fp32 = g["fp32"]
        for prec, v in g.items():
            if not isinstance(v, dict) or "accuracy" not in v:
                continue
            lat = v.get("latency", {}).get("median_ms")
            speed = fp32["latency"]["median_ms"] / lat if lat else None
            rows.append(
                (
                    mod, prec, human_size(v["size_bytes"]), f"{100 * v['accuracy']:.2f}%",
                    f"{lat:.3f}" if lat is not None else "-", f"{speed:.2f}x" if speed else "-",
                    "yes" if chosen.get(mod) == prec else "", "; ".join(v.get("flags", [])),
                )
            )
    for prec, acc in gate.get("fused", {}).items():
        rows.append(("fused", prec, "-", f"{100 * acc:.2f}%", "-", "-", "", ""))
    return rows


def text_table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    cols = list(zip(header, *rows)) if rows else [(h,) for h in header]
    widths = [max(len(str(c)) for c in col) for col in cols]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def markdown_table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)

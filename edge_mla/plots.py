"""Training curves as a PNG (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path


def plot_curves(history: list, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    ax = axes[0]
    for key in ("image", "audio", "fused", "fused_mean", "fused_sum"):
        ys = [r["val"].get(key) for r in history]
        if all(y is not None for y in ys):
            ax.plot(epochs, ys, marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[1]
    for key in sorted({k for r in history for k in r if k.startswith("loss")}):
        ax.plot(epochs, [r.get(key) for r in history], marker="o", label=key)
    if any("P_frobenius" in r for r in history):
        ax2 = ax.twinx()
        ax2.plot(epochs, [r.get("P_frobenius") for r in history], "k--", label="|P|_F")
        ax2.set_ylabel("|P|_F")
        ax2.legend(loc="upper center", fontsize=8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

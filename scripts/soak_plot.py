#!/usr/bin/env python3
"""Draws a soak's samples (scripts/soak.sh, docs/reliability.md#soak).

usage: soak_plot.py SAMPLES (--png FILE | --ascii) [--rss-bound-kb N] [--fd-bound N]

Two panels against time: RSS (MiB) and open fds, each with the two windows soak.sh compares
shaded (10% to 35% of the samples, and the last 25%), their medians, and the bound above the
first window's median; a third, the churn cycles and vanishing subscribers a second. The
windows are computed as soak.sh computes them. --ascii prints a text plot of RSS and fds
instead (for a machine without matplotlib).
"""
import argparse
import statistics
import sys


def read_samples(path):
    """The sample lines (t=... key=value ...), without the t=0 one, as dicts of numbers."""
    rows = []
    with open(path) as f:
        for line in f:
            if not line.startswith("t="):
                continue
            row = {}
            for field in line.split():
                key, _, value = field.partition("=")
                try:
                    row[key] = float(value)
                except ValueError:
                    pass
            if row.get("t", 0) > 0:
                rows.append(row)
    return rows


def windows(n):
    """soak.sh's windows as 0-based slices: samples 10%..35% and the last 25%."""
    return slice(n * 10 // 100, n * 35 // 100), slice(n * 75 // 100, n)


def rates(rows, key):
    """Per-second rate of a cumulative counter, at each sample after the first."""
    out = []
    for a, b in zip(rows, rows[1:]):
        dt = b["t"] - a["t"]
        out.append((b["t"], (b.get(key, 0) - a.get(key, 0)) / dt if dt > 0 else 0))
    return out


def png(rows, path, rss_bound_kb, fd_bound):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in rows]
    rss = [r["rss_kb"] / 1024 for r in rows]
    fds = [r["fds"] for r in rows]
    early, late = windows(len(rows))
    fig, (ax_rss, ax_fds, ax_rate) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    for ax, ys, bound, unit in ((ax_rss, rss, rss_bound_kb / 1024, "MiB"), (ax_fds, fds, fd_bound, "")):
        ax.plot(t, ys, linewidth=1)
        for w in (early, late):
            if w.stop > w.start:
                m = statistics.median(ys[w])
                ax.axvspan(t[w.start], t[w.stop - 1], alpha=0.12)
                ax.hlines(m, t[w.start], t[w.stop - 1], colors="tab:orange", linewidth=2)
                ax.annotate(f"median {m:.1f} {unit}".strip(), (t[w.start], m), textcoords="offset points", xytext=(2, 4))
        if early.stop > early.start:
            limit = statistics.median(ys[early]) + bound
            ax.axhline(limit, linestyle="--", linewidth=1, color="red")
            ax.annotate(f"bound: +{bound:g} {unit}".rstrip(), (t[0], limit), textcoords="offset points", xytext=(2, -12))
        ax.grid(alpha=0.3)
    ax_rss.set_ylabel("RSS (MiB)")
    ax_fds.set_ylabel("open fds")
    for key, label in (("churn", "churn cycles/s"), ("vanished", "vanishing subscribers/s")):
        series = rates(rows, key)
        if series:
            ax_rate.plot([x for x, _ in series], [y for _, y in series], linewidth=1, label=label)
    ax_rate.set_ylabel("per second")
    ax_rate.set_xlabel("seconds")
    ax_rate.legend(loc="lower right")
    ax_rate.grid(alpha=0.3)
    last = rows[-1]
    fig.suptitle(
        f"userproto-soak, {last['t']:.0f} s: {last.get('churn', 0):,.0f} churn cycles, "
        f"{last.get('pub_sent', 0):,.0f} published, {last.get('drops', 0):,.0f} dropped for slow subscribers, "
        f"{last.get('timers', 0):,.0f} timers",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def ascii_plot(rows, key, title, scale=1.0, width=72, height=12):
    ys = [r.get(key, 0) * scale for r in rows]
    if not ys:
        return
    lo, hi = min(ys), max(ys)
    span = hi - lo or 1
    # One column per bucket of consecutive samples: the bucket's maximum.
    n = len(ys)
    count = min(width, n)
    cols = [max(ys[i * n // count : max((i + 1) * n // count, i * n // count + 1)]) for i in range(count)]
    print(f"{title}: {lo:.1f} .. {hi:.1f} over {rows[-1]['t']:.0f} s")
    for row in range(height, -1, -1):
        level = lo + span * row / height
        line = "".join("*" if c >= level else " " for c in cols)
        print(f"{level:10.1f} |{line}")
    print(" " * 11 + "+" + "-" * len(cols))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples")
    parser.add_argument("--png")
    parser.add_argument("--ascii", action="store_true")
    parser.add_argument("--rss-bound-kb", type=float, default=16 * 1024)
    parser.add_argument("--fd-bound", type=float, default=8)
    args = parser.parse_args()
    rows = read_samples(args.samples)
    if not rows:
        sys.exit(f"soak_plot.py: no samples in {args.samples}")
    if args.ascii:
        ascii_plot(rows, "rss_kb", "RSS (MiB)", scale=1 / 1024)
        ascii_plot(rows, "fds", "open fds")
    elif args.png:
        png(rows, args.png, args.rss_bound_kb, args.fd_bound)
    else:
        parser.error("give --png FILE or --ascii")


if __name__ == "__main__":
    main()

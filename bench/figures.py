"""How the benchmarks print latency figures: one percentile rule for all of them."""

from __future__ import annotations


def percentile(ordered: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``ordered``, which is sorted; nan when empty."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def latency_line(label: str, ms: list[float], *, unit: str, target_p99_ms: float | None) -> str:
    """``label: N unit, p50 .. ms, p99 .. ms, max .. ms`` and the verdict against the target."""
    ordered = sorted(ms)
    p99 = percentile(ordered, 99)
    line = (
        f"{label}: {len(ordered):,} {unit}, p50 {percentile(ordered, 50):.3f} ms, "
        f"p99 {p99:.3f} ms, max {ordered[-1] if ordered else float('nan'):.3f} ms"
    )
    if target_p99_ms is None:
        return line
    verdict = "ok" if p99 <= target_p99_ms else "OVER TARGET"
    return f"{line} (target p99 <= {target_p99_ms} ms: {verdict})"

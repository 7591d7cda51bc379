"""Is a method different from a reference? Welch's t interval over seeds.

For samples a (n_a seeds of one method) and b (n_b seeds of the reference),
with sample means ā, b̄ and sample variances s²_a, s²_b (n - 1 in the
denominator)::

    d   = ā - b̄
    se  = sqrt(s²_a / n_a + s²_b / n_b)
    ν   = se⁴ / ((s²_a/n_a)² / (n_a - 1) + (s²_b/n_b)² / (n_b - 1))   (Welch-Satterthwaite)
    CI  = d ± t_{1-α/2, ν} · se          (95 %: α = 0.05)

Welch's interval does not assume equal variances. It needs n ≥ 2 on both sides;
with fewer seeds no interval is reported. When both samples have zero variance
(identical seeds), se = 0 and the interval is the point d. An interval that
covers 0 means *no difference detected* at that confidence (not "equal": with 2-5
seeds only large differences can be detected).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

NO_DIFFERENCE = "no difference detected"

#: (summary key, column title, digits, higher is better)
SIGNIFICANCE_KEYS = (
    ("final_test_acc", "final test acc (%)", 2, True),
    ("final_train_loss", "final train loss", 4, False),
)


@dataclass(frozen=True)
class Interval:
    """Difference of means ``diff`` = mean(a) - mean(b) and its confidence interval."""

    diff: float
    low: float
    high: float
    df: float
    n_a: int
    n_b: int
    confidence: float

    @property
    def covers_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def verdict(self, higher_is_better: bool = True) -> str:
        """"no difference detected", or "better" / "worse" than the reference."""
        if self.covers_zero:
            return NO_DIFFERENCE
        return "better" if (self.diff > 0) == higher_is_better else "worse"


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    return mean, sum((v - mean) ** 2 for v in values) / (n - 1)


def welch_interval(a: Sequence[float], b: Sequence[float],
                   confidence: float = 0.95) -> Interval | None:
    """Welch's ``confidence`` interval for mean(a) - mean(b); None if either has < 2 values."""
    if not 0 < confidence < 1:
        raise ValueError(f"invalid confidence {confidence!r}; must be in (0, 1)")
    a, b = [float(v) for v in a], [float(v) for v in b]
    if len(a) < 2 or len(b) < 2:
        return None
    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    qa, qb = va / len(a), vb / len(b)
    diff = ma - mb
    se = math.sqrt(qa + qb)
    if se == 0.0:
        return Interval(diff, diff, diff, math.inf, len(a), len(b), confidence)
    df = (qa + qb) ** 2 / (qa ** 2 / (len(a) - 1) + qb ** 2 / (len(b) - 1))
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, df)) * se
    return Interval(diff, diff - half, diff + half, df, len(a), len(b), confidence)


def significance_rows(groups: dict[str, list[dict[str, Any]]],
                      pairs: Iterable[tuple[str, str]], keys=SIGNIFICANCE_KEYS,
                      confidence: float = 0.95) -> list[dict[str, Any]]:
    """For each (label, reference label): the interval of every key over the groups' runs."""
    rows = []
    for label, ref in pairs:
        row: dict[str, Any] = {"label": label, "reference": ref}
        for key, _, _, higher in keys:
            a = [float(r[key]) for r in groups[label] if r.get(key) is not None]
            b = [float(r[key]) for r in groups[ref] if r.get(key) is not None]
            iv = welch_interval(a, b, confidence)
            row[key] = None if iv is None else {
                "diff": iv.diff, "low": iv.low, "high": iv.high, "df": iv.df,
                "n": [iv.n_a, iv.n_b], "verdict": iv.verdict(higher)}
        rows.append(row)
    return rows


def significance_markdown(rows: list[dict[str, Any]], keys=SIGNIFICANCE_KEYS,
                          confidence: float = 0.95) -> str:
    """Markdown table: difference to the reference, [low, high], verdict, per key."""
    if not rows:
        return ""
    pct = f"{100 * confidence:g} %"
    header = ["method", "reference"] + [f"Δ {title} [{pct} CI]" for _, title, _, _ in keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["label"], row["reference"]]
        for key, _, digits, _ in keys:
            iv = row.get(key)
            cells.append("n/a (needs ≥ 2 seeds each)" if iv is None else
                         f"{iv['diff']:+.{digits}f} [{iv['low']:+.{digits}f}, "
                         f"{iv['high']:+.{digits}f}] {iv['verdict']}")
        lines.append("| " + " | ".join(cells) + " |")
    return (f"Difference to the reference, mean over seeds (Welch's t, {pct}); "
            f"\"{NO_DIFFERENCE}\" where the interval covers 0.\n\n" + "\n".join(lines) + "\n")


def reference_labels(meta: dict[str, tuple[str, str]], reference: str) -> set[str]:
    """The labels of ``meta`` (``meta[label] = (method, context)``) that are the reference.

    Those whose method spec (the label up to its first ``[``, e.g.
    ``fsg:fast_form=product`` of ``fsg:fast_form=product[adam]``) is exactly
    ``reference``; when no label has that spec, every label of the method named
    ``reference``.
    """
    refs = {label for label in meta if label.split("[", 1)[0] == reference}
    return refs or {label for label, (method, _) in meta.items() if method == reference}


def check_reference(meta: dict[str, tuple[str, str]], reference: str) -> None:
    """ValueError naming the valid specs when ``reference`` matches no label of ``meta``."""
    if not reference_labels(meta, reference):
        specs = sorted({label.split("[", 1)[0] for label in meta} | {m for m, _ in meta.values()})
        raise ValueError(f"--reference {reference!r} matches no compared method; "
                         f"valid: {', '.join(specs)}, none")


def reference_pairs(meta: dict[str, tuple[str, str]], reference: str) -> list[tuple[str, str]]:
    """``meta[label] = (method, context)``: pair each non-reference label with every
    reference label (:func:`reference_labels`) of the same context (optimizer, settings)."""
    refs = reference_labels(meta, reference)
    pairs = []
    for label, (_, context) in meta.items():
        if label in refs:
            continue
        pairs += [(label, ref) for ref in meta if ref in refs and meta[ref][1] == context]
    return pairs

"""Results of a run: rows (one system doing one operation), ratios and targets; the table and the JSON.

A workload fills a :class:`WorkloadResult`; the runner prints every result
with :func:`render` and writes all of them with :func:`write_json`. The JSON
holds exactly the figures the table shows (seconds and bytes, unrounded).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .timing import Samples


@dataclass
class Row:
    """One system doing one operation: timing samples, or a single measured value."""

    system: str
    op: str
    samples: Samples | None = None
    value: float | None = None
    unit: str = "s"  # "s" for durations, "B" for bytes, "/s" for rates, "" for counts
    note: str = ""
    available: bool = True

    def stat(self, which: str = "median") -> float | None:
        if not self.available:
            return None
        if self.samples is not None:
            return self.samples.as_dict()[which] if len(self.samples) else None
        return self.value

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"system": self.system, "op": self.op, "unit": self.unit, "available": self.available}
        if self.samples is not None and self.available:
            out.update(self.samples.as_dict())
        if self.value is not None:
            out["value"] = self.value
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class Ratio:
    """statekit's figure over a comparator's, both from this run."""

    label: str
    numerator: tuple[str, str]
    denominator: tuple[str, str]
    stat: str
    value: float | None

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "numerator": list(self.numerator), "denominator": list(self.denominator),
                "stat": self.stat, "value": self.value}


@dataclass
class Target:
    """A target from the issue: the measured figure, the limit, and whether it is met."""

    text: str
    measured: float | None
    limit: float
    cmp: str = "<="  # "<=", "<" or "=="
    unit: str = "x"

    @property
    def met(self) -> bool | None:
        if self.measured is None or (isinstance(self.measured, float) and math.isnan(self.measured)):
            return None
        if self.cmp == "<=":
            return self.measured <= self.limit
        if self.cmp == "<":
            return self.measured < self.limit
        return self.measured == self.limit

    def as_json(self) -> dict[str, Any]:
        return {"text": self.text, "measured": self.measured, "limit": self.limit, "cmp": self.cmp,
                "unit": self.unit, "met": self.met}


@dataclass
class WorkloadResult:
    key: str
    title: str
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    def add(self, system: str, op: str, samples: Samples | None = None, *, value: float | None = None,
            unit: str = "s", note: str = "") -> Row:
        row = Row(system, op, samples, value, unit, note)
        self.rows.append(row)
        return row

    def unavailable(self, system: str, op: str, why: str) -> Row:
        row = Row(system, op, None, None, "s", why, available=False)
        self.rows.append(row)
        return row

    def get(self, system: str, op: str) -> Row | None:
        for r in self.rows:
            if r.system == system and r.op == op:
                return r
        return None

    def figure(self, system: str, op: str, stat: str = "median") -> float | None:
        row = self.get(system, op)
        return row.stat(stat) if row is not None else None

    def ratio(self, label: str, num: tuple[str, str], den: tuple[str, str], stat: str = "median") -> float | None:
        a, b = self.figure(*num, stat=stat), self.figure(*den, stat=stat)
        value = a / b if a is not None and b not in (None, 0) else None
        self.ratios.append(Ratio(label, num, den, stat, value))
        return value

    def target(self, text: str, measured: float | None, limit: float, cmp: str = "<=", unit: str = "x") -> Target:
        t = Target(text, measured, limit, cmp, unit)
        self.targets.append(t)
        return t

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title, "params": self.params, "seconds": self.seconds, "error": self.error,
            "rows": [r.as_json() for r in self.rows], "ratios": [r.as_json() for r in self.ratios],
            "targets": [t.as_json() for t in self.targets], "notes": self.notes,
        }


# ---------------------------------------------------------------- formatting


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "s":
        a = abs(value)
        if a < 1e-3:
            return f"{value * 1e6:.1f} µs"
        if a < 1:
            return f"{value * 1e3:.2f} ms"
        return f"{value:.2f} s"
    if unit == "B":
        a = abs(value)
        for div, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if a >= div:
                return f"{value / div:.2f} {name}"
        return f"{value:.0f} B"
    if unit == "x":
        return f"{value:.3g}x"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "%":
        return f"{value:.2f}%"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:.3g}"


def _mark(met: bool | None) -> str:
    return {True: "MET ", False: "MISS", None: "n/a "}[met]


def render(result: WorkloadResult) -> str:
    lines = [f"== {result.key}. {result.title} ({result.seconds:.0f} s)"]
    scalars = {k: v for k, v in result.params.items() if not isinstance(v, dict | list)}
    if scalars:  # lists and tables of figures go to the JSON only
        lines.append("   " + ", ".join(f"{k}={v}" for k, v in scalars.items()))
    if result.error:
        lines.append(f"   ERROR: {result.error.strip().splitlines()[-1]}")
    if result.rows:
        w_sys = max(len(r.system) for r in result.rows)
        w_op = max(len(r.op) for r in result.rows)
        lines.append(f"   {'system':<{w_sys}}  {'operation':<{w_op}}  {'n':>6}  {'median':>11}  {'p99':>11}")
        for r in result.rows:
            if not r.available:
                lines.append(f"   {r.system:<{w_sys}}  {r.op:<{w_op}}  not available: {r.note}")
                continue
            if r.samples is not None:
                d = r.samples.as_dict()
                n, med, p99 = str(d["n"]), fmt(d["median"], r.unit), fmt(d["p99"], r.unit)
            else:
                n, med, p99 = "", fmt(r.value, r.unit), ""
            note = f"  ({r.note})" if r.note else ""
            lines.append(f"   {r.system:<{w_sys}}  {r.op:<{w_op}}  {n:>6}  {med:>11}  {p99:>11}{note}")
    if result.ratios:
        lines.append("   ratios (statekit / comparator, same run):")
        w = max(len(r.label) for r in result.ratios)
        for r in result.ratios:
            lines.append(f"     {r.label:<{w}}  {fmt(r.value, 'x'):>9}  ({r.stat})")
    if result.targets:
        lines.append("   targets:")
        w = max(len(t.text) for t in result.targets)
        for t in result.targets:
            lines.append(f"     [{_mark(t.met)}] {t.text:<{w}}  measured {fmt(t.measured, t.unit)}, "
                         f"limit {t.cmp} {fmt(t.limit, t.unit)}")
    for n in result.notes:
        lines.append(f"   note: {n}")
    return "\n".join(lines)


def summary(results: list[WorkloadResult]) -> str:
    met = [t for r in results for t in r.targets if t.met]
    missed = [(r.key, t) for r in results for t in r.targets if t.met is False]
    unknown = [(r.key, t) for r in results for t in r.targets if t.met is None]
    lines = [f"targets: {len(met)} met, {len(missed)} missed, {len(unknown)} not measured"]
    lines += [f"  MISS {k}: {t.text} (measured {fmt(t.measured, t.unit)})" for k, t in missed]
    lines += [f"  n/a  {k}: {t.text}" for k, t in unknown]
    errors = [r for r in results if r.error]
    lines += [f"  ERROR in workload {r.key}: {r.error.strip().splitlines()[-1]}" for r in errors]
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_json(path: Path, meta: dict[str, Any], results: list[WorkloadResult]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "workloads": {r.key: r.as_json() for r in results}}
    path.write_text(json.dumps(_clean(doc), indent=2, default=str) + "\n", encoding="utf-8")

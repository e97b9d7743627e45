"""Figures, targets and how they are printed: a table, PASS/FAIL lines, JSON and markdown."""
from __future__ import annotations

import json
import math
import operator
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Value:
    """A median with its spread over repeats (or samples), in the figure's unit."""
    median: float
    lo: float
    hi: float
    spread: str          # what lo-hi is: "IQR of 200 samples", "min-max of 5 runs", ...
    n: int

    def text(self, fmt: str) -> str:
        if self.median is None or (isinstance(self.median, float) and math.isnan(self.median)):
            return "n/a"
        if self.lo == self.hi == self.median:
            return fmt.format(self.median)
        return f"{fmt.format(self.median)} [{fmt.format(self.lo)}–{fmt.format(self.hi)}]"


@dataclass
class Figure:
    scenario: str        # "S1".."S7", "S8"
    name: str
    unit: str
    ours: Value
    baseline: Value | None = None
    baseline_name: str = ""
    fmt: str = "{:.2f}"
    ratio: float | None = None       # ours / baseline, when it means something
    ratio_name: str = "ours/baseline"
    notes: list[str] = field(default_factory=list)


@dataclass
class Target:
    scenario: str
    text: str            # "p99 <= 20 ms at N = 1,000"
    measured: float
    limit: float
    op: str              # "<=" or ">="
    unit: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        if self.measured is None or math.isnan(self.measured):
            return False
        return {"<=": operator.le, ">=": operator.ge}[self.op](self.measured, self.limit)

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        value = "n/a" if self.measured is None or math.isnan(self.measured) else _num(self.measured)
        extra = f"; {self.detail}" if self.detail else ""
        return f"{verdict}  {self.scenario} {self.text}: measured {value} {self.unit} " \
               f"(target {self.op} {_num(self.limit)} {self.unit}){extra}"


def _num(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


@dataclass
class Report:
    meta: dict
    figures: list[Figure] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def target(self, target: Target) -> Target:
        self.targets.append(target)
        return target

    # -- output ----------------------------------------------------------------
    def rows(self) -> list[list[str]]:
        rows = []
        for f in self.figures:
            base = f"{f.baseline.text(f.fmt)} ({f.baseline_name})" if f.baseline else "—"
            ratio = f"{f.ratio:.3g} {f.ratio_name}" if f.ratio is not None and not math.isnan(f.ratio) else ""
            rows.append([f.scenario, f"{f.name} [{f.unit}]", f.ours.text(f.fmt), base, ratio])
        return rows

    def table(self) -> str:
        head = ["", "figure", "ours: median [spread]", "baseline, same run", "ratio"]
        rows = self.rows()
        widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
        line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
        out = [line(head), line(["-" * w for w in widths])] + [line(r) for r in rows]
        return "\n".join(out)

    def markdown(self) -> str:
        m = self.meta
        lines = [f"Run of {m['date']} on {m['machine']}, `{m['command']}` "
                 f"({m['duration_s']:.0f} s{', quick mode' if m.get('quick') else ''}). "
                 "Spreads: " + m.get("spread_note", ""), "",
                 "| | figure | ours: median [spread] | baseline, same run | ratio |",
                 "| --- | --- | --- | --- | --- |"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self.rows()]
        lines += ["", "```"] + [t.line() for t in self.targets] + [f"SKIP  {s}" for s in self.skipped] \
            + [f"ERROR {e}" for e in self.errors] + ["```"]
        if self.notes:
            lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def text(self) -> str:
        parts = [self.table(), ""] + [t.line() for t in self.targets] + [f"SKIP  {s}" for s in self.skipped] \
            + [f"ERROR {e}" for e in self.errors]
        if self.notes:
            parts += [""] + [f"note: {n}" for n in self.notes]
        return "\n".join(parts)

    def to_json(self) -> dict:
        return {
            "meta": self.meta,
            "figures": [asdict(f) for f in self.figures],
            "targets": [{**asdict(t), "passed": t.passed, "line": t.line()} for t in self.targets],
            "skipped": self.skipped,
            "errors": self.errors,
            "notes": self.notes,
        }

    def write(self, directory: Path, stamp: str) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps(self.to_json(), indent=1, default=str) + "\n"
        paths = {"json": directory / f"{stamp}.json", "latest": directory / "latest.json",
                 "markdown": directory / "latest.md"}
        paths["json"].write_text(data)
        paths["latest"].write_text(data)
        paths["markdown"].write_text(self.markdown())
        return paths


def value_of(summary: dict, key: str = "median", spread: tuple[str, str] = ("p25", "p75"),
             spread_name: str = "IQR", scale: float = 1.0, what: str = "samples") -> Value:
    """A Value from a stats.summary(): the median (or another key) and a spread."""
    n = summary.get("n", 0)
    if not n:
        return Value(math.nan, math.nan, math.nan, "no samples", 0)
    return Value(summary[key] * scale, summary[spread[0]] * scale, summary[spread[1]] * scale,
                 f"{spread_name} of {n} {what}", n)


def value_of_runs(values: list[float], scale: float = 1.0, what: str = "runs") -> Value:
    """Median and min-max of a few repeated runs."""
    import statistics
    if not values:
        return Value(math.nan, math.nan, math.nan, "no runs", 0)
    return Value(statistics.median(values) * scale, min(values) * scale, max(values) * scale,
                 f"min–max of {len(values)} {what}", len(values))

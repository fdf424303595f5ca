"""Print the timing tables of a CI run: one row per nox session, then the slowest tests.

Reads what ``noxfile.py`` writes: ``.nox/report/sessions.jsonl`` (session, seconds, result) and
the JUnit files ``.nox/report/*.xml``. Standard library only; it never fails the run.
``PAOTA_CI_SLOWEST`` sets how many tests to list (20).
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

REPORT = Path(os.environ.get("PAOTA_CI_REPORT_DIR", Path(__file__).parents[1] / ".nox" / "report"))


def _jsonl(name: str) -> list[dict[str, object]] | None:
    """The rows of ``REPORT/name`` (lines that are not JSON skipped); None when it is missing."""
    path = REPORT / name
    if not path.exists():
        return None
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def sessions() -> None:
    rows: list[Any] = _jsonl("sessions.jsonl") or []
    if not rows:
        print("ci report: no session timings (.nox/report/sessions.jsonl)")
        return
    width = max(len(r["session"]) for r in rows)
    print(f"\n{'session':<{width}}  {'result':<7}  {'seconds':>8}")
    for r in rows:
        print(f"{r['session']:<{width}}  {r.get('result', '?'):<7}  {r['seconds']:>8.1f}")
    total = sum(r["seconds"] for r in rows)
    print(f"{'sessions in all':<{width}}  {'':<7}  {total:>8.1f}")


def slowest(count: int) -> None:
    cases = []
    for xml in sorted(REPORT.glob("*.xml")):
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError:
            continue
        for case in root.iter("testcase"):
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            outcome = "failed" if case.find("failure") is not None else ""
            outcome = outcome or ("error" if case.find("error") is not None else "")
            outcome = outcome or ("skipped" if case.find("skipped") is not None else "")
            cases.append((float(case.get("time", 0) or 0), xml.stem, name, outcome))
    if not cases:
        return
    cases.sort(reverse=True)
    print(f"\nslowest {min(count, len(cases))} of {len(cases)} tests (seconds, session, test)")
    for seconds, session, name, outcome in cases[:count]:
        print(f"{seconds:8.1f}  {session:<14} {name}{'  [' + outcome + ']' if outcome else ''}")


def figures() -> None:
    figures_rows = _jsonl("figures.jsonl")
    if figures_rows is not None:
        print("\nfigures")
        for row in figures_rows:
            print(f"  {row.get('figure', '?')}: {row.get('text', '')}")
    chaos_rows = _jsonl("chaos.jsonl")
    if chaos_rows is not None:
        print("\nchaos (test: tasks, lost, ran twice, recovery s; the rest)")
        for row in chaos_rows:
            rest = {k: v for k, v in row.items() if k not in CHAOS_MAIN}
            recover = row.get("recover_s")
            if isinstance(recover, list):
                recover = ", ".join(f"{s:.1f}" for s in recover if isinstance(s, int | float))
            print(
                f"  {row.get('test')}: {row.get('tasks')}, {row.get('lost')}, "
                f"{row.get('duplicates')}, {recover}; {json.dumps(rest)}"
            )


CHAOS_MAIN = {"test", "tasks", "ran", "lost", "duplicates", "recover_s"}


def main() -> int:
    try:
        sessions()
        figures()
        slowest(int(os.environ.get("PAOTA_CI_SLOWEST", "20")))
    except Exception as exc:  # a report must never turn a run red
        print(f"ci report: could not be printed ({exc!r})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

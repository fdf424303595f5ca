"""The rule of ``tests/README.md``: no unit or contract test sleeps in real time to wait for
something to happen. Every ``asyncio.sleep`` or ``time.sleep`` of more than 0 in ``tests/unit``
and ``tests/contracts`` is in a module that runs all its tests in virtual time, or carries
``# sleep-ok: <kind>`` with one of the kinds below."""

from __future__ import annotations

import ast
from pathlib import Path

#: The allowed kinds of real-time sleep, as ``tests/README.md`` explains them.
KINDS = {
    "cancelled": "stands for work that never ends on its own: the test cancels or abandons it",
    "work": "is a run's own duration, the thing under test (a time limit, a lease, overlap)",
    "poll": "is the pause of a loop that looks again at a condition, under a deadline",
    "quiet": "gives something that must not happen a chance to; it cannot fail a correct product",
}
ROOT = Path(__file__).resolve().parents[1]
SLEEPERS = {"asyncio", "time", "anyio", "trio"}


def _is_sleep(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "sleep"
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in SLEEPERS
    )


def _all_tests_virtual(tree: ast.Module) -> bool:
    tests = [
        n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.name.startswith("test_")
    ]
    return bool(tests) and all(
        any(isinstance(d, ast.Name) and d.id == "virtual_time" for d in t.decorator_list)
        for t in tests
    )


def _strings_with_sleeps(tree: ast.Module) -> list[tuple[int, str]]:
    """Sleeps in code that the tests write out and run (a script in a string)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for offset, line in enumerate(node.value.splitlines()):
                if any(f"{m}.sleep(" in line for m in SLEEPERS) and "sleep(0)" not in line:
                    found.append((node.lineno + offset, line))
    return found


def offences() -> list[str]:
    found = []
    files = sorted((ROOT / "unit").glob("*.py")) + sorted((ROOT / "contracts").glob("*.py"))
    for path in files:
        if path.name == Path(__file__).name:  # its own examples
            continue
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        if _all_tests_virtual(tree):
            continue
        where = [(n.lineno, lines[n.lineno - 1]) for n in ast.walk(tree) if _is_sleep(n)]
        where = [
            (lineno, line)
            for lineno, line in where
            if not (isinstance(c := _call_arg(tree, lineno), ast.Constant) and c.value == 0)
        ]
        for lineno, line in where + _strings_with_sleeps(tree):
            _, marked, rest = line.partition("# sleep-ok: ")
            kind = rest.split(";")[0].strip()
            if not marked or kind not in KINDS:
                rel = path.relative_to(ROOT.parent)
                found.append(f"{rel}:{lineno}: {line.strip()}")
    return found


def _call_arg(tree: ast.Module, lineno: int) -> ast.expr | None:
    for node in ast.walk(tree):
        if _is_sleep(node) and node.lineno == lineno:
            assert isinstance(node, ast.Call)
            return node.args[0] if node.args else None
    return None


def test_no_test_sleeps_in_real_time_to_wait_for_something() -> None:
    found = offences()
    assert not found, (
        "real-time sleeps without a reason: wait on an event or with tests.waiting.until, run the "
        "module in virtual time, or mark the line '# sleep-ok: <kind>' with a kind of "
        f"{sorted(KINDS)} (tests/README.md):\n" + "\n".join(found)
    )


def test_the_check_finds_an_unmarked_sleep(tmp_path: Path) -> None:
    tree = ast.parse("async def test_x():\n    await asyncio.sleep(0.05)\n")
    assert not _all_tests_virtual(tree)
    assert [n.lineno for n in ast.walk(tree) if _is_sleep(n)] == [2]
    script = ast.parse('S = """\nimport time\ntime.sleep(1)\n"""\n')
    assert _strings_with_sleeps(script) == [(3, "time.sleep(1)")]

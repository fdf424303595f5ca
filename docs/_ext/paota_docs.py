"""Sphinx directives that render paota's own tables, so the docs cannot drift from the code.

``paota-go-fields``
    The Go ``Signature`` fields, from :data:`paota.core.message.fields.FIELDS`: the Python
    attribute, the Go field (the JSON key), its Go type and the AMQP header of header mode.
``paota-config``
    Every ``PAOTA_*`` variable the configuration reads, from the dataclass fields of
    :class:`paota.Config` and its sections: variable, field, default and what is allowed.
"""

from __future__ import annotations

import importlib
import re
import types
from collections.abc import Mapping
from dataclasses import fields
from typing import Any, ClassVar

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util.docutils import SphinxDirective

Cell = tuple[str, bool]  # text, shown as code


def _cell(text: str, code: bool) -> nodes.entry:
    entry = nodes.entry()
    para = nodes.paragraph()
    para += nodes.literal(text, text) if code and text else nodes.Text(text or "-")
    entry += para
    return entry


def _table(header: list[str], rows: list[list[Cell]]) -> nodes.table:
    table = nodes.table(classes=["paota-generated"])
    group = nodes.tgroup(cols=len(header))
    table += group
    for _ in header:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    row = nodes.row()
    for text in header:
        row += _cell(text, False)
    head += row
    group += head
    body = nodes.tbody()
    for cells in rows:
        row = nodes.row()
        for text, code in cells:
            row += _cell(text, code)
        body += row
    group += body
    return table


class _TableDirective(SphinxDirective):
    has_content = False
    header: ClassVar[list[str]] = []

    def rows(self) -> list[list[Cell]]:
        raise NotImplementedError

    def run(self) -> list[nodes.Node]:
        return [_table(self.header, self.rows())]


class GoFields(_TableDirective):
    header: ClassVar[list[str]] = [
        "Signature attribute",
        "Go field = JSON key",
        "Go type",
        "header mode",
    ]

    def rows(self) -> list[list[Cell]]:
        from paota.core.message.fields import FIELDS

        rows: list[list[Cell]] = []
        for f in FIELDS:
            if f.header_key is None:
                header = "no header (RawArgs is the body)" if f.name == "raw_args" else "no header"
            elif f.header_writes:
                header = f"header {f.header_key}"
            else:
                header = f"AMQP property (header {f.header_key} read too)"
            rows.append([(f.name, True), (f.go_key, True), (f.kind.value, True), (header, False)])
        return rows


def _default(f: Any, instance: Any) -> Cell:
    value = getattr(instance, f.name)
    if isinstance(value, Mapping):
        return "{}", True
    if value in ("", (), None):
        return "(empty)", False
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value), True


class ConfigTable(_TableDirective):
    header: ClassVar[list[str]] = ["variable", "field", "default", "allowed"]

    def rows(self) -> list[list[Cell]]:
        from paota.core import settings
        from paota.core.config import AMQPConfig, Config, MongoConfig

        rows: list[list[Cell]] = []
        defaults = Config.from_env({})
        for prefix, cls, instance in (
            ("", Config, defaults),
            ("amqp.", AMQPConfig, defaults.amqp),
            ("mongo.", MongoConfig, defaults.mongo),
        ):
            for f in fields(cls):
                spec = f.metadata.get("paota")
                if spec is None:
                    continue
                expected = (spec.kind.env_expected or spec.kind.expected).removeprefix("expected ")
                rows.append(
                    [
                        (spec.env, True),
                        (prefix + f.name, True),
                        _default(f, instance),
                        (expected, False),
                    ]
                )
        assert settings.variables(Config), "Config reads no variable"
        return rows


class CommandLine(SphinxDirective):
    """Each ``paota`` command's ``--help``, verbatim, under a heading of its own."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        import argparse
        import os

        from paota.cli import build_parser

        os.environ["COLUMNS"] = "100"
        parser = build_parser()
        sections: list[nodes.Node] = []
        commands: list[tuple[str, argparse.ArgumentParser]] = [("paota", parser)]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                commands += [(f"paota {name}", sub) for name, sub in action.choices.items()]
        for title, command in commands:
            section = nodes.section(
                ids=[nodes.make_id(f"cli-{title}")], names=[nodes.fully_normalize_name(title)]
            )
            section += nodes.title(title, "", nodes.literal(title, title))
            text = command.format_help()
            section += nodes.literal_block(text, text, language="text")
            sections.append(section)
        return sections


def _resolve(target: str) -> Any:
    """The Python object a dotted ``paota...`` name names, or raise LookupError."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            raise LookupError(target) from None
        return obj
    raise LookupError(target)


def _canonical(obj: Any, target: str) -> str | None:
    """Where ``obj`` is defined (``module.qualname``), when that differs from ``target``."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(obj, types.ModuleType) or not module or not qualname:
        return None
    if target.count(".") > 1 and not hasattr(obj, "__qualname__"):
        return None
    name = f"{module}.{qualname}"
    return name if name != target else None


def _missing_reference(
    app: Sphinx, env: BuildEnvironment, node: addnodes.pending_xref, contnode: nodes.Element
) -> nodes.Element | None:
    """A reference to ``paota.X`` (the package's re-export) links to where X is documented; a
    reference to a paota name that exists but is not in the API reference (an internal module or
    helper named in a docstring) is shown as plain code. A name that does not exist at all (a
    typo, a renamed function) is left to Sphinx, which fails the strict build."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if not target.startswith("paota"):
        return None
    if re.fullmatch(r"paota(\.\w+)*\.(P|R|R_co|T|T_co)", target):
        return contnode  # a TypeVar or ParamSpec in a signature
    try:
        obj = _resolve(target)
    except LookupError:
        return None
    canonical = _canonical(obj, target)
    if canonical is None and "." in target:
        # a method of a re-exported class: paota.Client.cancel -> paota.core.client.Client.cancel
        head, _, attr = target.rpartition(".")
        try:
            owner = _resolve(head)
        except LookupError:
            owner = None
        owner_name = _canonical(owner, head) if owner is not None else None
        canonical = f"{owner_name}.{attr}" if owner_name else None
    if canonical:
        domain = env.get_domain("py")
        found = domain.resolve_xref(
            env, node.get("refdoc", ""), app.builder, node.get("reftype", "obj"), canonical,
            node, contnode,
        )  # fmt: skip
        if found is not None:
            return found
        found = domain.resolve_any_xref(
            env, node.get("refdoc", ""), app.builder, canonical, node, contnode
        )
        if found:
            return found[0][1]
    return contnode


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("missing-reference", _missing_reference)
    app.add_directive("paota-go-fields", GoFields)
    app.add_directive("paota-config", ConfigTable)
    app.add_directive("paota-cli", CommandLine)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

"""A workflow's plan as the store keeps it: :class:`PlanNode` (a chain, a group or a task step,
with the step's message) and :class:`Plan` (the tree under its workflow id, and the error
callback). :mod:`paota.middleware.workflows` moves a workflow on along it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from paota.core.message import Signature, decode_json
from paota.core.message.binding import go_arg

__all__ = ["Plan", "PlanNode"]


@dataclass(frozen=True, eq=False)
class PlanNode:
    """One node of a plan: a chain, a group or a task step.

    ``id`` is the workflow id for the root and ``{workflow_id}.{path}`` below it; ``parent`` the
    id of the enclosing node ("" for the root and the error callback); ``index`` the position in
    the parent. A task step has the ``name`` of its task, its ``message`` (the Go JSON of its
    signature, without id; when ``takes_previous``, the first arg's value is left null, to be
    filled with the previous result as Go type ``hole_type``, inferred when None), the ``queue``
    it goes to, an optional ``delay_s`` and extra ``headers``.
    """

    kind: str
    id: str
    path: str
    parent: str
    index: int = 0
    children: tuple[PlanNode, ...] = ()
    name: str = ""
    message: str = ""
    takes_previous: bool = False
    hole_type: str | None = None
    queue: str = ""
    delay_s: float | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)

    def leaves(self) -> Iterator[PlanNode]:
        """The task steps of this subtree, in order."""
        if self.kind == "task":
            yield self
        for child in self.children:
            yield from child.leaves()

    def template(self) -> Signature:
        """The step's signature as planned (no id; the previous result left null)."""
        return decode_json(self.message.encode())

    def signature(self, previous: Any, *, has_previous: bool) -> Signature:
        """The signature to publish: id set, the previous result in the first arg when the step
        takes it. Raises :class:`~paota.ArgumentError` when that value cannot travel."""
        sig = self.template()
        args = sig.args
        if self.takes_previous and has_previous and args:
            first = args[0]
            filled = go_arg(first.name, previous, self.hole_type, task=self.name, label=first.name)
            args = (filled, *args[1:])
        return sig.replace(uuid=self.id, args=args)

    def to_doc(self) -> dict[str, Any]:
        """The node as a JSON-like document (the plan's form in the store)."""
        doc: dict[str, Any] = {
            "kind": self.kind,
            "id": self.id,
            "path": self.path,
            "parent": self.parent,
            "index": self.index,
        }
        if self.kind == "task":
            doc.update(
                name=self.name,
                message=self.message,
                takes_previous=self.takes_previous,
                hole_type=self.hole_type,
                queue=self.queue,
                delay_s=self.delay_s,
                headers=dict(self.headers),
            )
        else:
            doc["children"] = [child.to_doc() for child in self.children]
        return doc

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> PlanNode:
        """The node a :meth:`to_doc` document describes."""
        return cls(
            kind=str(doc["kind"]),
            id=str(doc["id"]),
            path=str(doc["path"]),
            parent=str(doc["parent"]),
            index=int(doc.get("index", 0)),
            children=tuple(cls.from_doc(child) for child in doc.get("children") or ()),
            name=str(doc.get("name", "")),
            message=str(doc.get("message", "")),
            takes_previous=bool(doc.get("takes_previous", False)),
            hole_type=doc.get("hole_type"),
            queue=str(doc.get("queue", "")),
            delay_s=doc.get("delay_s"),
            headers=dict(doc.get("headers") or {}),
        )


class Plan:
    """A workflow's plan: the tree of nodes, the error callback, the lifetime of its entries."""

    def __init__(
        self, workflow_id: str, root: PlanNode, on_error: PlanNode | None, ttl_s: float
    ) -> None:
        self.id = workflow_id
        self.root = root
        self.on_error = on_error
        self.ttl_s = ttl_s
        self._by_id: dict[str, PlanNode] = {}
        self._by_path: dict[str, PlanNode] = {}
        stack = [root]
        while stack:
            node = stack.pop()
            self._by_id[node.id] = node
            self._by_path[node.path] = node
            stack.extend(node.children)

    def node(self, path: str) -> PlanNode | None:
        """The node at ``path``, or None."""
        return self._by_path.get(path)

    def parent(self, node: PlanNode) -> PlanNode | None:
        """The node enclosing ``node`` (None for the root)."""
        return self._by_id.get(node.parent) if node.parent else None

    def downstream(self, node: PlanNode) -> list[PlanNode]:
        """The task steps that run only after ``node`` completes: the rest of each chain it is in,
        from the innermost out (a group it is in completes only with it)."""
        out: list[PlanNode] = []
        parent = self.parent(node)
        while parent is not None:
            if parent.kind == "chain":
                for later in parent.children[node.index + 1 :]:
                    out.extend(later.leaves())
            node, parent = parent, self.parent(parent)
        return out

    def to_doc(self) -> dict[str, Any]:
        """The plan as the store keeps it."""
        return {
            "version": 1,
            "id": self.id,
            "ttl_s": self.ttl_s,
            "root": self.root.to_doc(),
            "on_error": None if self.on_error is None else self.on_error.to_doc(),
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Plan:
        """The plan a :meth:`to_doc` document describes."""
        on_error = doc.get("on_error")
        return cls(
            str(doc["id"]),
            PlanNode.from_doc(doc["root"]),
            None if on_error is None else PlanNode.from_doc(on_error),
            float(doc["ttl_s"]),
        )

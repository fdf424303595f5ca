"""``paota workflow WORKFLOW_ID``: a workflow's tree, each step with its record, from the store."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from paota.client import Client
from paota.core.config import Config
from paota.core.state import TaskState
from paota.middleware.workflows import PlanNode
from paota.workflows import WorkflowHandle

NAME = "workflow"
HELP = "show a workflow's steps and their states"
DESCRIPTION = (
    "Read the workflow WORKFLOW_ID (wf_...) from the store (PAOTA_STORE, the one its workers "
    "use): its chains and groups, and every step with its id, task, status, worker and result or "
    "error; the step that stopped it, if one failed."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options."""
    parser.add_argument("workflow_id", metavar="WORKFLOW_ID")
    parser.add_argument("--json", action="store_true", help="print JSON")


async def run(args: argparse.Namespace) -> int:
    client = Client(Config.from_env(), name="paota-workflow")
    async with client:
        try:
            handle = await WorkflowHandle.load(client, args.workflow_id)
        except LookupError as exc:
            print(f"paota: {exc}", file=sys.stderr)
            return 1
        states = await handle.states()
        failed = await handle.failed_task_id()
    if args.json:
        print(json.dumps(as_json(handle, states, failed), indent=2, default=str))
    else:
        print("\n".join(describe(handle, states, failed)))
    return 0


def _state_doc(state: TaskState | None) -> dict[str, Any]:
    if state is None:
        return {"status": "NOT SENT"}
    doc: dict[str, Any] = {"status": state.status.value, "worker": state.worker}
    if state.error is not None:
        doc["error"] = f"{state.error.type}: {state.error.message}"
    elif state.status.is_final:
        doc["result"] = state.result
    return doc


def as_json(
    handle: WorkflowHandle[Any], states: dict[str, TaskState | None], failed: str | None
) -> dict[str, Any]:
    """The workflow as one JSON object: the tree, each step with its record."""

    def node(n: PlanNode) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": n.kind, "id": n.id, "parent": n.parent}
        if n.kind == "task":
            doc.update(name=n.name, **_state_doc(states.get(n.id)))
        else:
            doc["children"] = [node(child) for child in n.children]
        return doc

    on_error = handle.plan.on_error
    return {
        "id": handle.id,
        "failed_task_id": failed,
        "root": node(handle.plan.root),
        "on_error": None if on_error is None else node(on_error),
    }


def describe(
    handle: WorkflowHandle[Any], states: dict[str, TaskState | None], failed: str | None
) -> list[str]:
    """The workflow as lines of text, indented by depth."""
    steps = handle.task_ids
    done = sum(1 for i in steps if (s := states.get(i)) is not None and s.status.is_final)
    head = f"workflow {handle.id}: {done} of {len(steps)} steps finished"
    lines = [head + (f"; stopped by {failed}" if failed else "")]

    def walk(n: PlanNode, depth: int) -> None:
        pad = "  " * depth
        if n.kind != "task":
            lines.append(f"{pad}{n.kind} {n.id}")
            for child in n.children:
                walk(child, depth + 1)
            return
        doc = _state_doc(states.get(n.id))
        detail = doc.get("error", "")
        if "result" in doc:
            detail = f"-> {json.dumps(doc['result'], default=str)[:80]}"
        worker = f" on {doc['worker']}" if doc.get("worker") else ""
        lines.append(f"{pad}{n.id} {n.name}: {doc['status']}{worker} {detail}".rstrip())

    walk(handle.plan.root, 1)
    if handle.plan.on_error is not None:
        lines.append("  on error:")
        walk(handle.plan.on_error, 2)
    return lines

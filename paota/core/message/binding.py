"""Binding Python parameters to Go ``Args`` and back: :class:`Binder`, the Go type of an
annotation, and whether a function is a Go-style task (``fn(sig: Signature)``).

A producer binds a call to ``{Name, Type, Value}`` args named after the parameters, with the Go
type of a plain annotation (``int`` -> ``int``, ``float`` -> ``float64``, ``list[str]`` ->
``[]string`` ...), else the type :meth:`paota.Arg.of` infers; a worker binds a message's args back
by name when they have names and by position when they have none (Go's example producer), and
raises :class:`~paota.BindError` for args that do not fit.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Union

from paota.core.errors import ArgumentError, BindError
from paota.core.message.model import Arg, Signature

__all__ = ["Binder", "go_arg", "go_style_entry", "is_go_style"]


# --- binding Python parameters <-> Go args -------------------------------------------------------

_GO_SCALARS: dict[Any, str] = {bool: "bool", int: "int", float: "float64", str: "string"}
_GO_LISTS: dict[Any, str] = {bool: "[]bool", int: "[]int", float: "[]float64", str: "[]string"}


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1 and len(typing.get_args(annotation)) == 2:
            return members[0], True
    return annotation, False


def _go_type(annotation: Any) -> str | None:
    annotation, _ = _strip_optional(annotation)
    if annotation in _GO_SCALARS:
        return _GO_SCALARS[annotation]
    origin = typing.get_origin(annotation)
    if origin in (list, tuple) and origin is not None:
        item = typing.get_args(annotation)
        if origin is list and len(item) == 1 and item[0] in _GO_LISTS:
            return _GO_LISTS[item[0]]
        return "[]interface{}"
    if origin is dict or annotation is dict:
        return "map[string]interface{}"
    return None


def _fits(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is acceptable for a plain annotation (others are not checked)."""
    base, optional = _strip_optional(annotation)
    if value is None:
        return optional or base is Any or base is inspect.Parameter.empty or base is type(None)
    if base is bool:
        return type(value) is bool
    if base is int:
        return type(value) is int
    if base is float:
        return type(value) in (int, float)
    if base is str:
        return type(value) is str
    origin = typing.get_origin(base)
    if base is list or origin is list:
        return type(value) is list
    if base is dict or origin is dict:
        return type(value) is dict
    return True


def go_arg(name: str, value: Any, go_type: str | None, *, task: str, label: str) -> Arg:
    """The Go arg ``name`` for ``value``: of type ``go_type`` (a parameter's annotation) when the
    value fits it, else the type :meth:`Arg.of` infers. Raises :class:`ArgumentError` naming
    ``task`` and ``label`` for a value that cannot travel."""
    try:
        if go_type == "float64" and type(value) is int:
            return Arg(name, go_type, float(value))
        if go_type is not None and go_type in ("bool", "int", "string", "float64"):
            if value is None:
                return Arg(name, "interface{}", None)
            if _fits(value, {"bool": bool, "int": int, "string": str, "float64": float}[go_type]):
                return Arg(name, go_type, value)
        arg = Arg.of(value, name)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"task {task!r}: argument {label!r} cannot be sent: {exc}") from None
    if go_type is not None and go_type != arg.type:
        # The annotation says more than the value: an empty list, or whole numbers for floats.
        if arg.type == "[]interface{}" and not arg.value and go_type.startswith("[]"):
            return Arg(name, go_type, arg.value)
        if (go_type, arg.type) == ("[]float64", "[]int"):
            return Arg(name, go_type, [float(v) for v in arg.value])
    return arg


class Binder:
    """Binds a function's parameters to Go args and back (built once per task)."""

    __slots__ = (
        "_annotations",
        "_go_types",
        "_has_var_keyword",
        "_sig",
        "single_parameter",
        "task_name",
    )

    def __init__(self, fn: Callable[..., Any], task_name: str) -> None:
        self.task_name = task_name
        self._sig = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # unresolvable forward references: check nothing, infer from values
            hints = {}
        self._annotations = {
            name: hints.get(name, inspect.Parameter.empty) for name in self._sig.parameters
        }
        self._go_types = {name: _go_type(a) for name, a in self._annotations.items()}
        self._has_var_keyword = any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in self._sig.parameters.values()
        )
        params = list(self._sig.parameters.values())
        #: Whether the function takes exactly one argument, positionally (for ``send_many``).
        self.single_parameter = len(params) == 1 and params[0].kind in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        )

    def go_types(self) -> dict[str, str | None]:
        """Each parameter's Go type from its annotation (None: not annotated with a type that
        has one), in order."""
        return dict(self._go_types)

    def to_args(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Arg, ...]:
        """The Go args for a call with ``args`` and ``kwargs`` (defaults filled in).

        Raises TypeError (as the call would) for missing, extra or unknown arguments and
        :class:`ArgumentError` for a value that cannot travel.
        """
        try:
            bound = self._sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.task_name!r}: {exc}") from None
        return self._args_of(bound, "")

    def to_args_with_hole(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Arg, ...], str | None]:
        """The Go args for a call that leaves the first parameter to be filled later (a workflow
        step that takes the previous step's result), and that parameter's Go type (None: to be
        inferred from the value). Its Arg comes first, valued None.

        Raises TypeError when the first parameter cannot be left out (there is none, or it is
        keyword-only or ``*args``) or the other arguments do not bind.
        """
        params = list(self._sig.parameters.values())
        if not params or params[0].kind not in (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
        ):
            raise TypeError(
                f"task {self.task_name!r} has no positional first parameter to take the previous "
                "step's result"
            )
        first = params[0].name
        try:
            bound = self._sig.bind(None, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.task_name!r}: {exc}") from None
        return self._args_of(bound, first), self._go_types[first]

    def _args_of(self, bound: inspect.BoundArguments, hole: str) -> tuple[Arg, ...]:
        bound.apply_defaults()
        out: list[Arg] = []
        task = self.task_name
        for name, value in bound.arguments.items():
            kind = self._sig.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                out.extend(go_arg("", item, None, task=task, label=f"*{name}") for item in value)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                out.extend(go_arg(k, v, None, task=task, label=k) for k, v in value.items())
            elif name == hole:
                out.append(Arg(name, self._go_types[name] or "interface{}", None))
            else:
                out.append(go_arg(name, value, self._go_types[name], task=task, label=name))
        return tuple(out)

    def from_args(self, sig: Signature) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """``(args, kwargs)`` to call the function with for ``sig``'s args.

        Named args bind by name, unnamed ones by position. Raises :class:`BindError` naming what
        does not fit.
        """
        positional: list[Any] = []
        named: dict[str, Any] = {}
        for arg in sig.args:
            if arg.name:
                if arg.name in named:
                    raise BindError(f"task {sig.name!r}: argument {arg.name!r} is given twice")
                named[arg.name] = arg.value
            else:
                positional.append(arg.value)
        try:
            bound = self._sig.bind(*positional, **named)
        except TypeError as exc:
            given = [a.name or f"#{i}" for i, a in enumerate(sig.args)]
            raise BindError(
                f"task {sig.name!r} cannot take the message's args {given}: {exc} "
                f"(parameters: {list(self._sig.parameters)})"
            ) from None
        for name, value in bound.arguments.items():
            annotation = self._annotations.get(name, inspect.Parameter.empty)
            kind = self._sig.parameters[name].kind
            if kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if annotation is not inspect.Parameter.empty and not _fits(value, annotation):
                raise BindError(
                    f"task {sig.name!r}: argument {name!r} should be {_show_type(annotation)}, "
                    f"got {type(value).__name__} {value!r:.60}"
                )
            if annotation is float and type(value) is int:
                bound.arguments[name] = float(value)
        return bound.args, bound.kwargs


def _show_type(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation)


def is_go_style(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is a Go-style task ``fn(sig: Signature)``: one parameter, annotated
    :class:`~paota.Signature` (or unannotated and named ``sig``)."""
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return True  # a builtin or C callable: it can only take what it is given
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(positional) != 1 or len(params) != 1:
        return False
    param = positional[0]
    annotation = param.annotation
    if annotation is param.empty:
        return param.name in ("sig", "signature")
    if annotation is Signature or annotation in ("Signature", "paota.Signature"):
        return True
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        return False
    return hints.get(param.name) is Signature


def go_style_entry(func: Any) -> bool | None:
    """For ``register_tasks``: a one-parameter function is Go style unless it is typed."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return True
    if len(params) == 1 and params[0].annotation is inspect.Parameter.empty:
        return True
    return is_go_style(func)

"""The registry of training methods: ``model.method`` names a class here, and only these names are allowed.

A method is one plain object (:class:`ctca.methods.base.Method`) that owns its network config, its
preparation, its epoch count and learning-rate schedule, its per-epoch hooks, its loss, its checkpoint
state and the params sections it reads; the training loop (:func:`ctca.train.fit`) only calls its hooks.
Entries are ``"module:Class"`` strings, imported when asked for, so that code which trains one method
does not import the others. Adding a method: one module, one entry here (or :func:`register`), and a
params section if it has options. See docs/methods.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctca.config import Params
    from ctca.methods.base import Method

_REGISTRY: dict[str, str | type] = {
    "baseline": "ctca.methods.baseline:Baseline",
    "vac": "ctca.methods.vac:VAC",
    "smkd": "ctca.methods.smkd:SMKD",
    "ctca": "ctca.methods.ctca:CTCA",
}


def method_names() -> tuple[str, ...]:
    """The allowed values of ``model.method``."""
    return tuple(_REGISTRY)


def register(name: str, target: str | type) -> None:
    """Add a method: ``target`` is a :class:`~ctca.methods.base.Method` subclass or ``"module:Class"``."""
    if not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"method name {name!r}: expected letters, digits, '-' or '_'")
    _REGISTRY[name] = target


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def method_class(name: str) -> type[Method]:
    if name not in _REGISTRY:
        raise ValueError(f"model.method={name!r} is not available; allowed: {', '.join(_REGISTRY)}")
    target = _REGISTRY[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target


def make_method(params: Params) -> Method:
    """The method object of ``params.model.method``, built once per training run."""
    return method_class(params.model.method)(params)

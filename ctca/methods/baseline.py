"""``baseline``: CTC on the sequence head of SPM -> TAM ladder (``tam.depth``) -> Linear."""

from __future__ import annotations

from ctca.methods.base import Method


class Baseline(Method):
    """The plain CTC recognizer; all of its behaviour is the base class's (docs/methods.md#baseline)."""

    name = "baseline"

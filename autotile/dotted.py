"""Objects named by a 'package.module:attr.attr' string: how the family registry names its parts, and how
worker processes are told which function to run. Imports only what it is asked for."""

from __future__ import annotations

import importlib


def resolve(dotted: str):
    """'package.module:attr.attr' -> the object."""
    module, _, attr = dotted.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj

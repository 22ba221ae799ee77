"""Every public module's ``__all__`` is sorted and names everything it defines."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import realtime_async


def _public_modules():
    for info in pkgutil.walk_packages(realtime_async.__path__, "realtime_async."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or ".migrations" in info.name or ".management" in info.name:
            continue
        module = importlib.import_module(info.name)
        if hasattr(module, "__all__"):
            yield module


@pytest.mark.parametrize("module", list(_public_modules()), ids=lambda m: m.__name__)
def test_dunder_all_is_sorted_and_complete(module):
    names = module.__all__
    # isort-style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then functions.
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[:1].isupper() else 2, n))
    for name in names:
        assert hasattr(module, name), name
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and getattr(value, "__module__", None) == module.__name__
        and (callable(value) or isinstance(value, type))
    }
    assert public <= set(names), public - set(names)

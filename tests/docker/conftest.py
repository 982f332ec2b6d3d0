"""Every test in this folder needs the engine: each carries the `docker` marker (`-m docker`,
`-m "not docker"`), given here once instead of a `pytestmark` line per module."""

from __future__ import annotations

import pytest


def pytest_itemcollected(item: pytest.Item) -> None:
    # Called through the item's own hook proxy, so only for items under this folder; and during
    # collection, before `-m` deselects anything (pytest_collection_modifyitems).
    item.add_marker(pytest.mark.docker)

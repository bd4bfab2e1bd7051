"""Shared fixtures: the real data folder, a small demo dataset cache, tiny runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("EDGE_MLA_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    assert (d / "mnist.npz").is_file() and (d / "fsdd.npz").is_file(), f"real data not found in {d} (set EDGE_MLA_DATA)"
    return d


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """The demo dataset, built once per session into its own cache folder (or reused
    from EDGE_MLA_TEST_CACHE to save ~20 s when iterating locally)."""
    from edge_mla.data.demo import build_demo, demo_path

    cache = Path(os.environ.get("EDGE_MLA_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    old = os.environ.get("EDGE_MLA_CACHE")
    os.environ["EDGE_MLA_CACHE"] = str(cache)
    if not demo_path().is_file():
        build_demo(demo_path(), progress=False)
    yield cache
    if old is None:
        os.environ.pop("EDGE_MLA_CACHE", None)
    else:
        os.environ["EDGE_MLA_CACHE"] = old

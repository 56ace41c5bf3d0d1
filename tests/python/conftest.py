"""Shared setup of the Python tests: the package from python/ and this
build's libdeft.so (DEFT_LIBRARY, set by CTest; else build/)."""
import os
import sys

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("DEFT_LIBRARY", os.path.join(ROOT, "build", "libdeft.so"))

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def root():
    return ROOT


def build_dir():
    return os.environ.get("DEFT_BUILD_DIR", os.path.join(ROOT, "build"))

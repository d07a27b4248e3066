"""The CLI changes process-wide state on purpose (os.environ, the root logger, warning filters): tests put it back."""

from __future__ import annotations

import logging
import os

import pytest


@pytest.fixture(autouse=True)
def restore_process_state(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./local.settings.json unless a test writes one
    environ = dict(os.environ)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    os.environ.clear()
    os.environ.update(environ)
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)

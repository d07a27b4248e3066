"""Whole-stack fixtures for integration modules that need `make run`'s stack (fixed ports, one at a time).

A module sets STACK_HUBS (hubs to run) and STACK_SETTINGS (extra app settings) to shape its stack; the stack
starts once per module and stops when the module ends.
"""

from __future__ import annotations

import pytest

from shared.bootstrap import Services
from shared.config import Settings
from tests.stack_helpers import app_environment, running_stack


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    hubs = getattr(request.module, "STACK_HUBS", None)
    extra = getattr(request.module, "STACK_SETTINGS", None)
    with running_stack(tmp_path_factory.mktemp("stack"), hubs, extra) as running:
        yield running


@pytest.fixture(scope="module")
def services(stack):
    """The product's Services, configured like the function app of that stack."""
    with app_environment(stack.settings_path):
        yield Services(Settings())

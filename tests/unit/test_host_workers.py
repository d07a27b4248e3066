from __future__ import annotations

import pytest

from local.host.workers import worker_process_count


@pytest.mark.parametrize(("value", "expected"), [(None, 1), ("", 1), ("1", 1), (" 4 ", 4), ("10", 10)])
def test_worker_process_count_defaults_to_one_like_functions(value, expected):
    environ = {} if value is None else {"FUNCTIONS_WORKER_PROCESS_COUNT": value}
    assert worker_process_count(environ) == expected


@pytest.mark.parametrize(("value", "message"), [("0", "from 1 to 10, not 0"), ("11", "from 1 to 10, not 11"),
                                                ("two", "whole number from 1 to 10, not 'two'")])
def test_worker_process_count_out_of_range_names_the_setting(value, message):
    with pytest.raises(ValueError, match="FUNCTIONS_WORKER_PROCESS_COUNT") as caught:
        worker_process_count({"FUNCTIONS_WORKER_PROCESS_COUNT": value})
    assert message in str(caught.value)

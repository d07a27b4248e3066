"""Local function keys are URL-safe like Azure's: a `+` in `?code=` arrives as a space and the host answers 401."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from local.host.keys import FUNCTION_KEY_SECRET, MASTER_KEY_SECRET, HostKeys, presented_key
from local.secrets import stack_secret

URL_UNSAFE = set("+/=")


def query_of(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))


@pytest.mark.parametrize("name", [FUNCTION_KEY_SECRET, MASTER_KEY_SECRET, "function-key-on_device_created"])
def test_fresh_function_keys_have_no_plus_slash_or_padding(tmp_path, name):
    keys = [stack_secret(tmp_path / str(i), name) for i in range(200)]
    assert all(not URL_UNSAFE & set(key) and len(key) >= 43 for key in keys)
    assert len(set(keys)) == len(keys)


def test_a_fresh_key_works_unquoted_in_code(tmp_path):
    keys = HostKeys.from_state_dir(tmp_path)
    for key, level in [(keys.function_key, "function"), (keys.master_key, "admin")]:
        query = query_of(f"http://127.0.0.1:7071/api/allocate?code={key}")
        assert query["code"] == key
        assert keys.allows(level, presented_key(query, {}))


def test_a_standard_base64_key_with_a_plus_would_not(tmp_path):
    keys = HostKeys("ab+cd/ef==", "master")
    assert not keys.allows("function", presented_key(query_of("http://h/api/allocate?code=ab+cd/ef=="), {}))


def test_other_secrets_stay_standard_base64(tmp_path):
    for name in ["iothub-west-service", "identity-signing-key"]:
        assert len(base64.b64decode(stack_secret(tmp_path, name), validate=True)) == 32


def test_a_function_key_an_earlier_version_made_is_replaced_and_other_secrets_are_kept(tmp_path):
    (tmp_path / "secrets.json").write_text(json.dumps({FUNCTION_KEY_SECRET: "ab+cd/ef==",
                                                       "iothub-west-service": "ab+cd/ef=="}))
    key = stack_secret(tmp_path, FUNCTION_KEY_SECRET)
    assert key != "ab+cd/ef==" and not URL_UNSAFE & set(key)
    assert stack_secret(tmp_path, FUNCTION_KEY_SECRET) == key
    assert stack_secret(tmp_path, "iothub-west-service") == "ab+cd/ef=="

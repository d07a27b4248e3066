"""Stack secrets are shared by several processes (one per hub emulator): creation must not race."""

import multiprocessing

from local.secrets import stack_secret


def _create(args):
    state_dir, names = args
    return {name: stack_secret(state_dir, name) for name in names}


def test_processes_creating_secrets_at_once_agree_and_lose_none(tmp_path):
    names = [f"iothub-hub{i}-policy" for i in range(6)]
    with multiprocessing.get_context("fork").Pool(4) as pool:
        results = pool.map(_create, [(tmp_path, names)] * 8)
    assert all(result == results[0] for result in results)
    assert {name: stack_secret(tmp_path, name) for name in names} == results[0]
    assert (tmp_path / "secrets.json").stat().st_mode & 0o077 == 0

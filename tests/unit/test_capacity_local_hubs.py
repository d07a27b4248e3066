"""`python -m local.stack run --hubs-per-region N`: the hubs it runs, their ports, and what the app and the seed are
told about them (no process is started here)."""

from __future__ import annotations

import pytest

from local import stack as local_stack
from local.seed import data
from local.settings_file import DPS_SERVICE_PORT, IDENTITY_PORT, KEY_VAULT_PORT


def test_one_hub_per_region_is_the_reference_stack():
    assert data.hubs() == data.HUBS and data.hubs(1) == data.HUBS


def test_more_hubs_per_region_keep_the_first_ones_and_use_their_own_ports():
    hubs = data.hubs(4)
    assert hubs[:3] == data.HUBS and len(hubs) == 12
    assert {h.region for h in hubs} == {"west", "central", "east"}
    assert [h.name for h in hubs if h.region == "west"] == [f"iothub-west{k}-local" if k > 1 else "iothub-west-local"
                                                            for k in range(1, 5)]
    ports = [h.port for h in data.hubs(data.MAX_HUBS_PER_REGION)]
    assert len(set(ports)) == len(ports)
    assert not set(ports) & {IDENTITY_PORT, KEY_VAULT_PORT, DPS_SERVICE_PORT, 7071, 10000, 10001, 10002}
    assert all(p in (8441, 8442, 8443) or p >= data.EXTRA_HUB_PORT for p in ports)
    assert all(data.region_of(h.host_name) == h.region for h in data.hubs(data.MAX_HUBS_PER_REGION))
    assert data.region_of("localhost:9999") is None and data.region_of("hub.azure-devices.net") is None
    for bad in (0, data.MAX_HUBS_PER_REGION + 1):
        with pytest.raises(ValueError):
            data.hubs(bad)


def test_the_app_settings_and_the_seed_name_every_hub(tmp_path):
    from local.settings_file import stack_values
    from local.tls import TlsFiles

    hubs = data.hubs(2)
    tls = TlsFiles(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "bundle.pem")
    values = stack_values(tmp_path, tls, hubs)
    assert values["IOT_HUB_HOSTNAMES"].split(",") == [h.host_name for h in hubs]
    assert "iothub-east2-local=localhost:8462" in values["IOT_HUB_NAMES"].split(",")
    assert set(local_stack.stack_ports(hubs)) >= {h.name for h in hubs}


def test_the_stack_command_takes_hubs_per_region(monkeypatch):
    started = {}

    class FakeStack:
        def __init__(self, hubs):
            started["hubs"] = hubs
            self.hubs = hubs

        def start(self):
            raise local_stack.StackError("not here")

        def stop(self):
            pass

    monkeypatch.setattr(local_stack, "Stack", FakeStack)
    monkeypatch.setattr(local_stack.signal, "signal", lambda *args: None)  # pytest keeps its own handlers
    assert local_stack.main(["run", "--hubs-per-region", "3"]) == 1
    assert started["hubs"] == data.hubs(3)
    with pytest.raises(SystemExit):
        local_stack.main(["run", "--hubs-per-region", "0"])

from collections import Counter

from local.fleet.plan import plan_fleet
from shared.identity import parse_device_id


def test_plan_is_deterministic_for_a_seed_and_differs_across_seeds():
    facilities = ["FAC01", "FAC02"]
    assert plan_fleet(facilities, 20, seed=7) == plan_fleet(facilities, 20, seed=7)
    assert plan_fleet(facilities, 20, seed=7) != plan_fleet(facilities, 20, seed=8)


def test_every_device_id_is_a_valid_unique_cn_with_gateways_per_plant():
    devices = plan_fleet([f"FAC{n:02d}" for n in range(1, 13)], 300, seed=1)
    assert len(devices) == 3600
    assert len({d.device_id for d in devices}) == 3600
    for device in devices:
        identity = parse_device_id(device.device_id)
        assert (identity.facility, identity.type_code) == (device.facility, device.type_code)
    gateways = Counter(d.facility for d in devices if d.is_gateway)
    assert set(gateways.values()) == {2}
    types = Counter(d.type_code for d in devices if not d.is_gateway)
    assert set(types) == {"temp", "press", "vib", "flow"}

"""Hub capacity across webhook instances: allocations one instance makes count for every other one before
their registry statistics are read again (Functions scales out and runs several worker processes), and
instances deciding at the same moment cannot both take a hub's last place."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from allocation.capacity import CapacityMonitor
from allocation.decision import place_device
from allocation.policy import FacilityPlacement
from local.seed.seed import SCHEMA, schema_statements
from shared.errors import OnboardingError
from shared.sql import Database

pytestmark = pytest.mark.integration
EAST, WEST = "hub-east.azure-devices.net", "hub-west.azure-devices.net"


@pytest.fixture
def db(tmp_path):
    database = Database(f"Driver=SQLite3;Database={tmp_path / 'capacity.db'}")
    database.path = tmp_path / "capacity.db"
    for statement in schema_statements(SCHEMA.read_text()):
        database.execute(statement)
    for host, region in ((EAST, "east"), (WEST, "west")):
        database.execute("INSERT INTO iot_hubs (host_name, region, max_devices, max_daily_messages, accepting) "
                         "VALUES (?, ?, 10, 1000, 1)", [host, region])
    yield database
    database.close()


def instance(db: Database, statistics: dict[str, int]) -> CapacityMonitor:
    """One webhook instance, with its own connections, whose statistics stay as they were (its cache outlives
    the burst)."""
    own = Database(f"Driver=SQLite3;Database={db.path}")
    return CapacityMonitor(own, lambda host: statistics[host], [EAST, WEST], ttl_s=3600)


def place(monitor: CapacityMonitor) -> str:
    return place_device(FacilityPlacement("FAC09", "east", EAST), monitor, [EAST, WEST], None, 0.9).host_name


def test_two_instances_together_fill_a_hub_to_its_limit_and_then_spill(db):
    statistics = {EAST: 4, WEST: 0}  # read once by each instance, before the burst
    first, second = instance(db, statistics), instance(db, statistics)
    first.snapshot(), second.snapshot()
    placed = [place(first if n % 2 else second) for n in range(10)]
    assert placed.count(EAST) == 6  # 4 present + 6 = the limit of 10, although each instance placed only 3
    assert placed[6:] == [WEST] * 4  # the rest spill over to the other region


def test_an_instance_starting_mid_burst_counts_the_devices_still_on_their_way(db):
    statistics = {EAST: 4, WEST: 0}
    first = instance(db, statistics)
    for _ in range(3):
        place(first)  # allocated, but DPS has not created them yet: the registry still says 4
    second = instance(db, statistics)
    assert second.snapshot()[EAST].device_count == 7


def test_statistics_replace_the_estimate_only_once_allocations_have_stopped(db):
    statistics, now = {EAST: 0, WEST: 0}, [100.0]
    monitor = CapacityMonitor(Database(f"Driver=SQLite3;Database={db.path}"), lambda host: statistics[host],
                              [EAST, WEST], ttl_s=0, clock=lambda: now[0], quiet_s=10)  # statistics every look
    for _ in range(3):
        place(monitor)
    statistics[EAST] = 1  # two of the three were deleted again
    now[0] += 5
    assert monitor.snapshot()[EAST].device_count == 3  # allocated 5 s ago: some may still be on their way
    now[0] += 11
    assert monitor.snapshot()[EAST].device_count == 1  # no allocation for 11 s since: the registry is right


def test_no_room_anywhere_is_refused(db):
    monitor = instance(db, {EAST: 10, WEST: 10})
    with pytest.raises(OnboardingError) as refused:
        place(monitor)
    assert refused.value.code == "no_hub_capacity"


def test_instances_deciding_at_once_never_overfill_the_hub(db):
    statistics = {EAST: 0, WEST: 0}
    instances = [instance(db, statistics) for _ in range(4)]
    for monitor in instances:
        monitor.snapshot()  # all four saw an empty hub east
    with ThreadPoolExecutor(max_workers=8) as pool:
        placed = list(pool.map(lambda n: place(instances[n % 4]), range(16)))
    assert placed.count(EAST) == 10 and placed.count(WEST) == 6


def test_a_device_staying_on_its_hub_takes_no_place(db):
    monitor = instance(db, {EAST: 10, WEST: 0})  # east is full
    choice = place_device(FacilityPlacement("FAC09", "east", EAST), monitor, [EAST, WEST], EAST, 0.9)
    assert (choice.host_name, choice.rule) == (EAST, "current")
    assert monitor.snapshot()[EAST].device_count == 10

"""The IoT Hub emulator's durable store: an append-only journal per collection, replayed on open."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import pytest

from local.iothub import store
from local.iothub.store import JOURNAL, Collection, HubStore, write_json_atomic


def twin(n: int) -> dict:
    return {"device": {"deviceId": f"sensor-{n}", "status": "enabled"}, "twin": {"tags": {"n": n}, "desired": {}}}


def journal_lines(directory: Path) -> list[str]:
    return (directory / JOURNAL).read_text().splitlines()


def reopened(collection: Collection) -> Collection:
    collection.close()
    return Collection(collection.directory)


def test_put_get_delete_round_trip(tmp_path):
    devices = Collection(tmp_path)
    devices.put("b", twin(2))
    devices.put("a", twin(1))
    assert devices.get("a") == twin(1) and devices.get("missing") is None
    assert devices.keys() == ["a", "b"] and list(devices.values()) == [twin(1), twin(2)]
    assert len(devices) == 2 and "a" in devices and "c" not in devices
    assert devices.delete("a") is True
    assert devices.delete("a") is False
    assert devices.get("a") is None and devices.keys() == ["b"]


def test_puts_overwrites_and_deletes_survive_a_reopen(tmp_path):
    devices = Collection(tmp_path)
    for n in range(5):
        devices.put(f"sensor-{n}", twin(n))
    devices.put("sensor-1", {"overwritten": True})
    devices.delete("sensor-3")
    devices.put("sensor-3", twin(33))  # re-created after a delete
    devices.delete("sensor-4")
    again = reopened(devices)
    assert again.keys() == ["sensor-0", "sensor-1", "sensor-2", "sensor-3"]
    assert again.get("sensor-1") == {"overwritten": True} and again.get("sensor-3") == twin(33)
    assert [path.name for path in tmp_path.iterdir()] == [JOURNAL]  # no per-record files


def test_a_torn_last_line_is_ignored_and_earlier_records_survive(tmp_path):
    devices = Collection(tmp_path)
    devices.put("a", twin(1))
    devices.put("b", twin(2))
    devices.close()
    with (tmp_path / JOURNAL).open("ab") as journal:
        journal.write(b'{"k":"c","v":{"device":{"devi')  # a crash in the middle of the third put
    again = Collection(tmp_path)
    assert again.keys() == ["a", "b"] and again.get("b") == twin(2)
    again.put("c", twin(3))  # appends after the last good line, not onto the torn one
    assert reopened(again).keys() == ["a", "b", "c"]


def test_a_write_that_fails_half_way_is_not_kept_and_does_not_damage_the_journal(tmp_path, monkeypatch):
    devices = Collection(tmp_path)
    devices.put("a", twin(1))
    real_write = os.write

    def disk_full(fd, data):
        real_write(fd, bytes(data[:10]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "write", disk_full)
    with pytest.raises(OSError):
        devices.put("b", twin(2))
    monkeypatch.undo()
    assert devices.keys() == ["a"]
    devices.put("c", twin(3))
    assert reopened(devices).keys() == ["a", "c"]
    assert all(json.loads(line) for line in journal_lines(tmp_path))


def test_compaction_keeps_exactly_the_live_records_and_shrinks_the_journal(tmp_path):
    devices = Collection(tmp_path)
    for n in range(20):
        devices.put(f"sensor-{n:02d}", twin(n))
    for version in range(3000):
        devices.put("sensor-00", {**twin(0), "version": version})
    for n in range(10, 20):
        devices.delete(f"sensor-{n:02d}")
    # 3,030 lines written; the journal never holds more than max(1000, 4 x live records) of them.
    assert len(journal_lines(tmp_path)) <= 1000
    expected = {f"sensor-{n:02d}": twin(n) for n in range(1, 10)} | {"sensor-00": {**twin(0), "version": 2999}}
    again = reopened(devices)
    assert {key: again.get(key) for key in again.keys()} == expected
    assert len(journal_lines(tmp_path)) <= 1000


def test_a_long_journal_is_compacted_on_open(tmp_path):
    lines = [json.dumps({"k": "sensor-1", "v": {"version": v}}) for v in range(2500)]
    lines += [json.dumps({"k": "gone", "v": {}}), json.dumps({"k": "gone", "d": 1})]
    (tmp_path / JOURNAL).write_text("\n".join(lines) + "\n")
    size = (tmp_path / JOURNAL).stat().st_size
    devices = Collection(tmp_path)
    assert devices.keys() == ["sensor-1"] and devices.get("sensor-1") == {"version": 2499}
    assert journal_lines(tmp_path) == ['{"k":"sensor-1","v":{"version":2499}}']
    assert (tmp_path / JOURNAL).stat().st_size < size / 1000


def test_old_per_record_files_are_migrated_into_the_journal(tmp_path):
    for key, value in [("sensor-1", twin(1)), ("sensor/2 ü", twin(2))]:
        write_json_atomic(tmp_path / store._file_name(key), {"_key": key, "value": value})
    (tmp_path / ".c2Vuc29yLTM.json.0123abcd.tmp").write_text('{"_key": "sens')  # a write cut short by a crash
    devices = Collection(tmp_path)
    assert devices.keys() == ["sensor-1", "sensor/2 ü"] and devices.get("sensor/2 ü") == twin(2)
    assert [path.name for path in tmp_path.iterdir()] == [JOURNAL]
    devices.delete("sensor-1")
    assert reopened(devices).keys() == ["sensor/2 ü"]  # the old file does not bring it back


def test_get_returns_a_copy_and_put_stores_one(tmp_path):
    devices = Collection(tmp_path)
    record = twin(1)
    devices.put("sensor-1", record)
    record["twin"]["tags"]["n"] = "changed by the caller after put"
    record["device"].clear()
    got = devices.get("sensor-1")
    got["twin"]["tags"]["n"] = "changed by the caller after get"
    got["twin"]["desired"]["x"] = [1, 2]
    assert devices.get("sensor-1") == twin(1)
    assert reopened(devices).get("sensor-1") == twin(1)


def test_concurrent_puts_from_several_threads_all_survive_a_reopen(tmp_path):
    devices = Collection(tmp_path)
    start = threading.Barrier(8)

    def writer(thread: int) -> None:
        start.wait()
        for n in range(400):
            devices.put(f"t{thread}-{n:03d}", twin(n))
            devices.put("shared", {"thread": thread, "n": n})
            if n % 2:
                devices.delete(f"t{thread}-{n - 1:03d}")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = sorted([f"t{t}-{n:03d}" for t in range(8) for n in range(1, 400, 2)] + ["shared"])
    assert devices.keys() == expected
    shared = devices.get("shared")
    again = reopened(devices)
    assert again.keys() == expected and again.get("shared") == shared
    assert all(json.loads(line) for line in journal_lines(tmp_path))  # no interleaved lines


def test_hub_store_keeps_a_journal_per_collection(tmp_path):
    hub = HubStore(tmp_path)
    hub.devices.put("sensor-1", twin(1))
    hub.outbox.put("event-1", {"event": {}})
    hub.outbox.delete("event-1")
    again = HubStore(tmp_path)
    assert again.devices.keys() == ["sensor-1"] and len(again.outbox) == 0 and len(again.configurations) == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["configurations", "devices", "outbox"]

"""The tuned registry manager: one keep-alive pool per hub for every thread (shared/iothub/clients.py), with the
retry policy that leaves 429/5xx to shared/retry.py. msrest keeps a session per thread unless told otherwise; this
pins the private layout the tuning relies on, so an SDK upgrade that changes it fails here, not in production."""

from __future__ import annotations

import threading

from azure.iot.hub import IoTHubRegistryManager

from shared.iothub.clients import POOL_SIZE, tuned

CONNECTION = ("HostName=hub.example.azure-devices.net;SharedAccessKeyName=service;"
              "SharedAccessKey=" + "a2V5" * 11)


def sessions_seen(manager, threads: int = 4) -> set[int]:
    driver = manager.protocol.config.pipeline._sender.driver
    seen: set[int] = set()
    lock = threading.Lock()

    def look() -> None:
        with lock:
            seen.add(id(driver.session))

    workers = [threading.Thread(target=look) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return seen


def test_every_thread_shares_one_session_with_a_pool_sized_for_the_workers():
    manager = tuned(IoTHubRegistryManager.from_connection_string(CONNECTION))
    seen = sessions_seen(manager)
    assert len(seen) == 1
    adapter = manager.protocol.config.pipeline._sender.driver.session.get_adapter("https://hub.example")
    assert adapter._pool_maxsize == POOL_SIZE
    assert adapter.max_retries.status == 0 and adapter.max_retries.respect_retry_after_header is False


def test_untuned_msrest_gives_each_thread_its_own_session():
    seen = sessions_seen(IoTHubRegistryManager.from_connection_string(CONNECTION))
    assert len(seen) == 4

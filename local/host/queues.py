"""Queue triggers: poll Azure Storage queues (Azurite locally) and handle poison messages like the host.

The Storage extension's QueueListener/QueueProcessor behaviour, with host.json extensions.queues:
- receive up to batchSize messages, hidden for 10 minutes while they run (the listener's own lease;
  host.json visibilityTimeout is not the receive timeout but the delay before a failed message retries);
- a message already dequeued more than maxDequeueCount times goes to `{queue}-poison` unprocessed;
- messageEncoding base64 (default): a message that is not valid base64 goes to the poison queue at once;
- success -> delete; failure -> poison (copy, then delete) once dequeueCount >= maxDequeueCount, else
  made visible again after visibilityTimeout;
- the poison queue is created when first needed; the poison copy keeps the message text as stored;
- polling backs off exponentially from 100 ms to maxPollingInterval while the queue is empty.
Extra here: the watched queue is created if missing (the real listener just waits for it).
Simplification: a batch is awaited as a whole before the next receive (no newBatchThreshold overlap).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
from collections.abc import Mapping
from datetime import timedelta

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage
from azure.storage.queue import ExponentialRetry, QueueClient
from azure.storage.queue import QueueMessage as StorageMessage

from local.azurite import connection_string as azurite_connection_string
from local.host.invocation import Invoker
from local.host.loader import FunctionSpec
from local.host.settings import QueueOptions, resolve_setting_references

log = logging.getLogger("local.host")

DEFAULT_CONNECTION = "AzureWebJobsStorage"
RECEIVE_VISIBILITY = timedelta(minutes=10)
MIN_POLLING_INTERVAL = timedelta(milliseconds=100)
_QUEUE_NAME = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")


def storage_connection_string(setting: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The connection string a binding's `connection` names; the host also tries the AzureWebJobs prefix."""
    name = setting or DEFAULT_CONNECTION
    value = environ.get(name) or environ.get(f"AzureWebJobs{name}")
    if not value:
        raise ValueError(f"Storage account connection string '{name}' does not exist. Make sure that it is a "
                         "defined App Setting (identity-based connections are not supported by this dev host).")
    if value.replace(" ", "").lower().startswith("usedevelopmentstorage=true"):
        return azurite_connection_string()
    return value


def queue_name_for(spec: FunctionSpec, environ: Mapping[str, str] = os.environ) -> str:
    name = resolve_setting_references(str(spec.trigger.get("queueName", "")), environ)
    if not _QUEUE_NAME.match(name):
        raise ValueError(f"Function {spec.name}: invalid queue name '{name}' (3-63 lower-case letters, digits "
                         "and single hyphens)")
    return name


class QueueListener:
    def __init__(self, spec: FunctionSpec, queue_name: str, connection_string: str, options: QueueOptions,
                 invoker: Invoker):
        self.spec = spec
        self.queue_name = queue_name
        self.poison_queue_name = f"{queue_name}-poison"
        self.options = options
        self._invoker = invoker
        # Few, quick retries: a local emulator is either up or not, and a long SDK retry loop would hold
        # shutdown (threads running storage calls are joined at exit).
        client_options = {"retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=2),
                          "connection_timeout": 5}
        self._queue = QueueClient.from_connection_string(connection_string, queue_name, **client_options)
        self._poison = QueueClient.from_connection_string(connection_string, self.poison_queue_name,
                                                          **client_options)

    async def run(self) -> None:
        """Poll until cancelled. Storage errors are logged once and retried at the longest interval."""
        minimum = MIN_POLLING_INTERVAL.total_seconds()
        maximum = max(self.options.max_polling_interval.total_seconds(), minimum)
        delay, created, failing = minimum, False, False
        while True:
            try:
                if not created:
                    await asyncio.to_thread(_create_if_missing, self._queue)
                    created = True
                messages = await asyncio.to_thread(self._receive)
            except AzureError as exc:
                if not failing:
                    log.warning("Queue listener for %s (%s) cannot reach storage, retrying: %s",
                                self.spec.name, self.queue_name, exc)
                failing = True
                await asyncio.sleep(maximum)
                continue
            if failing:
                log.info("Queue listener for %s (%s) reached storage again", self.spec.name, self.queue_name)
                failing = False
            if not messages:
                await asyncio.sleep(delay)
                delay = min(delay * 2, maximum)
                continue
            delay = minimum
            await asyncio.gather(*(self._process(message) for message in messages))

    def _receive(self) -> list[StorageMessage]:
        pages = self._queue.receive_messages(messages_per_page=self.options.batch_size,
                                             max_messages=self.options.batch_size,
                                             visibility_timeout=int(RECEIVE_VISIBILITY.total_seconds()))
        return list(pages)

    async def _process(self, message: StorageMessage) -> None:
        try:
            await self._handle(message)
        except AzureError as exc:
            log.warning("Queue listener for %s: message %s: %s", self.spec.name, message.id, exc)

    async def _handle(self, message: StorageMessage) -> None:
        limit = self.options.max_dequeue_count
        if message.dequeue_count > limit:
            await self._to_poison(message)
            return
        try:
            body = self._decode(message.content)
        except (binascii.Error, ValueError):
            log.warning("Message decoding has failed! Check MessageEncoding settings. Queue '%s', message %s",
                        self.queue_name, message.id)
            await self._to_poison(message, reason="decoding failed")
            return
        trigger_value = QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count,
                                     expiration_time=message.expires_on, insertion_time=message.inserted_on,
                                     time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)
        result = await self._invoker.invoke(self.spec, trigger_value)
        if result.succeeded:
            await asyncio.to_thread(_delete, self._queue, message)
        elif message.dequeue_count >= limit:
            await self._to_poison(message)
        else:
            seconds = int(self.options.visibility_timeout.total_seconds())
            await asyncio.to_thread(_release, self._queue, message, seconds)

    def _decode(self, content: str | None) -> bytes:
        text = content or ""
        if self.options.message_encoding == "base64":
            return base64.b64decode(text, validate=True)
        return text.encode("utf-8")

    async def _to_poison(self, message: StorageMessage, reason: str | None = None) -> None:
        why = reason or f"Message has reached MaxDequeueCount of {self.options.max_dequeue_count}"
        log.warning("%s. Moving message to queue '%s'.", why, self.poison_queue_name)
        await asyncio.to_thread(_create_if_missing, self._poison)
        await asyncio.to_thread(self._poison.send_message, message.content)
        await asyncio.to_thread(_delete, self._queue, message)


def _create_if_missing(client: QueueClient) -> None:
    try:
        client.create_queue()
    except ResourceExistsError:
        pass


def _delete(client: QueueClient, message: StorageMessage) -> None:
    try:
        client.delete_message(message.id, message.pop_receipt)
    except ResourceNotFoundError:
        log.debug("Queue message %s was already gone", message.id)


def _release(client: QueueClient, message: StorageMessage, seconds: int) -> None:
    try:
        client.update_message(message.id, message.pop_receipt, visibility_timeout=seconds)
    except ResourceNotFoundError:
        log.debug("Queue message %s was already gone", message.id)

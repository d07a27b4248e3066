"""`make demo`: start the local stack (unless one is already up), show every component healthy, stop.

Later issues grow this into the full fleet onboarding demo (DPS simulator, devices, lifecycle).
"""

from __future__ import annotations

import logging
import sys
import time

from local.stack import Stack, StackError, health


def print_health(body: dict) -> None:
    components = body.get("components", {})
    width = max((len(n) for n in components), default=10)
    print(f"\n{'component':<{width}}  status  ms     reason")
    for name, c in components.items():
        print(f"{name:<{width}}  {c['status']:<6}  {c.get('durationMs', 0):>5.1f}  {c.get('reason', '')}")
    print(f"\noverall: {body.get('status')}")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("azure").setLevel(logging.WARNING)
    answer = health(timeout=2)
    stack = None
    started = time.monotonic()
    try:
        if answer is None:
            print("starting the local stack (Azurite, IoT Hub x3, Key Vault, Functions host)...", flush=True)
            stack = Stack()
            stack.start(host_to_console=False)
            answer = health()
            print(f"stack healthy after {time.monotonic() - started:.1f}s")
        else:
            print("using the local stack that is already running")
        status, body = answer
        print_health(body)
        return 0 if status == 200 else 1
    except StackError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    sys.exit(main())

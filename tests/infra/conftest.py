"""Fixtures for the offline infrastructure tests: a fake `az` + `sqlcmd` on PATH for infra/deploy.sh."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra.code_scan import REPO

FAKE = Path(__file__).with_name("fake_az.py")
DEPLOY = REPO / "infra" / "deploy.sh"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list[dict]

    @property
    def commands(self) -> list[str]:
        """Each call as its command words (`az deployment sub create`, `sqlcmd`)."""
        out = []
        for call in self.calls:
            words = [call["tool"]]
            for arg in call["argv"]:
                if arg.startswith("-"):
                    break
                words.append(arg)
            out.append(" ".join(words))
        return out

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


class FakeAzure:
    """A simulated subscription that deploy.sh talks to through the fake CLI tools."""

    def __init__(self, root: Path, functions: list[str]):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir()
        self.state_file = root / "state.json"
        self.log_file = root / "calls.jsonl"
        self.ca_dir = root / "ca"
        self.functions = functions
        for tool in ("az", "sqlcmd"):
            shim = self.bin / tool
            # -S: no site initialisation (each call starts in ~10 ms); fake_az adds site-packages itself when needed.
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{FAKE}" {tool} "$@"\n')
            shim.chmod(0o755)

    @property
    def state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def update(self, **values) -> None:
        state = self.state
        state.update(values)
        self.state_file.write_text(json.dumps(state))

    def run(self, *args: str, env: dict[str, str] | None = None) -> Run:
        self.log_file.write_text("")
        environ = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.root),
            "TMPDIR": str(self.root),
            "FAKE_AZ_STATE": str(self.state_file),
            "FAKE_AZ_LOG": str(self.log_file),
            "FAKE_AZ_FUNCTIONS": ",".join(self.functions),
            "DEPLOY_POLL_SECONDS": "0",
            "DEPLOY_POLL_ATTEMPTS": "2",
            "LANG": "C.UTF-8",
        }
        environ.update(env or {})
        argv = ["bash", str(DEPLOY), "-e", "demo", "-l", "westeurope", "--ca-dir", str(self.ca_dir), *args]
        done = subprocess.run(argv, capture_output=True, text=True, env=environ, timeout=120, check=False)
        calls = [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]
        return Run(done.returncode, done.stdout, done.stderr, calls)


@pytest.fixture
def fake_azure(tmp_path) -> FakeAzure:
    from tests.infra.code_scan import functions

    return FakeAzure(tmp_path, sorted(functions()))

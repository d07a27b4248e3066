"""Fixtures for the offline infrastructure tests: a fake `az` + `sqlcmd` (and, on request, `azd`) on PATH for
infra/deploy.sh."""

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


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "real_az_cli: feeds deploy.sh's az commands to the real Azure CLI (opt-in: AZ_REAL_CLI=1; installs "
        "azure-cli from PyPI into .local/azure-cli-venv)")


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

    def parsed(self, command: str) -> list[dict]:
        """The options the fake's parser read for each call of an az command path (dest -> value)."""
        return [call["args"] for call in self.calls if call.get("command") == command]

    @property
    def parse_errors(self) -> list[dict]:
        return [call for call in self.calls if "error" in call]


class FakeAzure:
    """A simulated subscription that deploy.sh talks to through the fake CLI tools."""

    def __init__(self, root: Path, functions: list[str]):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.state_file = root / "state.json"
        self.log_file = root / "calls.jsonl"
        self.ca_dir = root / "ca"
        self.functions = functions
        for tool in ("az", "sqlcmd"):
            self._shim(tool)

    def _shim(self, tool: str) -> None:
        shim = self.bin / tool
        # -S: no site initialisation (each call starts in ~10 ms); fake_az adds site-packages itself when needed.
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{FAKE}" {tool} "$@"\n')
        shim.chmod(0o755)

    def with_azd(self, environments: dict[str, dict[str, str]]) -> None:
        """An `azd` on PATH whose environments (name -> .env values) `azd env get-values` prints."""
        self._shim("azd")
        self.update(azd_env=environments)

    @property
    def state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def update(self, **values) -> None:
        state = self.state
        state.update(values)
        self.state_file.write_text(json.dumps(state))

    def environ(self) -> dict[str, str]:
        return {
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

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]

    def run(self, *args: str, env: dict[str, str] | None = None) -> Run:
        """deploy.sh against the fake. An az command line the real CLI's parser would refuse fails the test here,
        also where the script tolerates the failure (`|| true`, `2>/dev/null`)."""
        self.log_file.write_text("")
        argv = ["bash", str(DEPLOY), "-e", "demo", "-l", "westeurope", "--ca-dir", str(self.ca_dir), *args]
        done = subprocess.run(argv, capture_output=True, text=True, env={**self.environ(), **(env or {})},
                              timeout=120, check=False)
        run = Run(done.returncode, done.stdout, done.stderr, self.calls())
        assert not run.parse_errors, "az refused these command lines (exit 2):\n" + "\n".join(
            f"  az {' '.join(call['argv'])}\n    ERROR: {call['error']}" for call in run.parse_errors)
        return run

    def az(self, *argv: str, parse_only: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
        """One call of the fake az, and what it recorded."""
        self.log_file.write_text("")
        env = {**self.environ(), "FAKE_AZ_PARSE_ONLY": "1" if parse_only else "0"}
        done = subprocess.run([str(self.bin / "az"), *argv], capture_output=True, text=True, env=env, timeout=30,
                              check=False)
        (call,) = self.calls()
        return done, call


@pytest.fixture
def fake_azure(tmp_path) -> FakeAzure:
    from tests.infra.code_scan import functions

    return FakeAzure(tmp_path, sorted(functions()))

"""OPT-IN (AZ_REAL_CLI=1): deploy.sh's core `az` command lines through the REAL Azure CLI's parser.

azure-cli (PyPI) goes into its own throwaway venv, .local/azure-cli-venv, the first time (about a minute and
700 MB; not in requirements-dev.txt). AZ_REAL_CLI_VENV puts it elsewhere; AZ_REAL_CLI_SPEC pins it
(e.g. azure-cli==2.91.0; another spec reinstalls). The command lines are the script's own, quoting and all: those
it issued in runs against the fake that between them take every branch (tests/infra/scenarios.py). The commands of
the azure-iot extension (`iot dps enrollment-group ...`) are not on PyPI and stay with the fake's parser, which
follows the extension's source.

No credentials, no network: the CLI gets an empty config dir (not your login), an empty extension dir, proxies on a
closed loopback port, and tests/infra/real_az_parse.py stops each invocation as soon as the parser has accepted it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.infra.code_scan import REPO
from tests.infra.conftest import FakeAzure, Run
from tests.infra.fake_az import COMMANDS, GLOBAL, from_extension
from tests.infra.scenarios import deploy_script_commands, every_path, real_csrs, root_ca

pytestmark = [
    pytest.mark.real_az_cli,
    pytest.mark.skipif(os.environ.get("AZ_REAL_CLI") != "1",
                       reason="opt-in: AZ_REAL_CLI=1 installs azure-cli from PyPI into .local/azure-cli-venv"),
    pytest.mark.timeout(1800),
]

VENV = Path(os.environ.get("AZ_REAL_CLI_VENV") or REPO / ".local" / "azure-cli-venv")
SPEC = os.environ.get("AZ_REAL_CLI_SPEC") or "azure-cli"
DRIVER = Path(__file__).with_name("real_az_parse.py")
CLOSED_PORT = "http://127.0.0.1:9"  # discard: nothing listens, so any request fails at once, on this machine
CORE = sorted(command for command in COMMANDS if not from_extension(command))
# What azure-cli prints when its parser refuses a line (argparse and knack wording).
PARSE_ERRORS = ("unrecognized arguments", "the following arguments are required", "is not a valid value for",
                "invalid choice", "expected one argument", "expected at least one argument", "ambiguous option",
                "misspelled or not recognized")


class RealCli:
    def __init__(self, python: Path, home: Path):
        self.python = python
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", ""), "HOME": str(home), "LANG": "C.UTF-8",
            "AZURE_CONFIG_DIR": str(home / "azure"), "AZURE_EXTENSION_DIR": str(home / "cliextensions"),
            "AZURE_CORE_COLLECT_TELEMETRY": "false", "AZURE_CORE_NO_COLOR": "true",
            "AZURE_CORE_SURVEY_MESSAGE": "false",
            **{name: CLOSED_PORT for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")},
            "NO_PROXY": "", "no_proxy": "",
        }
        self.version = subprocess.run([str(python), "-c", "import azure.cli.core; print(azure.cli.core.__version__)"],
                                      capture_output=True, text=True, check=True).stdout.strip()

    def call(self, mode: str, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), str(DRIVER), mode, *argv], capture_output=True, text=True,
                              env=self.env, timeout=300, check=False)

    def refusal(self, argv: list[str]) -> str | None:
        """None when the real parser accepts the line, else what the CLI said."""
        done = self.call("parse", argv)
        if done.returncode == 0 and done.stdout.startswith("PARSED"):
            return None
        if done.returncode == 2 or any(message in done.stderr for message in PARSE_ERRORS):
            return done.stderr.strip() or f"exit {done.returncode}"
        return None  # got past the parser (the hook did not fire) and failed later, e.g. "Please run 'az login'"


def rotation_runs(root: Path, functions: list[str]) -> list[Run]:
    """The CA rotation's command lines (docs/ca-rotation.md) after a deployment: stage 1 waiting for the offline root
    and then with it, stage 1 again (done), stage 2."""
    fake = FakeAzure(root / "rotation", functions)
    sign = ("--sign-with-root", *map(str, root_ca(fake.root)))
    fake.update(csr_b64=real_csrs())
    return [fake.run(*sign), fake.run("--rotate-ca", "west"), fake.run("--rotate-ca", "west", *sign),
            fake.run("--rotate-ca", "west"), fake.run("--promote-ca", "west")]


def install() -> Path:
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if python.exists() and marker.exists() and marker.read_text().strip() == SPEC:
        return python
    shutil.rmtree(VENV, ignore_errors=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", SPEC],
                          capture_output=True, text=True, timeout=1500, check=False)
    if done.returncode:
        pytest.fail(f"pip install {SPEC} into {VENV} failed:\n{done.stderr[-3000:]}")
    marker.write_text(f"{SPEC}\n")
    print(f"\n{SPEC} installed into {VENV} in {time.monotonic() - started:.0f} s")
    return python


@pytest.fixture(scope="module")
def real_cli(tmp_path_factory) -> RealCli:
    return RealCli(install(), tmp_path_factory.mktemp("real-az-home"))


@pytest.fixture(scope="module")
def core_command_lines(tmp_path_factory) -> dict[str, list[list[str]]]:
    """Every distinct core az command line deploy.sh issued in the runs that take all its branches (and in the CA
    rotation's)."""
    from tests.infra.code_scan import functions

    lines: dict[str, list[list[str]]] = {}
    root = tmp_path_factory.mktemp("deploy-runs")
    for run in [*every_path(root, sorted(functions())), *rotation_runs(root, sorted(functions()))]:
        assert run.returncode == 0, run.output
        for call in run.calls:
            command = call.get("command")
            if command in CORE and call["argv"] not in lines.setdefault(command, []):
                lines[command].append(call["argv"])
    return lines


def test_the_real_cli_refuses_what_its_parser_refuses(real_cli):
    # The check can fail: an unknown option, a missing required option, a bad choice.
    assert "unrecognized arguments: --no-such-option" in real_cli.refusal(["account", "show", "--no-such-option"])
    assert "the following arguments are required" in real_cli.refusal(
        ["keyvault", "certificate", "download", "--vault-name", "kv", "--name", "ca"])
    assert "is not a valid value for '--encoding'" in real_cli.refusal(
        ["keyvault", "certificate", "download", "--vault-name", "kv", "--name", "ca", "--file", "f", "-e", "CER"])
    assert real_cli.refusal(["account", "show", "--query", "id", "-o", "tsv"]) is None


def test_every_core_az_command_line_of_deploy_sh_parses_with_the_real_cli(real_cli, core_command_lines):
    in_script = {command for command in deploy_script_commands() if command in CORE}
    assert set(core_command_lines) == in_script, f"not exercised: {sorted(in_script - set(core_command_lines))}"
    argvs = [argv for lines in core_command_lines.values() for argv in lines]
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        refusals = dict(zip(map(tuple, argvs), pool.map(real_cli.refusal, argvs), strict=True))
    refused = {" ".join(argv): message for argv, message in refusals.items() if message}
    assert not refused, f"azure-cli {real_cli.version} refuses:\n" + "\n".join(
        f"  az {line}\n    {message}" for line, message in refused.items())
    print(f"\nazure-cli {real_cli.version} parsed {len(argvs)} command lines of {len(in_script)} core commands")


@pytest.mark.parametrize("command", CORE)
def test_the_fake_models_each_core_command_as_the_real_parser_does(real_cli, command):
    done = real_cli.call("describe", command.split())
    assert done.returncode == 0, done.stderr
    real = {option: action for action in json.loads(done.stdout) for option in action["options"]}
    mismatches = []
    for flags, kwargs in (*COMMANDS[command][1], *GLOBAL):
        action = real.get(flags[0])
        if action is None:
            mismatches.append(f"{flags[0]}: not an option of the real command")
            continue
        fake = {"aliases": set(flags) <= set(action["options"]),
                "nargs": kwargs.get("nargs", 0 if kwargs.get("action") == "store_true" else None),
                "required": bool(kwargs.get("required")),
                "choices": sorted(c.lower() for c in kwargs["choices"]) if kwargs.get("choices") else None}
        actual = {"aliases": True, "nargs": action["nargs"], "required": action["required"],
                  "choices": sorted(c.lower() for c in action["choices"]) if action["choices"] else None}
        if fake != actual:
            mismatches.append(f"{'/'.join(flags)}: fake {fake}, real {actual} ({action['options']})")
    assert not mismatches, f"azure-cli {real_cli.version}, az {command}:\n  " + "\n  ".join(mismatches)


def test_the_fake_prints_tsv_and_applies_queries_as_the_real_cli(real_cli):
    # knack's format_tsv and jmespath from the real CLI's venv, on the fake's cases: a fake that printed a flat list
    # as one row hid that deploy.sh read `--query "[a, b]" -o tsv` as one tab-separated line.
    from tests.infra.fake_az import search, tsv
    from tests.infra.test_fake_az import TSV_CASES

    script = (
        "import json, sys, jmespath\n"
        "from knack.output import format_tsv\n"
        "from knack.util import CommandResultItem\n"
        "cases, queries, doc = json.load(sys.stdin)\n"
        "print(json.dumps([[format_tsv(CommandResultItem(r)) if r is not None else '' for r in cases],\n"
        "                  [jmespath.search(q, doc) for q in queries]]))\n")
    doc = {"id": "s", "user": {"name": "n", "type": "t"}, "properties": {"outputs": {"A": {"value": 1}}}}
    queries = ["[id, user.name, user.type]", "[[id, user.name, user.type]]", "properties.outputs.[[A.value, B.value]]",
               "[customAllocationDefinition.webhookUrl, iotHubs]"]
    cases = [result for result, _printed in TSV_CASES]
    done = subprocess.run([str(real_cli.python), "-c", script], input=json.dumps([cases, queries, doc]),
                          capture_output=True, text=True, env=real_cli.env, check=True)
    printed, searched = json.loads(done.stdout)
    assert [tsv(result) for result in cases] == [text.removesuffix("\n") for text in printed]
    assert [search(doc, query) for query in queries] == searched

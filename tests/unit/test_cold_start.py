"""What each function loads at its cold start: none of the provider SDKs, nor the template engine.

A cold start pays for every module the handler's import pulls in. google-auth, PyJWT, msal and
cryptography (Gmail, Outlook and the OAuth sign-ins), jinja2 (notices, pages and sequence steps) and
flufl.bounce (bounces) are loaded where they are used, the first time: no function needs one to
start, and most invocations need none (bench/bench_cold_start.py measures the difference).

Each handler module is imported in a new interpreter with the environment template.yaml gives its
function, as Lambda imports it; a library loaded there fails the test, with the chain of imports
that reached it. The last test plants a wrong import, so a check that stopped seeing any would fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from local.cfn import function_environment, placeholder_stack, resources_of_type
from tests.template import PARAMETERS, PUBLIC_BASE_URL, REGION, TEMPLATE

ROOT = Path(__file__).resolve().parents[2]
LOADED_LATER = ("google.auth", "google.oauth2", "jwt", "msal", "cryptography", "jinja2", "flufl.bounce")
FUNCTIONS = resources_of_type(TEMPLATE, "AWS::Serverless::Function")
# Both sign-ins configured, so the reconnect function builds both authorizers, as it would deployed.
CLIENT_IDS = {"GoogleClientId": "1234567890-test.apps.googleusercontent.com", "MicrosoftClientId": "00000000-test"}


def environment(function_logical_id: str) -> dict[str, str]:
    stack = placeholder_stack(TEMPLATE, prefix="test", parameters=PARAMETERS | CLIENT_IDS)
    env = function_environment(TEMPLATE, function_logical_id, stack)
    env.pop("SENDWELL_PUBLIC_BASE_URL_PARAMETER")  # given, not read from SSM: the import calls nothing
    return env | {
        "SENDWELL_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",  # an AWS call at import would fail here, at once
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


def loaded_at_import(code_dir: Path, module: str, env: dict[str, str]) -> dict[str, list[str]]:
    """Each of LOADED_LATER that importing ``module`` loads, with the imports that reached it."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path[:0] = [{str(code_dir)!r}, {str(ROOT / "layers" / "sendwell")!r}]
        import {module}
        print(" ".join(name for name in {LOADED_LATER!r} if name in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # -X importtime lists each module after those it imported, indented one step deeper than its importer.
    rows = [
        (len(found[1]), found[2])
        for line in done.stderr.splitlines()
        if (found := re.match(r"import time:\s+\d+ \|\s+\d+ \|( *)(\S+)", line))
    ]
    chains: dict[str, list[str]] = {}
    for name in done.stdout.split():
        at = next(i for i, (_, loaded) in enumerate(rows) if loaded == name)
        chain, depth = [name], rows[at][0]
        for indent, importer in rows[at + 1 :]:
            if indent < depth:
                chain.append(importer)
                depth = indent
        chains[name] = chain[::-1]
    return chains


def handler_module(function_logical_id: str) -> tuple[Path, str]:
    properties = FUNCTIONS[function_logical_id]["Properties"]
    return ROOT / properties["CodeUri"], properties["Handler"].rsplit(".", 1)[0]


@pytest.mark.parametrize("function_logical_id", sorted(FUNCTIONS))
def test_a_cold_start_loads_no_provider_sdk_and_no_templates(function_logical_id: str) -> None:
    code_dir, module = handler_module(function_logical_id)
    loaded = loaded_at_import(code_dir, module, environment(function_logical_id))
    assert not loaded, "\n".join(" -> ".join(chain) for chain in loaded.values())


def test_the_check_sees_a_library_loaded_at_import(tmp_path: Path) -> None:
    code_dir, module = handler_module("DispatchFunction")
    planted = tmp_path / "dispatch"
    shutil.copytree(code_dir, planted, ignore=shutil.ignore_patterns("__pycache__"))
    handler = planted / f"{module}.py"
    handler.write_text(handler.read_text(encoding="utf-8") + "\nimport jinja2\n", encoding="utf-8")
    loaded = loaded_at_import(planted, module, environment("DispatchFunction"))
    assert list(loaded) == ["jinja2"]
    assert loaded["jinja2"][0] == module

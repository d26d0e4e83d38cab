"""The JavaScript client (rooms/static/rooms/collab-client.js) against the real server.

Runs Node's built-in test runner on tests/js/*.test.mjs with COLLAB_SERVER pointing at a
LiveServer. Needs Node.js 20+ and npm: skipped without them locally, failed without them in CI
(CI=true), where a quiet skip would hide that the client was never tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.server import PROJECT_ROOT, LiveServer

pytestmark = [pytest.mark.node, pytest.mark.e2e]

JS_TESTS = PROJECT_ROOT / "tests" / "js"
NPM_CI_TIMEOUT_S = 180
NODE_TEST_TIMEOUT_S = 180
# What `npm ci` installs (tests/js/package.json); any one missing means installing again.
REQUIRED_PACKAGES = ("ws", "ot-text-unicode")


def _node_tools() -> tuple[str, str]:
    """Paths of node and npm; without them a skip locally, a failure in CI."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = (
            "Node.js and npm are needed for the JavaScript client tests: install Node 20+ "
            "(e.g. `apt-get install nodejs npm`, or from https://nodejs.org) and rerun"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)")
        pytest.skip(message)
    return node, npm


def _output(result: subprocess.CompletedProcess[str] | subprocess.TimeoutExpired) -> str:
    def text(value: str | bytes | None) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else value or ""

    return f"--- stdout ---\n{text(result.stdout)}\n--- stderr ---\n{text(result.stderr)}"


def _install(npm: str) -> None:
    if all(
        (JS_TESTS / "node_modules" / name / "package.json").exists() for name in REQUIRED_PACKAGES
    ):
        return
    try:
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS_TESTS,
            capture_output=True,
            text=True,
            timeout=NPM_CI_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"`npm ci` in {JS_TESTS} took over {NPM_CI_TIMEOUT_S} s\n{_output(timeout)}")
    assert installed.returncode == 0, f"`npm ci` in {JS_TESTS} failed\n{_output(installed)}"


def test_js_client_against_the_live_server(tmp_path: Path) -> None:
    # Checked before the server starts: no point starting one for a skip.
    node, npm = _node_tools()
    _install(npm)
    with LiveServer(tmp_path / "server") as server:
        try:
            result = subprocess.run(
                [node, "--test", "tests/js/"],
                cwd=PROJECT_ROOT,
                env={**os.environ, "COLLAB_SERVER": server.http_url},
                capture_output=True,
                text=True,
                timeout=NODE_TEST_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as timeout:
            pytest.fail(f"node --test took over {NODE_TEST_TIMEOUT_S} s\n{_output(timeout)}")
        server_log = "".join(server.log[-200:])
    assert result.returncode == 0, (
        f"node --test tests/js/ failed (exit {result.returncode})\n{_output(result)}"
        f"\n--- server log (last lines) ---\n{server_log}"
    )

"""The committed CodeMirror bundle (rooms/static/rooms/vendor/codemirror.bundle.js) is exactly what
frontend/package-lock.json builds: `npm ci` then `node build.mjs --check` in frontend/.

Needs Node.js 20+ and npm: skipped without them locally, failed without them in CI (CI=true).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.e2e.server import PROJECT_ROOT

pytestmark = pytest.mark.node

FRONTEND = PROJECT_ROOT / "frontend"
NPM_CI_TIMEOUT_S = 180
BUILD_TIMEOUT_S = 60


def run(command: list[str], timeout: float) -> None:
    try:
        result = subprocess.run(
            command, cwd=FRONTEND, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{' '.join(command)}` in {FRONTEND} took over {timeout} s")
    assert result.returncode == 0, (
        f"`{' '.join(command)}` in {FRONTEND} failed (exit {result.returncode})\n"
        f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
    )


def test_committed_bundle_is_what_the_lock_file_builds() -> None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        message = "Node.js 20+ and npm are needed to check the bundle: `apt-get install nodejs npm`"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)")
        pytest.skip(message)
    # npm ci installs exactly the lock file (and starts from an empty node_modules).
    if not (FRONTEND / "node_modules" / ".package-lock.json").exists():
        run([npm, "ci", "--no-audit", "--no-fund"], NPM_CI_TIMEOUT_S)
    run([node, "build.mjs", "--check"], BUILD_TIMEOUT_S)

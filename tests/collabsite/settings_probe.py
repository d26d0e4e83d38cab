"""Read the settings a new process would get: started in a given folder with a given environment.

Settings are read once per process, at start-up, so each probe is a process of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.server import LiveServer

# Every variable collabsite/settings.py reads besides the DJANGO_ and COLLAB_ families: a probe
# starts from none of them, whatever the shell running the tests exported.
OTHER_SETTINGS_VARIABLES = {"DATABASE_URL", "REDIS_URL", "LOG_LEVEL", "STATIC_ROOT"}
PROBE_TIMEOUT_S = 60


def probe_env(env: dict[str, str]) -> dict[str, str]:
    """`env` on top of the test process's environment, minus every settings variable."""
    base = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DJANGO_", "COLLAB_", "TEST_SQLITE"))
        and name not in OTHER_SETTINGS_VARIABLES
    }
    return {**base, **env}


def settings_start(folder: Path, env: dict[str, str], *names: str) -> subprocess.CompletedProcess:
    """Load collabsite.settings in a process started in `folder` and print `names` as JSON."""
    code = (
        "import json, collabsite.settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {list(names)!r}}}, default=repr))"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=folder,
        env=probe_env(env),
        capture_output=True,
        text=True,
        timeout=PROBE_TIMEOUT_S,
    )


def settings_of(folder: Path, env: dict[str, str], *names: str) -> dict[str, Any]:
    """The settings `names` as such a process sees them; it must start."""
    started = settings_start(folder, env, *names)
    assert started.returncode == 0, started.stderr
    return json.loads(started.stdout.strip().splitlines()[-1])


def start_refused(folder: Path, env: dict[str, str]) -> str:
    """The error of a process that must refuse to start with `env`."""
    started = settings_start(folder, env, "DEBUG")
    assert started.returncode != 0, f"it started: {started.stdout}"
    return started.stderr.strip().splitlines()[-1]


def unconfigured_server(data_dir: Path, project_root: Path) -> LiveServer:
    """A runserver in `project_root` on SQLite in `data_dir`, with no other setting from the
    environment: what a user's shell with nothing exported would start."""
    server = LiveServer(data_dir, project_root=project_root)
    server.env = probe_env({"DATABASE_URL": server.env["DATABASE_URL"], "PYTHONUNBUFFERED": "1"})
    return server

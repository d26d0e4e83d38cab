"""collab-client.js's Authorship must compute exactly what rooms/history/authorship.py computes:
the page keeps it up to date from the ops, and shows it next to the server's blame.

Seeded random histories (ASCII, line breaks, non-BMP emoji; several authors) run through both;
the JavaScript side also starts from the server's encoding halfway, as a page does when it loads
the authorship. Needs Node.js: skipped without it locally, failed without it in CI (CI=true).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess

import pytest

from rooms import ot
from rooms.history.authorship import Authorship
from tests.e2e.server import PROJECT_ROOT
from tests.rooms.test_authorship import random_op

pytestmark = pytest.mark.node

CLIENT = PROJECT_ROOT / "rooms" / "static" / "rooms" / "collab-client.js"
NODE_TIMEOUT_S = 120
# Reads {"histories": [{"initial", "changes": [[text before, op, author]], "half"}]}; prints, per
# history, the encoding after all changes: straight through, and from the Python encoding at
# `half` on.
SCRIPT = """
import {Authorship} from %s;
let input = "";
for await (const chunk of process.stdin) input += chunk;
const results = JSON.parse(input).histories.map(({initial, changes, half, halfway}) => {
  const straight = Authorship.initial(initial, 0);
  let resumed = Authorship.decode(halfway);
  changes.forEach(([before, op, author], index) => {
    straight.apply(before, op, author, index + 1, index + 1);
    if (index >= half) resumed.apply(before, op, author, index + 1, index + 1);
  });
  return {straight: straight.encode(), resumed: resumed.encode()};
});
process.stdout.write(JSON.stringify(results));
"""


def node() -> str:
    path = shutil.which("node")
    if path is None:
        message = "Node.js is needed to compare collab-client.js's Authorship with the server's"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true, so this is a failure, not a skip)")
        pytest.skip(message)
    return path


def test_the_client_keeps_authorship_exactly_as_the_server_does():
    node_path = node()
    histories, expected = [], []
    for seed in range(40):
        rng = random.Random(seed)
        initial = rng.choice(["", "a😀b\n", "x\ny\nz", "é\n\n"])
        text, authorship = initial, Authorship.initial(initial, ts=0)
        changes, half = [], rng.randint(0, 60)
        halfway = authorship.encode()
        for number in range(1, 121):
            op = ot.normalize(random_op(rng, text))
            author = rng.choice(["alice", "bob", "carol", "dave"])
            changes.append([text, op, author])
            authorship.apply(text, op, author=author, version=number, ts=number)
            text = ot.apply(text, op)
            if number == half:
                halfway = authorship.encode()
        histories.append({"initial": initial, "changes": changes, "half": half, "halfway": halfway})
        expected.append(authorship.encode())
    completed = subprocess.run(
        [node_path, "--input-type=module", "-e", SCRIPT % json.dumps(CLIENT.as_uri())],
        input=json.dumps({"histories": histories}).encode("ascii"),
        capture_output=True,
        timeout=NODE_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode("utf-8", "replace")[-3000:]
    results = json.loads(completed.stdout)
    for seed, (result, python) in enumerate(zip(results, expected, strict=True)):
        assert result["straight"] == python, seed
        assert result["resumed"] == python, seed

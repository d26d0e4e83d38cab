"""The README's commands and the requirements files agree with what the code needs and CI runs."""

from __future__ import annotations

import ast
import re

from tests.e2e.server import PROJECT_ROOT

SERVER_PACKAGES = ("collabsite", "rooms", "autocomplete")
# Modules of requirements-dev.txt, which the quick start does not install.
DEV_ONLY_MODULES = {"httpx", "playwright", "pytest_env", "ruff"}


def readme_command(section: str) -> str:
    """The first shell command block under the README heading `section`."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    body = readme.split(f"\n## {section}\n", 1)[1]
    return re.search(r"```sh\n(.+?)\n```", body, re.S).group(1)


def test_ci_runs_the_readme_test_command_as_written():
    command = readme_command("Tests")
    assert "requirements-dev.txt" in command and "pytest" in command
    assert command in (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()


def test_the_quick_start_installs_the_server_requirements_and_the_tests_the_dev_ones():
    assert "-r requirements.txt" in readme_command("Quick start")
    dev = (PROJECT_ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "-r requirements.txt" in dev
    server = (PROJECT_ROOT / "requirements.txt").read_text().lower()
    for package in ("playwright", "ruff", "httpx", "pytest-env"):
        assert f"\n{package}==" not in server, f"{package} is for tests only"


def test_the_server_code_imports_nothing_only_the_tests_install():
    for package in SERVER_PACKAGES:
        for source in (PROJECT_ROOT / package).rglob("*.py"):
            tree = ast.parse(source.read_text(), filename=str(source))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    assert name.split(".")[0] not in DEV_ONLY_MODULES, f"{source}: {name}"

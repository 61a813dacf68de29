"""The pinned environment: pyproject.toml, environment.yml, the Makefile and
what is installed must all name the same exact versions."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml  # a dependency of papermill, so always present

REPO_ROOT = Path(__file__).resolve().parents[1]

OPTIONAL_EXTRAS = {"torchvision"}  # extras that are not installed by default
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(===|==|>=|<=|~=|!=|>|<)?\s*([^;\s]*)\s*(;.*)?$")


def normalise(name: str) -> str:
    """PEP 503 normalised project name (``Huggingface_Hub`` -> ``huggingface-hub``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_requirement(req: str) -> tuple[str, str, str]:
    """``(normalised name, operator, version)`` of a requirement string."""
    match = PIN.match(req)
    assert match, f"cannot parse requirement {req!r}"
    name, op, version, _marker = match.groups()
    return normalise(name), op or "", version


def pins(reqs: list[str]) -> dict[str, str]:
    """Name -> version of exact pins; fails on any requirement that is not ``==``."""
    out: dict[str, str] = {}
    for req in reqs:
        name, op, version = parse_requirement(req)
        assert op == "==", f"{req!r} is not pinned with =="
        assert name not in out, f"{name} is pinned twice"
        out[name] = version
    return out


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def conda_env() -> dict:
    return yaml.safe_load((REPO_ROOT / "environment.yml").read_text())


def conda_pip_lines(env: dict) -> list[str]:
    """The entries of environment.yml's ``pip:`` section."""
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "environment.yml needs exactly one pip: section"
    return [str(line) for line in sections[0]]


def pyproject_pins(project: dict, extras: tuple[str, ...] = ("test",)) -> dict[str, str]:
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    return pins(reqs)


def test_every_pyproject_requirement_is_an_exact_pin(pyproject):
    project = pyproject["project"]
    pins(project["dependencies"])
    for extra, reqs in project["optional-dependencies"].items():
        pins(reqs)


def test_test_tools_are_an_extra_not_a_dependency(pyproject):
    project = pyproject["project"]
    names = set(pins(project["dependencies"]))
    assert {"pytest", "nbval", "pytest-xdist"}.isdisjoint(names)
    assert set(pins(project["optional-dependencies"]["test"])) == {"pytest", "nbval", "pytest-xdist"}
    assert "torchvision" not in names


def test_environment_yml_pins_equal_pyproject_dependencies_plus_test_extra(pyproject, conda_env):
    lines = conda_pip_lines(conda_env)
    options = [line for line in lines if line.startswith("-")]
    assert "-e ." in options, "environment.yml must install the package itself (-e .)"
    conda_pins = pins([line for line in lines if not line.startswith("-")])
    assert conda_pins == pyproject_pins(pyproject["project"])


def test_environment_yml_python_matches_requires_python(pyproject, conda_env):
    assert "python=3.11" in conda_env["dependencies"]
    assert pyproject["project"]["requires-python"] == ">=3.11"
    assert "pip" in conda_env["dependencies"]


def test_makefile_installs_the_pinned_torch_first(pyproject):
    torch = pyproject_pins(pyproject["project"])["torch"]
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.findall(r"torch==([^\s\"']+)", makefile) == [torch]


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_installed_versions_equal_the_pins(pyproject):
    """Local labels are ignored as pip does: ``2.13.0+cpu`` satisfies ``==2.13.0``."""
    project = pyproject["project"]
    wanted = pyproject_pins(project, tuple(project["optional-dependencies"]))
    optional = {n for e in OPTIONAL_EXTRAS for n in pins(project["optional-dependencies"][e])}
    wrong = {}
    for name, version in wanted.items():
        got = installed_version(name)
        if got is None and name in optional:
            continue
        if got is None or got.split("+")[0] != version:
            wrong[name] = (version, got)
    assert not wrong, f"installed versions differ from the pins (pin, installed): {wrong}"

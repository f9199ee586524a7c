"""Packaging: pyproject.toml and requirements.txt agree, the version has one source, and the package builds
and installs offline into a fresh virtual environment whose ``backdoor-lab`` command answers."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import backdoor_core
from backdoor_core import cli

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def _normalize(req: str) -> str:
    """``Name_X == 1.0`` -> ``name-x==1.0`` (PEP 503 name, no spaces)."""
    req = req.split("#", 1)[0].replace(" ", "").strip()
    m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(.*)", req)
    assert m, f"not a requirement: {req!r}"
    return re.sub(r"[-_.]+", "-", m.group(1)).lower() + m.group(2)


def requirement_sections(text: str) -> dict[str, list[str]]:
    """requirements.txt split by its ``# [section]`` header comments."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"#\s*\[(\w+)\]", line.strip())
        if header:
            current = header.group(1)
            sections.setdefault(current, [])
            continue
        req = line.split("#", 1)[0].strip()
        if not req:
            continue
        assert current is not None, f"requirements.txt line {line!r} comes before any # [section] header"
        sections[current].append(_normalize(req))
    return sections


def test_requirement_sections_parser():
    text = "# intro\n# [core] base\nfoo_bar==1.0  # why\n\n# note\nBaz>=2\n# [app]\nqux==3\n"
    assert requirement_sections(text) == {"core": ["foo-bar==1.0", "baz>=2"], "app": ["qux==3"]}
    with pytest.raises(AssertionError, match="before any"):
        requirement_sections("foo==1\n# [core]\n")


def test_requirements_txt_and_pyproject_pin_the_same_packages():
    sections = requirement_sections((ROOT / "requirements.txt").read_text(encoding="utf-8"))
    extras = PROJECT["optional-dependencies"]
    assert set(sections) == {"core", *extras}, "requirements.txt sections must be [core] plus pyproject's extras"
    assert sorted(sections["core"]) == sorted(_normalize(r) for r in PROJECT["dependencies"])
    for name, reqs in extras.items():
        assert sorted(sections[name]) == sorted(_normalize(r) for r in reqs), f"extra [{name}] differs"
    names = [re.match(r"[a-z0-9-]+", r).group(0) for reqs in sections.values() for r in reqs]
    assert len(names) == len(set(names)), "a package is listed in two sections"
    assert "torch==2.13.0" in sections["core"]  # the CPU wheel: never an unpinned torch
    assert {"app", "test"} <= set(extras)


def test_version_has_one_source():
    assert PROJECT["dynamic"] == ["version"] and "version" not in PROJECT
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, name = attr.rsplit(".", 1)
    assert getattr(importlib.import_module(module), name) is backdoor_core.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([abc]|rc)?\d*", backdoor_core.__version__)


def test_console_entry_point_resolves_and_prints_help(monkeypatch, capsys):
    target = PROJECT["scripts"]["backdoor-lab"]
    module, func = target.split(":")
    main = getattr(importlib.import_module(module), func)
    assert main is cli.main
    monkeypatch.setattr(sys, "argv", ["/usr/bin/backdoor-lab"])
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: backdoor-lab ")
    for verb in cli.COMMANDS:
        assert verb in out
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"backdoor-lab {backdoor_core.__version__}"
    monkeypatch.setattr(sys, "argv", ["/x/backdoor_core/__main__.py"])
    assert cli.build_parser().prog == "python -m backdoor_core"


def _copy_source(dest: Path) -> None:
    """What the build needs, copied so the build writes nothing into the checkout (egg-info, build/)."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "backdoor_core", dest / "backdoor_core",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "assets" / "zoo", dest / "assets" / "zoo")


@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None,
                    reason="setuptools is not installed (requirements.txt [test] pins it)")
def test_wheel_builds_offline_and_installs_a_working_command(tmp_path):
    src, dist, venv = tmp_path / "src", tmp_path / "dist", tmp_path / "venv"
    src.mkdir()
    _copy_source(src)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(dist), str(src)], check=True, env=env, cwd=tmp_path, timeout=300)
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.startswith(f"backdoor_attention_lab-{backdoor_core.__version__}-")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(info).decode()
        entry_points = z.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert re.search(r"^backdoor-lab\s*=\s*backdoor_core\.cli:main$", entry_points, re.M)
    assert f"\nVersion: {backdoor_core.__version__}\n" in metadata
    requires = {_normalize(line.split(":", 1)[1].split(";")[0]): line for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")}
    for req in PROJECT["dependencies"]:
        assert "extra ==" not in requires[_normalize(req)]
    for extra, reqs in PROJECT["optional-dependencies"].items():
        assert f"Provides-Extra: {extra}" in metadata
        for req in reqs:
            assert f'extra == "{extra}"' in requires[_normalize(req)]
    for module in ("backdoor_core/cli.py", "backdoor_core/commands/scan.py", "backdoor_core/baselines/pure.py",
                   "backdoor_core/model_readme.py", "backdoor_core/_version.py"):
        assert module in names
    assert not [n for n in names if n.startswith(("tests/", "app_pages/", "bench/"))]

    # A fresh venv that sees the installed dependencies but not this checkout.
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(bindir / "python"), "install", "--no-deps",
                    "--no-index", "-q", str(wheel)], check=True, env=env, cwd=tmp_path, timeout=300)
    run = dict(env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    where = subprocess.run([str(bindir / "python"), "-c", "import backdoor_core; print(backdoor_core.__file__)"],
                           **run)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr
    helped = subprocess.run([str(bindir / "backdoor-lab"), "--help"], **run)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: backdoor-lab ")
    for verb in cli.COMMANDS:
        assert verb in helped.stdout
    # the demo zoo came with the wheel: listed as shipped, from the venv, with the checkout's card numbers
    from backdoor_core import zoo

    zoo_env = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    zoo_env.pop(zoo.SHIPPED_ENV, None)
    listed = subprocess.run([str(bindir / "backdoor-lab"), "zoo", "list"], **{**run, "env": zoo_env})
    assert listed.returncode == 0, listed.stderr
    first = listed.stdout.splitlines()[0]
    assert "(shipped)" in first and str(venv / "share" / "backdoor-attention-lab" / "zoo") in first, first
    shipped = json.loads((ROOT / "assets" / "zoo" / "manifest.json").read_text())["models"]
    for name in shipped:
        card = json.loads((ROOT / "assets" / "zoo" / name / "backdoor_lab.json").read_text())
        row = next(line.split() for line in listed.stdout.splitlines() if line.split()[:1] == [name])
        assert f"{100 * card['cacc']:.1f}%" in row, (name, row)

"""The container image recipe and the kind config. No Docker engine runs where the suite runs, so the image is
checked by building the wheel it installs, installing it as the image does (no extra) into a fresh venv, and by
reading the Dockerfile; the README has the real build steps."""

import base64
import csv
import hashlib
import io
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from importlib import metadata

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXTRA_ONLY = ("kmock", "jsonschema", "celpy", "rich")  # what only the sandbox extra installs


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("wheel")
    # built from a copy of the sources, as the image's build stage sees them: an in-tree build/ left by an earlier
    # build (of files since moved or removed) would otherwise end up in the wheel
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "operator", src / "operator",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(folder), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return next(folder.glob("tfgrid_operator-*.whl"))


def test_the_wheel_the_image_installs_builds_and_holds_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(ROOT / "operator")) for p in (ROOT / "operator" / "tfgrid_operator").rglob("*.py")}
    assert sources <= names, sources - names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_dockerfile_is_pinned_small_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases
    assert all(re.search(r":\d+\.\d+\.\d+-slim", b) for b in bases), "base images pinned to a patch release"
    user = re.findall(r"^USER (\d+)", text, re.M)
    assert user and user[-1] != "0"
    # the chart's pod runs as the image's user
    assert f"runAsUser: {user[-1]}" in (ROOT / "charts" / "tfgrid-operator" / "templates" / "deployment.yaml").read_text()
    assert "*.whl" in text and 'ENTRYPOINT ["tfgrid-operator"]' in text
    installs = re.findall(r"/venv/bin/pip install (.*)", text)
    assert installs and all(re.fullmatch(r"(--\S+ )*/wheels/\*\.whl", i.strip()) for i in installs), \
        "the image installs the wheel with no extra"


def test_kind_config_is_a_kind_cluster():
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert cfg["name"] == "tfgrid" and cfg["nodes"][0]["role"] == "control-plane"


def _requires(meta_text: str) -> list[Requirement]:
    return [Requirement(r) for r in Parser().parsestr(meta_text).get_all("Requires-Dist") or []]


def _closure(requirements: list[Requirement]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``requirements`` need, followed down their own requirements as pip resolves
    them: a requirement behind an ``extra == …`` marker only where that extra was asked for."""
    extras: dict[str, set[str]] = {}
    found: dict[str, metadata.Distribution] = {}
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in extras and set(req.extras) <= extras[name]:
            continue
        asked = extras.setdefault(name, set())
        asked.update(req.extras)
        found[name] = dist = metadata.distribution(req.name)
        todo += [r for r in _requires(dist.read_text("METADATA") or "")
                 if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("", *asked))]
    return found


def _repack(dist: metadata.Distribution, folder: pathlib.Path) -> None:
    """An installed distribution as the wheel it was installed from (its files and dist-info, a fresh RECORD), so
    that pip can install it offline: this machine's package index does not hold every dependency."""
    info = next(str(f).split("/")[0] for f in dist.files or [] if str(f).split("/")[0].endswith(".dist-info"))
    tags = [line.split(":", 1)[1].strip().split("-") for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag:")]
    tag = "-".join(".".join(sorted({t[i] for t in tags})) for i in range(3))
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    record, buf = [], io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for f in dist.files or []:
            path, where = str(f), pathlib.Path(dist.locate_file(f))
            if path.startswith("..") or path.endswith(".pyc") or not where.is_file() or \
                    path in (f"{info}/RECORD", f"{info}/INSTALLER", f"{info}/REQUESTED", f"{info}/direct_url.json"):
                continue
            data = where.read_bytes()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append((path, f"sha256={digest}", str(len(data))))
        lines = io.StringIO()
        csv.writer(lines).writerows([*record, (f"{info}/RECORD", "", "")])
        z.writestr(f"{info}/RECORD", lines.getvalue())
    (folder / f"{name}-{dist.version}-{tag}.whl").write_bytes(buf.getvalue())


def test_the_wheel_without_extras_runs_the_operator_and_carries_no_sandbox(wheel, tmp_path):
    """`pip install tfgrid-operator` (no extra), as the image installs it, into a fresh venv and offline: the
    operator's commands work, the sandbox's dependencies are not there and `sandbox` says how to get them."""
    meta = zipfile.ZipFile(wheel).read(next(n for n in zipfile.ZipFile(wheel).namelist()
                                            if n.endswith(".dist-info/METADATA"))).decode()
    needed = _closure([r for r in _requires(meta) if r.marker is None or r.marker.evaluate({"extra": ""})])
    assert not {canonicalize_name(m) for m in ("kmock", "jsonschema", "rich", "cel-python")} & set(needed)
    deps = tmp_path / "deps"
    deps.mkdir()
    for dist in needed.values():
        _repack(dist, deps)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-index", "--no-compile",
                          "--find-links", str(deps), str(wheel)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)

    exe, python = str(venv / "bin" / "tfgrid-operator"), str(venv / "bin" / "python")
    for args in ([exe, "--help"], [exe, "run", "--help"], [exe, "sandbox", "--help"]):
        done = run(*args)
        assert done.returncode == 0 and "Usage:" in done.stdout, (args, done.stdout, done.stderr)
    # every module of the operator imports (the sandbox's are the extra's; __main__ would run the CLI)
    done = run(python, "-c", "import importlib, pkgutil, tfgrid_operator as t; [importlib.import_module(m.name) for m "
                             "in pkgutil.walk_packages(t.__path__, 'tfgrid_operator.') "
                             "if not m.name.startswith(('tfgrid_operator.sandbox', 'tfgrid_operator.__main__'))]; "
                             f"print([n for n in {EXTRA_ONLY!r} if importlib.util.find_spec(n)])")
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    done = run(exe, "sandbox", "--days", "1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines() == ["Error: the sandbox needs: pip install 'tfgrid-operator[sandbox]'"], done.stderr

"""The container image recipe and the kind config. No Docker engine runs where the suite runs, so the image is
checked by building the wheel it installs and by reading the Dockerfile; the README has the real build steps."""

import pathlib
import re
import subprocess
import sys
import zipfile

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_wheel_the_image_installs_builds_and_holds_every_module(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    wheel = next(tmp_path.glob("tfgrid_operator-*.whl"))
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


def test_kind_config_is_a_kind_cluster():
    cfg = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    assert cfg["kind"] == "Cluster" and cfg["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert cfg["name"] == "tfgrid" and cfg["nodes"][0]["role"] == "control-plane"

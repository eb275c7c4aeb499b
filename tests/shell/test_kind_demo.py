"""scripts/kind-demo.sh cannot run here (no Docker engine); what can be checked offline is: it parses, it says
CI does not run it, it needs only kind, docker, kubectl and helm, and what it installs and applies exists."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "kind-demo.sh"


def test_it_parses_and_is_honest_about_ci():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    text = SCRIPT.read_text()
    assert "NOT run by CI" in text and "Needs only kind, docker, kubectl and helm" in text


def test_it_needs_only_the_four_tools():
    text = SCRIPT.read_text()
    assert "for tool in kind docker kubectl helm; do" in text
    # nothing of this project runs on the host: the CLI (keys, node agents, ledger) runs in the image or the pod
    host_lines = [line for line in text.splitlines() if re.match(r"\s*(tfgrid-operator|python|pip|\.venv|curl)\b", line)]
    assert not host_lines, host_lines
    for path in ("kind-config.yaml", "charts/tfgrid-operator", "examples", "Dockerfile"):
        assert (ROOT / path).exists()

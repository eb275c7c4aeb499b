"""What the README tells a newcomer holds: its layer list is the import-linter contract."""

from __future__ import annotations

import pathlib
import re
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_readme_layer_list_is_the_import_linter_contract():
    contract = next(c for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
                    if c["type"] == "layers")
    expected = [re.sub(r"tfgrid_operator\.", "", layer) for layer in contract["layers"]]
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## How it is built", 1)[1].split("```", 2)[1]
    listed = [re.split(r"\s{2,}", line.strip())[0] for line in block.splitlines() if line and not line.startswith(" ")]
    assert listed == expected

"""Write crds/*.yaml (what users apply) and the chart's byte-identical copy, rendered from the api models
(tfgrid_operator.api.crds).

Run: python scripts/generate_crds.py
"""

from __future__ import annotations

import pathlib
import sys

from tfgrid_operator.api import crds

ROOT = pathlib.Path(__file__).resolve().parent.parent


def main() -> None:
    for folder in (ROOT / "crds", ROOT / "charts" / "tfgrid-operator" / "crds"):
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in crds.render().items():
            (folder / name).write_text(text)
    print(f"wrote {len(crds.ALL)} CRDs", file=sys.stderr)


if __name__ == "__main__":
    main()

"""The sandbox end to end: examples applied to the real operator on the local emulator, a few days of grid
life, a summary whose status totals equal the ledger's. (The README's month-long run is timed by hand.)"""

import io
import pathlib

import pytest
from rich.console import Console

from tfgrid_operator import sandbox

ROOT = pathlib.Path(__file__).resolve().parents[2]


async def test_four_days_mint_and_bill_and_the_summary_matches_the_ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "unused"))  # the sandbox sets its own for the emulator
    out = io.StringIO()
    summary = await sandbox.run(days=4, examples=ROOT / "examples", console=Console(file=out, width=120))
    assert summary.matches
    assert summary.minted_ledger > 0 and summary.billed_ledger > 0  # one 3-day minting period settled
    assert summary.deployments == {"db": "Ready", "gateway": "Ready", "web": "Ready"}
    assert summary.proposals == {"cheaper-compute": "Open"}  # 7 days of voting
    text = out.getvalue()
    assert "status matches the ledger" in text and "freefarm" in text


def test_missing_examples_is_a_clear_error(tmp_path):
    with pytest.raises(sandbox.SandboxError, match="no examples folder"):
        sandbox.load_examples(tmp_path / "nope")
    (tmp_path / "farm.yaml").write_text("kind: Farm\nmetadata: {name: f}\nspec: {}\n")
    with pytest.raises(sandbox.SandboxError, match="has no Node"):
        sandbox.load_examples(tmp_path)

import pathlib
import subprocess
import sys
import typing

import yaml
from pydantic import BaseModel

ROOT = pathlib.Path(__file__).resolve().parents[2]
from tfgrid_operator import api  # noqa: E402
from tfgrid_operator.api import crds as generate_crds  # noqa: E402


def test_stdlib_operator_is_the_real_one():
    import operator

    assert hasattr(operator, "itemgetter") and "site-packages" not in (operator.__file__ or "")
    assert not (ROOT / "operator" / "__init__.py").exists()


def test_import_linter_contracts_hold():
    out = subprocess.run([str(pathlib.Path(sys.executable).parent / "lint-imports"), str(ROOT / "pyproject.toml")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_committed_crds_match_the_generator_and_the_chart_copy():
    for name, text in generate_crds.render().items():
        assert (ROOT / "crds" / name).read_text() == text, f"run scripts/generate_crds.py ({name} is stale)"
        assert (ROOT / "charts" / "tfgrid-operator" / "crds" / name).read_bytes() == (ROOT / "crds" / name).read_bytes()


def _models_in(annotation):
    """The pydantic models an annotation holds: X, X | None, list[X]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _agree(model, schema, where):
    """Every field of the model is in the schema and the other way round, at every depth."""
    if schema.get("type") == "array":
        schema = schema["items"]
    fields = {f.alias or n: f for n, f in model.model_fields.items()}
    assert set(schema["properties"]) == set(fields), where
    for name, field in fields.items():
        for sub in _models_in(field.annotation):
            _agree(sub, schema["properties"][name], f"{where}.{name}")


def test_crd_spec_and_status_fields_agree_with_pydantic_models():
    """The committed CRDs name the fields of the api models, spec and status, at every depth (crds.py renders
    them from the models; this also holds a hand edit of crds/ to account)."""
    assert {k.plural for k in api.KINDS} == set(generate_crds.ALL)
    for k in api.KINDS:
        crd = yaml.safe_load((ROOT / "crds" / f"grid.threefold.io_{k.plural}.yaml").read_text())
        props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
        _agree(k.spec, props["spec"], f"{k.plural}.spec")
        _agree(k.status, props["status"], f"{k.plural}.status")

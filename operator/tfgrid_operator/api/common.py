"""What every kind shares: the base models, the field types (names, keys, signatures, amounts, timestamps) with
their patterns and bounds, the conditions, the CEL rules a model declares once for the API server and the parser
both, the Kind a CRD is rendered from (crds.py), and the parse step.

A field's type, bounds, pattern, default, alias and description are written here or in the kind's module, once:
the parser validates with them and crds.py renders the CRD from them. Pure apart from pydantic (no kopf, no
Kubernetes client: an import-linter contract says so).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from tfgrid_operator.domain import names

GROUP = "grid.threefold.io"
VERSION = "v1alpha1"
RULES = "docs/grid-rules.md"  # the descriptions cite its sections: what `kubectl explain` shows points there

# json_schema_extra marker: the CRD declares this field's default, so the API server writes it into the object.
# Without it the default is the parser's alone (what an absent field means) and the stored object stays as written.
DEFAULTED = "x-tfgrid-defaulted"


def crd(*, default: bool = False, immutable: str | None = None, **markers: Any) -> dict[str, Any]:
    """What a field's CRD schema says beyond the model: ``default`` (the API server fills the model's default in),
    ``immutable`` (a CEL transition rule, ``self == oldSelf``, with this message: the API server answers 422 to a
    change; the parser never sees the old object), and ``x-kubernetes-*`` markers (underscores for dashes)."""
    out: dict[str, Any] = {"x-kubernetes-" + k.replace("_", "-"): v for k, v in markers.items()}
    if default:
        out[DEFAULTED] = True
    if immutable:
        out["x-kubernetes-validations"] = [{"rule": "self == oldSelf", "message": immutable}]
    return out


# ---------------------------------------------------------------- field types: one pattern, one bound each
# base64 of 32 bytes in its one canonical spelling: the 43rd character carries 4 bits and two zero bits, so it is
# one of 16. Exactly identity.is_public_key (a test checks both on the same texts), so the API server refuses what
# the parser and the ledger would.
ED25519_PATTERN = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"  # a condition's reason, as metav1.Condition has it


def _timestamp(text: str) -> str:
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("not an RFC 3339 date-time") from None
    if "T" not in text or parsed.tzinfo is None:
        raise ValueError("not an RFC 3339 date-time (date T time and a zone)")
    return text


PublicKey = Annotated[str, Field(pattern=ED25519_PATTERN)]  # a base64 ed25519 public key
# a Kubernetes object name (RFC 1123 label): a Farm, a Node, a Secret
Name = Annotated[str, Field(pattern=names.DNS_LABEL_PATTERN, max_length=63)]
# a ledger account name: lower case, so a base64 key pasted by mistake is refused, never stored or echoed
Account = Annotated[str, Field(pattern=names.ACCOUNT_PATTERN, min_length=1, max_length=names.ACCOUNT_MAX_LEN)]
Signature = Annotated[str, Field(min_length=1, max_length=128)]  # base64 ed25519 signature
PLACE_PATTERN = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses a NUL); RE2, as kube-apiserver
Place = Annotated[str, Field(max_length=64, pattern=PLACE_PATTERN)]  # a country or a city
Count = Annotated[int, Field(ge=0)]  # what the operator counts and writes: ids, nodes, seconds, TFT units
# an RFC 3339 date-time (the operator writes conditions.timestamp()'s form)
Timestamp = Annotated[str, AfterValidator(_timestamp), Field(json_schema_extra={"format": "date-time"})]


def tft(what: str) -> str:
    """The description of a TFT amount the operator writes: integer smallest units."""
    return f"{what}, in TFT smallest units (1 TFT = 10^7 units; {RULES} §0); written by the operator"


RESOURCE_UNITS = {"cru": "logical CPU cores", "mru": "memory, GiB", "sru": "SSD storage, GiB",
                  "hru": "HDD storage, GiB"}


def described_capacity(what: str) -> str:
    """The description of a {cru, mru, sru, hru} the operator writes (cores and GiB)."""
    return f"{what} (cru cores, mru/sru/hru GiB); written by the operator"


# ---------------------------------------------------------------- rules, base models
@dataclasses.dataclass(frozen=True)
class Rule:
    """One validation rule across fields, declared once: ``cel`` is what the API server evaluates (the object's
    ``x-kubernetes-validations``), ``holds`` the same predicate on the parsed model, ``message`` what both say.
    tests/shell/test_api_models.py evaluates both on the same objects."""

    cel: str
    holds: Callable[[Any], bool]
    message: str


def _rules_schema(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[Rule, ...] = getattr(cls, "rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [{"rule": r.cel, "message": r.message} for r in rules]


class SpecModel(BaseModel):
    """A spec or a part of one: what the user writes. Unknown fields are refused (the API server would prune
    them); values are taken as JSON types them (strict: "8" is no integer, as the API server has it); ``rules``
    are checked after the fields, all of them, as the API server reports every broken rule."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", frozen=True, strict=True,
                              json_schema_extra=_rules_schema)
    rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="after")
    def _rules_hold(self) -> Any:
        broken = [rule.message for rule in self.rules if not rule.holds(self)]
        if broken:
            raise ValueError("; ".join(broken))
        return self


class StatusModel(BaseModel):
    """A status or a part of one: what the operator writes, validated strictly (an int is an int, a field the
    model lacks is an error) before it is written. Every field may be absent, or None in a merge patch that
    removes it."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", strict=True)


class Condition(StatusModel):
    """one condition"""

    type: str = Field(max_length=316, description="the condition's type: Ready, Synced or Attested")
    status: Literal["True", "False", "Unknown"] = Field(
        description="whether the condition holds: True, False or Unknown")
    reason: str = Field(min_length=1, max_length=1024, pattern=REASON_PATTERN,
                        description="a CamelCase word for why the condition is in its status")
    message: str = Field(max_length=32768, description="what the operator has to say about it, for humans")
    last_transition_time: Timestamp = Field(alias="lastTransitionTime",
                                            description="when the status last changed (RFC 3339)")
    observed_generation: Count | None = Field(None, alias="observedGeneration",
                                              description="the metadata.generation the condition was set for")


def _one_per_type(conditions: list[Condition] | None) -> list[Condition] | None:
    """A map list keyed by type (x-kubernetes-list-type): the API server refuses two conditions of one type."""
    types = [c.type for c in conditions or ()]
    if len(set(types)) != len(types):
        raise ValueError(f"two conditions of one type: {sorted(t for t in set(types) if types.count(t) > 1)}")
    return conditions


class KindStatus(StatusModel):
    """The status fields every kind has: the conditions, observedGeneration, and kopf's own two."""

    conditions: Annotated[list[Condition] | None, AfterValidator(_one_per_type)] = Field(
        None, description="the standard Kubernetes conditions, written by the operator: Ready and Synced (and "
                          "Attested on a Node)", json_schema_extra=crd(list_type="map", list_map_keys=["type"]))
    observed_generation: Count | None = Field(
        None, alias="observedGeneration", description="the metadata.generation this status reflects; written by the "
                                                      "operator")
    last_handled_configuration: str | None = Field(
        None, alias="lastHandledConfiguration",
        description="the operator's (kopf's) record of the last spec it handled, which an update is diffed against")
    kopf: dict[str, Any] | None = Field(
        None, description="the operator's (kopf's) handler progress: retries and delays",
        json_schema_extra=crd(preserve_unknown_fields=True))


class Capacity(StatusModel):
    """Resources the operator writes, in cores and GiB."""

    cru: Count | None = Field(None, description=RESOURCE_UNITS["cru"])
    mru: Count | None = Field(None, description=RESOURCE_UNITS["mru"])
    sru: Count | None = Field(None, description=RESOURCE_UNITS["sru"])
    hru: Count | None = Field(None, description=RESOURCE_UNITS["hru"])


# ---------------------------------------------------------------- kinds
S = TypeVar("S", bound=Mapping[str, Any])


@dataclasses.dataclass(frozen=True)
class Column:
    """An additionalPrinterColumn of `kubectl get`."""

    name: str
    type: Literal["string", "integer", "date"]
    json_path: str
    description: str | None = None
    priority: int | None = None


# every kind's last columns: its conditions and age
COMMON_COLUMNS = (
    Column("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
    Column("Synced", "string", '.status.conditions[?(@.type=="Synced")].status'),
    Column("Reason", "string", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
    Column("Age", "date", ".metadata.creationTimestamp"),
)


class InvalidSpec(ValueError):
    """A spec the schema let through but the operator cannot use; the message names the fields."""


class InvalidStatus(ValueError):
    """A status the operator built that its model refuses: a bug, found before the API server prunes it."""


def _problems(exc: ValidationError, root: str) -> str:
    return "; ".join(f"{root}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"]
                     for e in exc.errors())


@dataclasses.dataclass(frozen=True)
class Kind:
    """A custom resource: its names, its spec and status models, its columns and description (crds.py renders
    its CRD from this)."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[SpecModel]
    status: type[KindStatus]
    columns: tuple[Column, ...]
    description: str

    def check_status(self, status: S) -> S:
        """The status (or a merge patch of it) unchanged, or InvalidStatus naming every field the model refuses."""
        try:
            self.status.model_validate(dict(status))
        except ValidationError as exc:
            raise InvalidStatus(f"{self.kind} {_problems(exc, 'status')}") from None
        return status


M = TypeVar("M", bound=BaseModel)


def parse(model: type[M], spec: Any) -> M:
    """Parse a spec; raise InvalidSpec with every problem in one line."""
    try:
        return model.model_validate(dict(spec) if isinstance(spec, Mapping) else {} if spec is None else spec)
    except ValidationError as exc:
        raise InvalidSpec(_problems(exc, "spec")) from None

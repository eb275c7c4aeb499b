"""The custom resources' API: one module per kind holding its Spec and Status models, common.py what they share.

The models are the one home of every field rule (type, bound, pattern, default, alias, description, CEL rule):
the operator parses specs and checks the statuses it writes with them, and crds.py renders the CRDs in crds/ from
them, so the API server and the parser cannot disagree. No kopf here (an import-linter contract).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from tfgrid_operator.api.common import (
    GROUP,
    VERSION,
    Condition,
    InvalidSpec,
    InvalidStatus,
    Kind,
    SpecModel,
    StatusModel,
    parse,
)
from tfgrid_operator.api.deployment import (
    DEPLOYMENT,
    DeploymentSpec,
    DeploymentStatus,
    GrantRef,
    Payer,
    Placement,
    RequestResources,
    SecretRef,
)
from tfgrid_operator.api.farm import FARM, FarmSpec, FarmStatus
from tfgrid_operator.api.node import NODE, Location, NodeResources, NodeSpec, NodeStatus
from tfgrid_operator.api.proposal import (
    PROPOSAL,
    FarmingChange,
    PricingChange,
    ProposalAction,
    ProposalSpec,
    ProposalStatus,
    SignedVeto,
    SignedVote,
)

__all__ = [
    "DEPLOYMENT", "FARM", "GROUP", "KINDS", "NODE", "PROPOSAL", "VERSION", "Condition", "DeploymentSpec",
    "DeploymentStatus", "FarmSpec", "FarmStatus", "FarmingChange", "GrantRef", "InvalidSpec", "InvalidStatus", "Kind",
    "Location", "NodeResources", "NodeSpec", "NodeStatus", "Payer", "Placement", "PricingChange", "ProposalAction",
    "ProposalSpec", "ProposalStatus", "RequestResources", "SecretRef", "SignedVeto", "SignedVote", "SpecModel",
    "StatusModel", "check_status", "kind", "parse",
]

KINDS = (FARM, NODE, DEPLOYMENT, PROPOSAL)
_BY_NAME = {name: k for k in KINDS for name in (k.kind, k.plural)}


def kind(name: str) -> Kind:
    """A kind by its name (Farm) or plural (farms)."""
    return _BY_NAME[name]


S = TypeVar("S", bound=Mapping[str, Any])


def check_status(kind_or_plural: str, status: S) -> S:
    """The choke point every status the operator writes passes: the status (or merge patch of it) unchanged, or
    InvalidStatus naming each field the kind's Status model refuses (unknown, ill-typed, out of bounds)."""
    return kind(kind_or_plural).check_status(status)

"""Names the grid keys money by, and the signed statements that bind them (pure).

An account name has the CRD's account pattern everywhere (schema, model, ledger), so a name the API server
would refuse can never be created through the CLI either. Two signed statements bind a key to Kubernetes
namespaces (design.md "Trust model"):

* a **payer grant**: the twin's key agrees that Deployments of one namespace may bill its account, until an
  expiry at most ``MAX_GRANT_S`` away;
* a **farm consent**: the farm owner's key agrees that one node (namespace, name and node key) of another
  namespace joins its farm.
"""

from __future__ import annotations

import dataclasses
import re

from tfgrid_operator.domain import identity

ACCOUNT_PATTERN = r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$"  # lower case: a pasted base64 key never passes
ACCOUNT_MAX_LEN = 64
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # a Kubernetes object or namespace name (RFC 1123 label)
DNS_LABEL = re.compile(DNS_LABEL_PATTERN)
GRANT = "tfgrid-payer-grant-v1"
FARM_CONSENT = "tfgrid-farm-consent-v1"
MAX_GRANT_S = 366 * 24 * 3600  # a grant lives a year at most: it always ends, even if no one revokes it

_ACCOUNT = re.compile(ACCOUNT_PATTERN)


def is_account_name(name: str) -> bool:
    return 0 < len(name) <= ACCOUNT_MAX_LEN and _ACCOUNT.match(name) is not None


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """The twin of ``account`` lets Deployments of ``namespace`` bill it until ``expires`` (unix seconds)."""

    account: str
    namespace: str
    expires: int
    signature: str = ""

    def payload(self) -> dict[str, object]:
        return {"account": self.account, "namespace": self.namespace, "expires": self.expires}

    def signed(self, key: identity.KeyPair) -> Grant:
        return dataclasses.replace(self, signature=key.sign(GRANT, self.payload()))

    def problem(self, *, public_key: str, namespace: str, now: int) -> str | None:
        """Why this grant does not let ``namespace`` spend the account at ``now`` (None: it does)."""
        if self.namespace != namespace:
            return f"the grant of account {self.account!r} is for another namespace"
        if self.expires <= now:
            return f"the grant of account {self.account!r} expired"
        if self.expires - now > MAX_GRANT_S:
            return f"the grant of account {self.account!r} lasts more than {MAX_GRANT_S // 86400} days"
        if not public_key:
            return f"account {self.account!r} has no twin key to verify a grant with"
        try:
            identity.verify(public_key, GRANT, self.payload(), self.signature)
        except identity.BadSignature:
            return f"the grant of account {self.account!r} is not signed by its twin key"
        return None


def consent_payload(*, farm: str, namespace: str, node: str, node_key: str) -> dict[str, object]:
    """What a farm owner signs to let a node of another namespace join the farm."""
    return {"farm": farm, "namespace": namespace, "node": node, "nodeKey": node_key}


def consent_holds(*, owner_key: str, farm: str, namespace: str, node: str, node_key: str, signature: str) -> bool:
    try:
        identity.verify(owner_key, FARM_CONSENT,
                        consent_payload(farm=farm, namespace=namespace, node=node, node_key=node_key), signature)
    except identity.BadSignature:
        return False
    return True

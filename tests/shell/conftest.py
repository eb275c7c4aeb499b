"""Fixtures the shell tests share."""

from __future__ import annotations

import pytest

from kube_emulator import Cluster


@pytest.fixture
async def tls(tmp_path, monkeypatch):
    """The strict emulator over HTTPS with our CRDs installed, and no in-cluster service account in sight."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    c = Cluster(tmp_path)
    await c.start()
    await c.install_crds()
    yield c
    await c.stop()


@pytest.fixture
async def cluster(tls, monkeypatch):
    """``tls`` with namespaces a and b, and KUBECONFIG naming it with a token user (as kind writes one)."""
    for ns in ("a", "b"):
        await tls.namespace(ns)
    monkeypatch.setenv("KUBECONFIG", str(tls.kubeconfig(tls.token_user())))
    return tls

import pytest

from tfgrid_operator.kube import client


@pytest.mark.parametrize("text", ["", "not: [a, kubeconfig", "apiVersion: v1\nkind: Config\ncontexts: []\n"])
def test_unusable_kubeconfig_is_a_clear_error(tmp_path, monkeypatch, text):
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(client.ConfigError, match="no usable cluster in kubeconfig"):
        client.KubeClient()


def test_missing_kubeconfig_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(client.ConfigError, match="absent"):
        client.KubeClient()

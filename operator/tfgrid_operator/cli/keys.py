"""`keygen`: ed25519 key files."""

from __future__ import annotations

import pathlib

import click

from tfgrid_operator.cli.app import main
from tfgrid_operator.domain import identity


@main.command(help="Create an ed25519 key file (base64 seed) and print its public key.")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=pathlib.Path))
def keygen(key_file: pathlib.Path) -> None:
    if key_file.exists():
        raise click.ClickException(f"{key_file} exists; refusing to overwrite a key")
    key = identity.KeyPair.generate()
    key_file.write_text(key.to_text() + "\n")
    key_file.chmod(0o600)
    click.echo(key.public_key)



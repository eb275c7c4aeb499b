"""`keygen`: ed25519 key files, created private from their first byte."""

from __future__ import annotations

import os
import pathlib

import click

from tfgrid_operator.cli.app import main
from tfgrid_operator.domain import identity

# O_EXCL: never overwrite (nor follow a planted symlink to) an existing path; O_NOFOLLOW: never a symlink even
# where O_EXCL alone would allow it; mode 0600 at creation: the seed is never readable by others, not for an instant
KEY_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def write_key_file(path: pathlib.Path, text: str) -> None:
    """Create ``path`` holding ``text``, mode 0600, or fail with a one-line ClickException (never overwrite)."""
    try:
        fd = os.open(path, KEY_FILE_FLAGS, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{path} exists (a file or a symlink); refusing to overwrite a key") from None
    except FileNotFoundError:
        raise click.ClickException(f"{path.parent} does not exist; create the folder first") from None
    except OSError as exc:
        raise click.ClickException(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)  # a umask can only remove bits; this states the mode whatever the umask
        os.write(fd, text.encode())
    finally:
        os.close(fd)


@main.command(help="Create an ed25519 key file (base64 seed, mode 0600) and print its public key.")
@click.argument("key_file", type=click.Path(dir_okay=False, path_type=pathlib.Path))
def keygen(key_file: pathlib.Path) -> None:
    key = identity.KeyPair.generate()
    write_key_file(key_file, key.to_text() + "\n")
    click.echo(key.public_key)

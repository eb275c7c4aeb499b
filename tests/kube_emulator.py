"""kmock's pytest plugin loads its server class from a top-level module: this one (see pyproject)."""

from tfgrid_operator.kube.emulator import StrictApiServer

__all__ = ["StrictApiServer"]

"""tfgrid-operator: a kopf operator that runs a ThreeFold-style grid declaratively."""

__version__ = "0.1.0"

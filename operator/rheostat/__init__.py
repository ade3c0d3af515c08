"""Rheostat: hyperparameter tuning as a Kubernetes resource, or on one machine.

Kept import-light on purpose: the trainer image imports `rheostat.lr_range` and must
not pull in Optuna, Kopf or the Kubernetes client.
"""

__version__ = "0.1.0"

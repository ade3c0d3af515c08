"""Backends turn the engine's actions into processes or Kubernetes objects."""

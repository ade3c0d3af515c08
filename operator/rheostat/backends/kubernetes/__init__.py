"""Kubernetes backend: the operator. The only package that talks to the Kubernetes API."""

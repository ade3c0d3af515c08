"""What a container's process sees: its environment and its argv, kubelet-style.

The node agent runs containers as local processes, so it has to do the kubelet's
share of the pod contract itself: ``env`` with downward-API ``fieldRef``s,
``resourceFieldRef``s, ConfigMap/Secret references, ``envFrom``, and ``$(VAR)``
expansion in values, command and args. Pure functions over the pod as a dict, apart
from the ConfigMap/Secret look-ups passed in as a callable.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Pod = dict[str, Any]
# (kind "configmap"|"secret", namespace, name) -> data (Secret values base64-decoded),
# or None when the object does not exist.
Lookup = Callable[[str, str, str], dict[str, str] | None]

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")
_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class EnvError(ValueError):
    """The container cannot start: a required reference does not resolve."""


def field_value(pod: Pod, path: str, pod_ip: str, host_ip: str) -> str:
    """Resolve a downward-API ``fieldRef.fieldPath`` against the pod."""
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple: dict[str, str] = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path]
    match = _SUBSCRIPT.match(path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise EnvError(f"unsupported fieldRef {path!r}")


def _quantity(value: str) -> float:
    suffixes = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
    }
    for suffix in sorted(suffixes, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * suffixes[suffix]
    return float(value)


def resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """``resourceFieldRef``: the request or limit, divided by the divisor, rounded up."""
    kind, _, name = str(ref["resource"]).partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        return "0"
    divisor = _quantity(str(ref.get("divisor") or "1"))
    return str(math.ceil(_quantity(str(raw)) / divisor))


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: unknown references stay, ``$$`` escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REF.sub(replace, text)


def _from_source(kind: str, ref: Mapping[str, Any], namespace: str, lookup: Lookup) -> str | None:
    data = lookup(kind, namespace, str(ref["name"]))
    key = str(ref["key"])
    if data is None or key not in data:
        if ref.get("optional"):
            return None
        raise EnvError(f"{kind} {ref['name']!r} has no key {key!r}")
    return data[key]


def container_env(
    pod: Pod, container: Mapping[str, Any], pod_ip: str, host_ip: str, lookup: Lookup
) -> dict[str, str]:
    """The container's own variables (``envFrom`` then ``env``), in declaration order."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            ref = source.get(key)
            if not ref:
                continue
            data = lookup(kind, namespace, str(ref["name"]))
            if data is None and not ref.get("optional"):
                raise EnvError(f"{kind} {ref['name']!r} not found")
            env.update({prefix + k: v for k, v in (data or {}).items()})
    for item in container.get("env") or []:
        name = str(item["name"])
        source = item.get("valueFrom")
        if source is None:
            env[name] = expand(str(item.get("value") or ""), env)
        elif "fieldRef" in source:
            env[name] = field_value(pod, str(source["fieldRef"]["fieldPath"]), pod_ip, host_ip)
        elif "resourceFieldRef" in source:
            env[name] = resource_value(container, source["resourceFieldRef"])
        elif "configMapKeyRef" in source:
            value = _from_source("configmap", source["configMapKeyRef"], namespace, lookup)
            if value is not None:
                env[name] = value
        elif "secretKeyRef" in source:
            value = _from_source("secret", source["secretKeyRef"], namespace, lookup)
            if value is not None:
                env[name] = value
        else:
            raise EnvError(f"unsupported valueFrom for {name!r}")
    return env


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded; there is no image entrypoint."""
    command = list(container.get("command") or [])
    if not command:
        raise EnvError("the node agent runs only containers with a command (it ignores images)")
    return [expand(str(part), env) for part in command + list(container.get("args") or [])]


def decode_secret(data: Mapping[str, str | bytes] | None) -> dict[str, str]:
    """Secret ``data`` values arrive base64-encoded."""
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in (data or {}).items()}

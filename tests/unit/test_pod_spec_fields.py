"""rheostat.pod_spec_fields is current: generated from the Kubernetes client's PodSpec.

`rheostat validate` must refuse a trial template the operator's client library would
refuse, without importing that library (the pure core knows no Kubernetes client;
see .importlinter in pyproject.toml). So the PodSpec's field names and JSON kinds
are written once into a plain module; this test regenerates it from the installed
client and fails when they differ. Regenerate with:

    python -m tests.unit.test_pod_spec_fields > operator/rheostat/pod_spec_fields.py
"""

from __future__ import annotations

import re
from pathlib import Path

import kubernetes
from kubernetes.client import V1PodSpec

from rheostat import pod_spec_fields

MODULE = Path(pod_spec_fields.__file__)
SCALARS = {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}


def _kind(openapi_type: str) -> tuple[str, str | None]:
    """(JSON kind, kind of the items for an array) of one client type name."""
    listed = re.fullmatch(r"[Ll]ist\[(.+)\]", openapi_type)
    if listed:
        return "array", _kind(listed.group(1))[0]
    return SCALARS.get(openapi_type, "object"), None


def generate() -> str:
    """The text of rheostat/pod_spec_fields.py for the installed client."""
    rows = []
    for name, openapi_type in V1PodSpec.openapi_types.items():
        kind, items = _kind(openapi_type)
        items_text = "None" if items is None else f'"{items}"'
        rows.append(f'    "{V1PodSpec.attribute_map[name]}": ("{kind}", {items_text}),')
    body = "\n".join(sorted(rows))
    return (
        '"""The fields of a Kubernetes PodSpec and their JSON kinds. Generated: do not edit.\n'
        "\n"
        f"From the Kubernetes Python client {kubernetes.__version__} (V1PodSpec), by\n"
        "tests/unit/test_pod_spec_fields.py, which fails when this file is stale. The\n"
        "pure spec module checks a trial template against it without importing the client.\n"
        '"""\n'
        "\n"
        "# field name -> (JSON kind, kind of an array's items or None)\n"
        f"POD_SPEC_FIELDS: dict[str, tuple[str, str | None]] = {{\n{body}\n}}\n"
    )


def test_the_pod_spec_fields_are_current() -> None:
    expected = generate()
    # The client's version line may differ by a patch release without a field change.
    strip = re.compile(r"client \S+ \(V1PodSpec\)")
    assert strip.sub("", MODULE.read_text()) == strip.sub("", expected), (
        "stale: python -m tests.unit.test_pod_spec_fields > operator/rheostat/pod_spec_fields.py"
    )


def test_every_kind_is_one_the_schema_knows() -> None:
    kinds = {"string", "integer", "boolean", "number", "object", "array"}
    for name, (kind, items) in pod_spec_fields.POD_SPEC_FIELDS.items():
        assert kind in kinds, name
        assert (items is not None) == (kind == "array"), name
    assert pod_spec_fields.POD_SPEC_FIELDS["containers"] == ("array", "object")
    assert pod_spec_fields.POD_SPEC_FIELDS["hostNetwork"] == ("boolean", None)


if __name__ == "__main__":
    print(generate(), end="")

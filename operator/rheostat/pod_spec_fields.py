"""The fields of a Kubernetes PodSpec and their JSON kinds. Generated: do not edit.

From the Kubernetes Python client 37.0.2 (V1PodSpec), by
tests/unit/test_pod_spec_fields.py, which fails when this file is stale. The
pure spec module checks a trial template against it without importing the client.
"""

# field name -> (JSON kind, kind of an array's items or None)
POD_SPEC_FIELDS: dict[str, tuple[str, str | None]] = {
    "activeDeadlineSeconds": ("integer", None),
    "affinity": ("object", None),
    "automountServiceAccountToken": ("boolean", None),
    "containers": ("array", "object"),
    "dnsConfig": ("object", None),
    "dnsPolicy": ("string", None),
    "enableServiceLinks": ("boolean", None),
    "ephemeralContainers": ("array", "object"),
    "evictionResponders": ("array", "object"),
    "hostAliases": ("array", "object"),
    "hostIPC": ("boolean", None),
    "hostNetwork": ("boolean", None),
    "hostPID": ("boolean", None),
    "hostUsers": ("boolean", None),
    "hostname": ("string", None),
    "hostnameOverride": ("string", None),
    "imagePullSecrets": ("array", "object"),
    "initContainers": ("array", "object"),
    "nodeName": ("string", None),
    "nodeSelector": ("object", None),
    "os": ("object", None),
    "overhead": ("object", None),
    "preemptionPolicy": ("string", None),
    "priority": ("integer", None),
    "priorityClassName": ("string", None),
    "readinessGates": ("array", "object"),
    "resourceClaims": ("array", "object"),
    "resources": ("object", None),
    "restartPolicy": ("string", None),
    "runtimeClassName": ("string", None),
    "schedulerName": ("string", None),
    "schedulingGates": ("array", "object"),
    "schedulingGroup": ("object", None),
    "securityContext": ("object", None),
    "serviceAccount": ("string", None),
    "serviceAccountName": ("string", None),
    "setHostnameAsFQDN": ("boolean", None),
    "shareProcessNamespace": ("boolean", None),
    "subdomain": ("string", None),
    "terminationGracePeriodSeconds": ("integer", None),
    "tolerations": ("array", "object"),
    "topologySpreadConstraints": ("array", "object"),
    "volumes": ("array", "object"),
}

{{/*
Expand the name of the chart.
*/}}
{{- define "rheostat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
Truncated at 63 characters because some Kubernetes name fields are limited to that.
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "rheostat.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, as used by the helm.sh/chart label.
*/}}
{{- define "rheostat.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "rheostat.labels" -}}
helm.sh/chart: {{ include "rheostat.chart" . }}
{{ include "rheostat.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rheostat
{{- end }}

{{/*
Selector labels.
*/}}
{{- define "rheostat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rheostat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
The name of the ServiceAccount to use.
*/}}
{{- define "rheostat.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "rheostat.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image reference.
*/}}
{{- define "rheostat.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The GP ask worker's image reference (gpWorker.image), pinned by digest when one is given.
*/}}
{{- define "rheostat.gpWorkerImage" -}}
{{- if .Values.gpWorker.image.digest }}
{{- printf "%s@%s" .Values.gpWorker.image.repository .Values.gpWorker.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.gpWorker.image.repository (.Values.gpWorker.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The rules the operator needs in every namespace it watches: exactly the verbs the
operator (kube.py) and Kopf (status, progress annotations, events) use.
*/}}
{{- define "rheostat.operatorRules" -}}
- apiGroups: ["rheostat.dev"]
  resources: ["tuningstudies"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["rheostat.dev"]
  resources: ["tuningstudies/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["rheostat.dev"]
  resources: ["tuningtrials"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["rheostat.dev"]
  resources: ["tuningtrials/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# The headless Service of a multi-pod trial (trialTemplate.replicas > 1).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.kueue.enabled }}
# Kueue's Workloads, read only: why a trial's Job waits for quota (TrialsQueued).
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list"]
{{- end }}
{{- end }}

{{/*
Cluster-scoped reads for Kopf's discovery: which CRDs exist, which namespaces exist.
Without them Kopf still runs, with a warning, and notices neither at runtime.
*/}}
{{- define "rheostat.discoveryRules" -}}
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/*
Namespaces the PodMonitor looks for trial pods in.
*/}}
{{- define "rheostat.podMonitorNamespaces" -}}
{{- if .Values.podMonitor.namespaces }}
{{- toYaml .Values.podMonitor.namespaces }}
{{- else if .Values.watchNamespaces }}
{{- toYaml .Values.watchNamespaces }}
{{- end }}
{{- end }}

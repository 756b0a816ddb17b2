{{/*
The worker's labels. Its own app.kubernetes.io/name ("<name>-worker") keeps its pods
out of the API's selectors (Service, PodDisruptionBudget, NetworkPolicy).
*/}}
{{- define "quartstack.worker.fullname" -}}
{{- printf "%s-worker" (include "quartstack.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quartstack.worker.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-worker" (include "quartstack.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "quartstack.worker.labels" -}}
helm.sh/chart: {{ include "quartstack.chart" . }}
{{ include "quartstack.worker.selectorLabels" . }}
app.kubernetes.io/part-of: {{ include "quartstack.name" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "quartstack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quartstack.fullname" -}}
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

{{- define "quartstack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "quartstack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quartstack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "quartstack.labels" -}}
helm.sh/chart: {{ include "quartstack.chart" . }}
{{ include "quartstack.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: quartstack
{{- end }}

{{- define "quartstack.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "quartstack.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "quartstack.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "quartstack.approleSecretName" -}}
{{- default (printf "%s-approle" (include "quartstack.fullname" .)) .Values.vault.approle.existingSecret }}
{{- end }}

{{/* Refuse settings that would cut in-flight requests at shutdown. */}}
{{- define "quartstack.validate" -}}
{{- $s := .Values.shutdown }}
{{- if le (int $s.terminationGracePeriodSeconds) (add (int $s.preStopSleepSeconds) (int $s.shutdownGraceSeconds)) }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%v) must be larger than preStopSleepSeconds + shutdownGraceSeconds (%v)" $s.terminationGracePeriodSeconds (add $s.preStopSleepSeconds $s.shutdownGraceSeconds)) }}
{{- end }}
{{- if and (eq .Values.vault.auth "approle") .Values.vault.address (not .Values.vault.approle.existingSecret) (not .Values.vault.approle.roleId) }}
{{- fail "vault.auth=approle needs vault.approle.existingSecret or vault.approle.roleId/secretId" }}
{{- end }}
{{- end }}

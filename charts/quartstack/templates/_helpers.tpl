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

{{/* Labels of the helm test pod: never the selector labels, so the Service, the PDB and
the NetworkPolicy do not take it for an application pod. */}}
{{- define "quartstack.testLabels" -}}
helm.sh/chart: {{ include "quartstack.chart" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: helm-test
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: quartstack
{{- end }}

{{/* TCP ports the pod connects to: Vault (from its address) and every configured backend
(Redis Cluster ports from backends.redis.nodes), one per line, sorted and unique. */}}
{{- define "quartstack.egressPorts" -}}
{{- $ports := dict }}
{{- with .Values.vault.address }}
{{- $url := urlParse . }}
{{- $hostport := splitList ":" $url.host }}
{{- if gt (len $hostport) 1 }}
{{- $_ := set $ports (last $hostport) true }}
{{- else }}
{{- $_ := set $ports (ternary "443" "80" (eq $url.scheme "https")) true }}
{{- end }}
{{- end }}
{{- range $name, $backend := .Values.backends }}
{{- if $backend.host }}
{{- $_ := set $ports (toString $backend.port) true }}
{{- end }}
{{- end }}
{{- range splitList "," .Values.backends.redis.nodes }}
{{- with trim . }}
{{- $_ := set $ports (last (splitList ":" .)) true }}
{{- end }}
{{- end }}
{{- range $port := keys $ports | sortAlpha }}
{{ $port }}
{{- end }}
{{- end }}

{{/* Refuse values that would cut in-flight requests at shutdown or kill pods that are
still starting. */}}
{{- define "quartstack.validate" -}}
{{- $s := .Values.shutdown }}
{{- /* the app exits within drain + grace + close after SIGTERM (quartstack.lifecycle);
the 2 s margin covers the interpreter's exit and signal delivery */}}
{{- $drain := float64 (default 1 .Values.config.SHUTDOWN_DRAIN_SECONDS) }}
{{- $needed := addf (float64 $s.preStopSleepSeconds) $drain (float64 $s.shutdownGraceSeconds) (float64 $s.closeSeconds) 2 }}
{{- if lt (float64 $s.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%v) must be at least shutdown.preStopSleepSeconds + config.SHUTDOWN_DRAIN_SECONDS + shutdown.shutdownGraceSeconds + shutdown.closeSeconds + 2 s margin (%v)" $s.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- $startup := .Values.probes.startup }}
{{- $budget := mul $startup.periodSeconds $startup.failureThreshold }}
{{- $timeout := float64 (default 60 .Values.config.STARTUP_TIMEOUT_SECONDS) }}
{{- if le (float64 $budget) $timeout }}
{{- fail (printf "probes.startup allows %vs (periodSeconds x failureThreshold), which must be longer than the app's STARTUP_TIMEOUT_SECONDS (%v)" $budget $timeout) }}
{{- end }}
{{- if and (eq .Values.vault.auth "approle") .Values.vault.address (not .Values.vault.approle.existingSecret) (not (and .Values.vault.approle.roleId .Values.vault.approle.secretId)) }}
{{- fail "vault.auth=approle needs vault.approle.existingSecret, or both vault.approle.roleId and vault.approle.secretId" }}
{{- end }}
{{- end }}

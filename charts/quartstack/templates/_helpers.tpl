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

{{/* Labels of the pod template: nothing that changes with the chart's version (a chart
bump alone must not restart every pod). */}}
{{- define "quartstack.podLabels" -}}
{{ include "quartstack.selectorLabels" . }}
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

{{/* The image by digest when one is given (the tag is then ignored), else by tag. */}}
{{- define "quartstack.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* One probe: the user's whole override, or an httpGet on the app's endpoint with the
probe's timing fields. Call with (dict "probe" .Values.probes.<name>). */}}
{{- define "quartstack.probe" -}}
{{- $p := .probe }}
{{- if $p.override }}
{{- toYaml $p.override }}
{{- else }}
httpGet:
  path: {{ $p.path }}
  port: http
{{- with $p.initialDelaySeconds }}
initialDelaySeconds: {{ . }}
{{- end }}
periodSeconds: {{ $p.periodSeconds }}
timeoutSeconds: {{ $p.timeoutSeconds }}
successThreshold: {{ default 1 $p.successThreshold }}
failureThreshold: {{ $p.failureThreshold }}
{{- end }}
{{- end }}

{{/* The container's lifecycle: the user's override, else a preStop sleep so endpoints drop
the pod before SIGTERM. The native sleep action (beta and on by default since Kubernetes
1.30) needs no sleep binary in the image; older clusters get exec sleep. */}}
{{- define "quartstack.lifecycle" -}}
{{- if .Values.lifecycle }}
{{- toYaml .Values.lifecycle }}
{{- else if .Values.shutdown.preStopSleepSeconds }}
preStop:
{{- if semverCompare ">=1.30-0" .Capabilities.KubeVersion.Version }}
  sleep:
    seconds: {{ .Values.shutdown.preStopSleepSeconds }}
{{- else }}
  exec:
    command: ["sleep", "{{ .Values.shutdown.preStopSleepSeconds }}"]
{{- end }}
{{- end }}
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
{{- with .Values.otel.endpoint }}
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
{{- /* a lifecycle override's own sleep counts instead of preStopSleepSeconds */}}
{{- $prestop := dig "preStop" "sleep" "seconds" $s.preStopSleepSeconds (.Values.lifecycle | default dict) }}
{{- $needed := addf (float64 $prestop) $drain (float64 $s.shutdownGraceSeconds) (float64 $s.closeSeconds) 2 }}
{{- if lt (float64 $s.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds (%v) must be at least the preStop sleep (shutdown.preStopSleepSeconds, or lifecycle.preStop.sleep.seconds) + config.SHUTDOWN_DRAIN_SECONDS + shutdown.shutdownGraceSeconds + shutdown.closeSeconds + 2 s margin (%v)" $s.terminationGracePeriodSeconds $needed) }}
{{- end }}
{{- $startup := .Values.probes.startup }}
{{- with $startup.override }}
{{- /* Kubernetes' defaults apply to fields the override leaves out */}}
{{- $startup = dict "periodSeconds" (default 10 .periodSeconds) "failureThreshold" (default 3 .failureThreshold) "initialDelaySeconds" (default 0 .initialDelaySeconds) }}
{{- end }}
{{- $budget := add (default 0 $startup.initialDelaySeconds) (mul $startup.periodSeconds $startup.failureThreshold) }}
{{- $timeout := float64 (default 60 .Values.config.STARTUP_TIMEOUT_SECONDS) }}
{{- if le (float64 $budget) $timeout }}
{{- fail (printf "probes.startup allows %vs (initialDelaySeconds + periodSeconds x failureThreshold), which must be longer than the app's STARTUP_TIMEOUT_SECONDS (%v)" $budget $timeout) }}
{{- end }}
{{- if and (hasKey .Values.service "nodePort") (not (kindIs "invalid" .Values.service.nodePort)) (eq .Values.service.type "ClusterIP") }}
{{- fail "service.nodePort needs service.type NodePort or LoadBalancer" }}
{{- end }}
{{- with .Values.strategy.rollingUpdate }}
{{- $surge := trimSuffix "%" (toString (default 0 .maxSurge)) }}
{{- $unavailable := trimSuffix "%" (toString (default 0 .maxUnavailable)) }}
{{- if and (eq $.Values.strategy.type "RollingUpdate") (eq $surge "0") (eq $unavailable "0") }}
{{- fail "strategy.rollingUpdate: maxSurge and maxUnavailable cannot both be 0 (the rollout could never replace a pod)" }}
{{- end }}
{{- end }}
{{- if and (eq .Values.dnsPolicy "None") (not .Values.dnsConfig.nameservers) }}
{{- fail "dnsPolicy None needs dnsConfig.nameservers" }}
{{- end }}
{{- if and (eq .Values.vault.auth "approle") .Values.vault.address (not .Values.vault.approle.existingSecret) (not (and .Values.vault.approle.roleId .Values.vault.approle.secretId)) }}
{{- fail "vault.auth=approle needs vault.approle.existingSecret, or both vault.approle.roleId and vault.approle.secretId" }}
{{- end }}
{{- end }}

{{/* The PDB's one budget line (minAvailable or maxUnavailable; maxUnavailable 1 when neither
is set), refusing a budget that would block every voluntary eviction: then `kubectl drain`
hangs on every node running a pod and cluster upgrades stall. The pod count that matters
is the lowest one: replicaCount, or autoscaling.minReplicas while the HPA owns it.
Percentages are rounded up, as the disruption controller does. */}}
{{- define "quartstack.pdbBudget" -}}
{{- $pdb := .Values.podDisruptionBudget }}
{{- $min := ternary "" (toString $pdb.minAvailable) (kindIs "invalid" $pdb.minAvailable) }}
{{- $max := ternary "" (toString $pdb.maxUnavailable) (kindIs "invalid" $pdb.maxUnavailable) }}
{{- $replicas := int (ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled) }}
{{- if and $min $max }}
{{- fail "podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- if and (not .Values.autoscaling.enabled) (eq $replicas 1) }}
{{- fail "podDisruptionBudget with replicaCount 1 blocks every node drain (or protects nothing): raise replicaCount, enable autoscaling or disable podDisruptionBudget" }}
{{- end }}
{{- if $min }}
{{- $needed := 0 }}
{{- if hasSuffix "%" $min }}
{{- $needed = int (ceil (divf (mul $replicas (atoi (trimSuffix "%" $min))) 100)) }}
{{- else }}
{{- $needed = atoi $min }}
{{- end }}
{{- if ge $needed $replicas }}
{{- fail (printf "podDisruptionBudget.minAvailable %s keeps all %d pods (%s) and blocks every node drain: lower it below the pod count, or use maxUnavailable" $min $replicas (ternary "autoscaling.minReplicas" "replicaCount" .Values.autoscaling.enabled)) }}
{{- end }}
minAvailable: {{ hasSuffix "%" $min | ternary ($min | quote) $min }}
{{- else if $max }}
{{- if eq (trimSuffix "%" $max) "0" }}
{{- fail (printf "podDisruptionBudget.maxUnavailable %s blocks every node drain: use 1 or more" $max) }}
{{- end }}
maxUnavailable: {{ hasSuffix "%" $max | ternary ($max | quote) $max }}
{{- else }}
maxUnavailable: 1
{{- end }}
{{- end }}

{{/*
The tracing environment of a pod: its name and namespace from the downward API (resource
attributes k8s.pod.name / k8s.namespace.name) and, when otel.serviceName is set, its
service.name (with the given suffix, e.g. "-worker").
*/}}
{{- define "quartstack.otelEnv" -}}
- name: K8S_POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: K8S_NAMESPACE_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with .root.Values.otel.serviceName }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "%s%s" . $.suffix | quote }}
{{- end }}
{{- end }}

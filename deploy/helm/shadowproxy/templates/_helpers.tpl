{{/* The chart's name, possibly overridden. */}}
{{- define "shadowproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release-qualified name of every object. */}}
{{- define "shadowproxy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shadowproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shadowproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shadowproxy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "shadowproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shadowproxy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "shadowproxy.configMapName" -}}
{{- default (include "shadowproxy.fullname" .) .Values.existingConfigMap -}}
{{- end -}}

{{- define "shadowproxy.configKey" -}}
{{- if .Values.existingConfigMap -}}{{ .Values.existingConfigMapKey }}{{- else -}}config.yaml{{- end -}}
{{- end -}}

{{/*
GOMEMLIMIT from resources.limits.memory: a Kubernetes quantity (binary or
decimal suffix, or bytes) times goMemLimitRatio, in bytes.
*/}}
{{- define "shadowproxy.goMemLimit" -}}
{{- $q := toString .Values.resources.limits.memory -}}
{{- $units := dict "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "K" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 -}}
{{- $num := regexFind "^[0-9.]+" $q -}}
{{- $unit := trimPrefix $num $q -}}
{{- if not $num -}}{{- fail (printf "resources.limits.memory %q is not a quantity" $q) -}}{{- end -}}
{{- $mult := 1.0 -}}
{{- if $unit -}}
{{- if not (hasKey $units $unit) -}}{{- fail (printf "resources.limits.memory %q: unknown unit %q (use Ki, Mi, Gi, K, M or G)" $q $unit) -}}{{- end -}}
{{- $mult = get $units $unit -}}
{{- end -}}
{{- mulf (float64 $num) $mult .Values.goMemLimitRatio | floor | int64 -}}
{{- end -}}

{{/* The proxy container, shared by both layouts. */}}
{{- define "shadowproxy.container" -}}
name: shadowproxy
image: {{ include "shadowproxy.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args: [run, -config, /etc/shadowproxy/{{ include "shadowproxy.configKey" . }}]
env:
  - name: ADMIN_TOKEN
    valueFrom:
      secretKeyRef: {name: {{ .Values.adminToken.existingSecret }}, key: {{ .Values.adminToken.key }}}
  {{- if .Values.resources.limits.memory }}
  - name: GOMEMLIMIT
    value: {{ include "shadowproxy.goMemLimit" . | quote }}
  {{- end }}
  {{- with .Values.env }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
ports:
  - {name: http, containerPort: {{ .Values.ports.http }}, protocol: TCP}
  - {name: admin, containerPort: {{ .Values.ports.admin }}, protocol: TCP}
readinessProbe:
  httpGet: {path: {{ .Values.probes.readiness.path }}, port: admin}
  periodSeconds: {{ .Values.probes.readiness.periodSeconds }}
  failureThreshold: {{ .Values.probes.readiness.failureThreshold }}
livenessProbe:
  httpGet: {path: {{ .Values.probes.liveness.path }}, port: admin}
  initialDelaySeconds: {{ .Values.probes.liveness.initialDelaySeconds }}
  periodSeconds: {{ .Values.probes.liveness.periodSeconds }}
  failureThreshold: {{ .Values.probes.liveness.failureThreshold }}
{{- if eq .Values.mode "sidecar" }}
startupProbe:
  httpGet: {path: {{ .Values.probes.startup.path }}, port: admin}
  periodSeconds: {{ .Values.probes.startup.periodSeconds }}
  failureThreshold: {{ .Values.probes.startup.failureThreshold }}
{{- else }}
lifecycle:
  preStop:
    sleep: {seconds: {{ .Values.preStopSleepSeconds }}}
{{- end }}
resources:
  {{- toYaml .Values.resources | nindent 2 }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - {name: shadowproxy-config, mountPath: /etc/shadowproxy, readOnly: true}
  - {name: shadowproxy-state, mountPath: /var/lib/shadowproxy}
{{- end -}}

{{- define "shadowproxy.volumes" -}}
- name: shadowproxy-config
  configMap: {name: {{ include "shadowproxy.configMapName" . }}}
- name: shadowproxy-state
  emptyDir: {sizeLimit: 16Mi}
{{- end -}}

{{- define "shadowproxy.podAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.ports.admin | quote }}
prometheus.io/path: /metrics
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

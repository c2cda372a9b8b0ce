{{/*
The few helpers of this chart: names, labels, the image, and the restricted container security
context every container shares. Everything else is spelled out in the templates.
*/}}

{{/* The chart's name, or nameOverride: app.kubernetes.io/name and the default suffix. */}}
{{- define "team-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* Base name of every object: fullnameOverride, else the release name when it contains the
name, else <release>-<name>. At most 50 characters, so suffixes such as -controller fit 63. */}}
{{- define "team-operator.fullname" -}}
{{- $name := include "team-operator.name" . -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "team-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
{{ include "team-operator.selectorLabels" . }}
{{- end -}}

{{/* Labels a Deployment, StatefulSet, Service, PDB or NetworkPolicy selects pods by. */}}
{{- define "team-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "team-operator.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* An image reference: repository@digest when a digest is given (it pins the content; the
tag is then ignored), else repository:tag. Call with (dict "image" <values> "tag" <default tag>). */}}
{{- define "team-operator.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .tag .image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "team-operator.image" -}}
{{- include "team-operator.imageRef" (dict "image" .Values.image "tag" .Chart.AppVersion) -}}
{{- end -}}

{{/* Pod metadata and placement of a component: call with (dict "ctx" $ "component" "controller"
"values" .Values.controller). Pod labels, then in the pod spec priorityClassName, nodeSelector,
tolerations, affinity and topologySpreadConstraints (default: spread over nodes, best effort). */}}
{{- define "team-operator.podLabels" -}}
{{- include "team-operator.selectorLabels" . }}
{{- with .values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "team-operator.podPlacement" -}}
{{- $v := .values -}}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml $v.topologySpreadConstraints | nindent 2 }}
{{- else }}
# Replicas on different nodes where there are several (ScheduleAnyway: one node still runs all).
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "team-operator.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end -}}

{{/* Restricted Pod Security Standard, container level. */}}
{{- define "team-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* TEAM_OPERATOR_REDIS_URL (and _CLUSTER) for the controller and the gateway. */}}
{{- define "team-operator.redisEnv" -}}
{{- $fullname := include "team-operator.fullname" . -}}
{{- if .Values.redis.bundled }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-redis" $fullname) .Values.redis.passwordSecret }}
      key: redis-password
- name: TEAM_OPERATOR_REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s-redis.%s.svc:6379" $fullname .Release.Namespace | quote }}
{{- else }}
- name: TEAM_OPERATOR_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-redis-url" $fullname) .Values.redis.existingSecret }}
      key: {{ if .Values.redis.existingSecret }}{{ .Values.redis.existingSecretKey }}{{ else }}redis-url{{ end }}
{{- if .Values.redis.cluster }}
- name: TEAM_OPERATOR_REDIS_CLUSTER
  value: "true"
{{- end }}
{{- end }}
{{- end -}}

{{/*
The message bus limits, for every process that sends (controller and gateway): the same values
on both, from .Values.messages.
*/}}
{{- define "team-operator.messagesEnv" -}}
{{- $m := .Values.messages -}}
- name: TEAM_OPERATOR_INBOX_MAX_ENTRIES
  value: {{ $m.inboxMaxEntries | int64 | quote }}
- name: TEAM_OPERATOR_INBOX_MAX_BYTES
  value: {{ $m.inboxMaxBytes | int64 | quote }}
- name: TEAM_OPERATOR_TEAM_MAX_BYTES
  value: {{ $m.teamMaxBytes | int64 | quote }}
- name: TEAM_OPERATOR_SEND_BURST
  value: {{ $m.sendBurst | int64 | quote }}
- name: TEAM_OPERATOR_SEND_RATE_PER_SECOND
  value: {{ $m.sendRatePerSecond | int64 | quote }}
{{- end -}}

{{/*
Trace export for both processes, from .Values.tracing; nothing when no endpoint is set.
*/}}
{{- define "team-operator.tracingEnv" -}}
{{- $t := .Values.tracing -}}
{{- if $t.otlpEndpoint -}}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $t.otlpEndpoint | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $t.sampler | quote }}
{{- with $t.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

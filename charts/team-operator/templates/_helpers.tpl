{{/*
The few helpers of this chart: names, labels, the image, and the restricted container security
context every container shares. Everything else is spelled out in the templates.
*/}}

{{/* Base name of every object: the release name, or <release>-team-operator. */}}
{{- define "team-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
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
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "team-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
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

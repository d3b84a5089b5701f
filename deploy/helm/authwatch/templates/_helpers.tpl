{{/* The chart name, or nameOverride. */}}
{{- define "authwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The base name of every object: fullnameOverride, or the release name
with the chart name appended unless it already contains it. */}}
{{- define "authwatch.fullname" -}}
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

{{- define "authwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "authwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "authwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "authwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: authwatch
{{- end }}

{{- define "authwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "authwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "authwatch.slackSecretName" -}}
{{- default (printf "%s-slack" (include "authwatch.fullname" .)) .Values.slack.existingSecret }}
{{- end }}

{{- define "authwatch.checkpointConfigMapName" -}}
{{- default (printf "%s-checkpoint" (include "authwatch.fullname" .)) .Values.checkpointConfigMapName }}
{{- end }}

{{- define "authwatch.leaseName" -}}
{{- default (include "authwatch.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The RoleBinding subject of every binding. */}}
{{- define "authwatch.subject" -}}
- kind: ServiceAccount
  name: {{ include "authwatch.serviceAccountName" . }}
  namespace: {{ .Release.Namespace }}
{{- end }}

{{/* The configuration file, built from the values as a dict and written
as YAML so that quoting is always right. */}}
{{- define "authwatch.config" -}}
{{- $watch := dict "selector" .Values.watch.selector "since" .Values.watch.since }}
{{- if .Values.watch.namespaces }}
{{- $_ := set $watch "namespaces" .Values.watch.namespaces }}
{{- else }}
{{- $_ := set $watch "all_namespaces" true }}
{{- end }}
{{- $watch = mergeOverwrite $watch (deepCopy .Values.watch.extra) }}
{{- $config := dict "watch" $watch }}
{{- $rules := dict }}
{{- if .Values.rules.custom }}
{{- $_ := set $rules "files" (list "/etc/authwatch/rules/rules.yaml") }}
{{- end }}
{{- if .Values.rules.disable }}
{{- $_ := set $rules "disable" .Values.rules.disable }}
{{- end }}
{{- if $rules }}
{{- $_ := set $config "rules" $rules }}
{{- end }}
{{- if .Values.incidents.policies }}
{{- $_ := set $config "policies" .Values.incidents.policies }}
{{- end }}
{{- $alerting := deepCopy .Values.alerting }}
{{- if .Values.slack.enabled }}
{{- $slack := dict "token_file" (printf "/etc/authwatch/slack/%s" .Values.slack.secretKey) "channel" .Values.slack.channel }}
{{- if .Values.slack.routes }}
{{- $_ := set $slack "routes" .Values.slack.routes }}
{{- end }}
{{- $_ := set $alerting "slack" (mergeOverwrite $slack (deepCopy .Values.slack.extra)) }}
{{- end }}
{{- if $alerting }}
{{- $_ := set $config "alerting" $alerting }}
{{- end }}
{{- if and .Values.rotation.enabled .Values.rotation.targets }}
{{- /* YAML 1.1, which Helm reads values with, turns an unquoted key `on`
into the boolean true; the target field is called "on". */}}
{{- $targets := list }}
{{- range .Values.rotation.targets }}
{{- $t := deepCopy . }}
{{- if hasKey $t "true" }}
{{- $_ := set $t "on" (get $t "true") }}
{{- $_ := unset $t "true" }}
{{- end }}
{{- $targets = append $targets $t }}
{{- end }}
{{- $_ := set $config "remediation" (dict "targets" $targets) }}
{{- end }}
{{- toYaml (mergeOverwrite $config (deepCopy .Values.extraConfig)) }}
{{- end }}

{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "ryzanstein.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object-name prefix: fullnameOverride, else the release name when it already contains the chart
name, else <release>-<chart>. Truncated to 54 characters so "-operator" (9) still fits in 63.
*/}}
{{- define "ryzanstein.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The operator's Deployment, Service and default ServiceAccount/Lease name. */}}
{{- define "ryzanstein.operatorName" -}}
{{- printf "%s-operator" (include "ryzanstein.fullname" .) }}
{{- end }}

{{- define "ryzanstein.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "ryzanstein.labels" -}}
helm.sh/chart: {{ include "ryzanstein.chart" . }}
{{ include "ryzanstein.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ryzanstein
{{- end }}

{{/* Labels that select the operator's pods (never change them in an upgrade). */}}
{{- define "ryzanstein.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ryzanstein.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ryzanstein.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ryzanstein.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ryzanstein.leaseName" -}}
{{- default (include "ryzanstein.operatorName" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/*
An image reference from {repository, tag, digest}: repository@digest when a digest is set, else
repository:tag with the tag defaulting to the chart's appVersion.
Usage: include "ryzanstein.image" (dict "image" .Values.image "context" $)
*/}}
{{- define "ryzanstein.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .context.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* The name of the metrics Service (also the Prometheus `job` label a ServiceMonitor gives). */}}
{{- define "ryzanstein.metricsServiceName" -}}
{{- printf "%s-metrics" (include "ryzanstein.fullname" .) }}
{{- end }}

{{/* The operator's config file (see the chart README, "Operator contract"). */}}
{{- define "ryzanstein.operatorConfig" -}}
# Image of the server pods of a ModelDeployment whose spec.image is empty.
defaultServerImage: {{ include "ryzanstein.image" (dict "image" .Values.server.image "context" $) | quote }}
serverImagePullPolicy: {{ .Values.server.image.pullPolicy }}
serverImagePullSecrets:
{{- if .Values.server.imagePullSecrets }}
{{- toYaml .Values.server.imagePullSecrets | nindent 2 }}
{{- else }} []
{{- end }}
autoscaler:
  scrapeIntervalSeconds: {{ .Values.operator.autoscaler.scrapeIntervalSeconds }}
  scrapeTimeoutSeconds: {{ .Values.operator.autoscaler.scrapeTimeoutSeconds }}
{{- end }}

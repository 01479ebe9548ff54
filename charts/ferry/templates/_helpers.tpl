{{/* The release's base name: the release name, or <release>-ferry when it lacks "ferry". */}}
{{- define "ferry.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ferry.operatorName" -}}{{ include "ferry.fullname" . }}-operator{{- end -}}
{{- define "ferry.serviceAccountName" -}}{{ .Values.serviceAccount.name | default (include "ferry.operatorName" .) }}{{- end -}}
{{- define "ferry.webhookService" -}}{{ include "ferry.fullname" . }}-webhook{{- end -}}
{{- define "ferry.webhookSecret" -}}{{ include "ferry.fullname" . }}-webhook-tls{{- end -}}
{{- define "ferry.leaseName" -}}{{ include "ferry.operatorName" . }}{{- end -}}
{{/* Cluster-scoped names carry the namespace: two releases in two namespaces never collide. */}}
{{- define "ferry.clusterName" -}}{{ include "ferry.fullname" . }}-{{ .Release.Namespace }}{{- end -}}
{{- define "ferry.webhookConfiguration" -}}{{ include "ferry.clusterName" . }}{{- end -}}

{{- define "ferry.operatorImage" -}}
{{ .Values.image.operator.repository }}:{{ .Values.image.operator.tag | default .Chart.AppVersion }}
{{- end -}}
{{- define "ferry.sidecarImage" -}}
{{ .Values.image.sidecar.repository }}:{{ .Values.image.sidecar.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: ferry-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ferry.labels" -}}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: ferry
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Refuses values that the schema cannot express. */}}
{{- define "ferry.validate" -}}
{{- if .Values.certManager.enabled -}}
{{- fail "certManager.enabled: not supported by this ferry-operator version: the operator keeps its own CA (with its key) in the webhook Secret and would replace a cert-manager certificate. Leave it false; the operator renews its certificate itself." -}}
{{- end -}}
{{- if gt (len .Values.watchNamespaces) 1 -}}
{{- fail "watchNamespaces: the operator watches one namespace or all (--namespace); name at most one" -}}
{{- end -}}
{{- end -}}

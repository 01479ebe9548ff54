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
{{/* With certManager.enabled: the webhook's Certificate, the Secret cert-manager writes it to
     (another name than the operator's own Secret, so switching never mixes the two), where the
     operator reads it, and the chart's own CA chain when no issuerRef is given. */}}
{{- define "ferry.webhookCertificate" -}}{{ include "ferry.fullname" . }}-webhook{{- end -}}
{{- define "ferry.webhookCertSecret" -}}{{ include "ferry.fullname" . }}-webhook-cert{{- end -}}
{{- define "ferry.webhookCertDir" -}}/etc/ferry/webhook-cert{{- end -}}
{{- define "ferry.selfSignedIssuer" -}}{{ include "ferry.fullname" . }}-selfsigned{{- end -}}
{{- define "ferry.caName" -}}{{ include "ferry.fullname" . }}-webhook-ca{{- end -}}
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
{{- if gt (len .Values.watchNamespaces) 1 -}}
{{- fail "watchNamespaces: the operator watches one namespace or all (--namespace); name at most one" -}}
{{- end -}}
{{- end -}}

{{- define "tfgrid.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tfgrid.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tfgrid.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tfgrid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tfgrid.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "tfgrid.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tfgrid
{{- end -}}

{{- define "tfgrid.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tfgrid.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* SQLite allows one writer: more than one replica needs the PostgreSQL ledger. */}}
{{- define "tfgrid.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.ledger.postgres.enabled) -}}
{{- fail "replicaCount > 1 needs ledger.postgres.enabled=true: the SQLite ledger has exactly one writer" -}}
{{- end -}}
{{- if and .Values.ledger.postgres.enabled (not .Values.ledger.postgres.existingSecret) -}}
{{- fail "ledger.postgres.enabled=true needs ledger.postgres.existingSecret: a Secret holding the PostgreSQL URL" -}}
{{- end -}}
{{- end -}}

{{- define "tfgrid.validatePeering" -}}
{{- if and (gt (int .Values.replicaCount) 1) .Values.watchNamespace -}}
{{- fail "standby replicas (replicaCount > 1) use cluster-wide peering: leave watchNamespace empty" -}}
{{- end -}}
{{- end -}}

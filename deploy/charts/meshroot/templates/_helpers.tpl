{{/* Name of the chart, overridable. */}}
{{- define "meshroot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects: the release name, with the chart name unless it already contains it. */}}
{{- define "meshroot.fullname" -}}
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

{{- define "meshroot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshroot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "meshroot.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "meshroot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: server
{{- end }}

{{- define "meshroot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "meshroot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "meshroot.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "meshroot.pvcName" -}}
{{- default (printf "%s-data" (include "meshroot.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Where the passphrase Secret is mounted, and the file the config names. */}}
{{- define "meshroot.passphraseDir" -}}/var/run/secrets/meshroot/passphrase{{- end }}

{{/* DNS names of the Service, always in the server certificate, then config.serverSANs. */}}
{{- define "meshroot.serverSANs" -}}
{{- $fullname := include "meshroot.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $sans := list $fullname (printf "%s.%s" $fullname $ns) (printf "%s.%s.svc" $fullname $ns) (printf "%s.%s.svc.cluster.local" $fullname $ns) }}
{{- range .Values.config.serverSANs }}
{{- $sans = append $sans . }}
{{- end }}
{{- toYaml (uniq $sans) }}
{{- end }}

{{- define "meshroot-bundle.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "meshroot-bundle.fullname" -}}
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

{{- define "meshroot-bundle.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshroot-bundle.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "meshroot-bundle.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "meshroot-bundle.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: bundle-endpoint
{{- end }}

{{/* Refuses values meshroot-bundle would refuse at start. */}}
{{- define "meshroot-bundle.validate" -}}
{{- if not .Values.trustDomain }}
{{- fail "trustDomain is required" }}
{{- end }}
{{- if not .Values.upstream.url }}
{{- fail "upstream.url (the meshroot server's bundle endpoint, https://...) is required" }}
{{- end }}
{{- if not (hasPrefix "https://" .Values.upstream.url) }}
{{- fail (printf "upstream.url must be https://host[:port]/path, not %q" .Values.upstream.url) }}
{{- end }}
{{- if not .Values.tls.secretName }}
{{- fail "tls.secretName (a kubernetes.io/tls Secret with the endpoint's certificate) is required" }}
{{- end }}
{{- if eq .Values.upstream.profile "https_spiffe" }}
{{- if not .Values.upstream.bundleConfigMap }}
{{- fail "upstream.bundleConfigMap (the bootstrap bundle, `meshroot bundle show -o spiffe`) is required for an https_spiffe upstream" }}
{{- end }}
{{- if .Values.upstream.caConfigMap }}
{{- fail "upstream.caConfigMap is for an https_web upstream" }}
{{- end }}
{{- else if eq .Values.upstream.profile "https_web" }}
{{- if or .Values.upstream.bundleConfigMap .Values.upstream.endpointID }}
{{- fail "upstream.bundleConfigMap and upstream.endpointID are for an https_spiffe upstream" }}
{{- end }}
{{- else }}
{{- fail (printf "upstream.profile must be https_spiffe or https_web, not %q" .Values.upstream.profile) }}
{{- end }}
{{- end }}

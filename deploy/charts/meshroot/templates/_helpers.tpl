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

{{/* "true" in HA mode (store.type postgres); refuses unknown store types. */}}
{{- define "meshroot.ha" -}}
{{- if eq .Values.store.type "postgres" }}true
{{- else if ne .Values.store.type "sqlite" }}
{{- fail (printf "store.type %q: use sqlite (one replica) or postgres (several)" .Values.store.type) }}
{{- end }}
{{- end }}

{{/* Replica count: replicaCount, else 3 with PostgreSQL and 1 with SQLite, which takes no more. */}}
{{- define "meshroot.replicas" -}}
{{- $ha := eq (include "meshroot.ha" .) "true" }}
{{- $n := .Values.replicaCount }}
{{- if kindIs "invalid" $n }}{{ $n = ternary 3 1 $ha }}{{ end }}
{{- $n = int $n }}
{{- if and (not $ha) (gt $n 1) }}
{{- fail (printf "replicaCount %d with store.type sqlite: the SQLite database on one ReadWriteOnce volume has a single writer, so the server runs as one replica; for several, set store.type postgres (docs/ha.md)" $n) }}
{{- end }}
{{- if lt $n 1 }}{{ fail "replicaCount must be at least 1" }}{{ end }}
{{- $n }}
{{- end }}

{{/* Headless Service with one address per ready replica, for agents that spread over the replicas. */}}
{{- define "meshroot.replicasService" -}}{{ include "meshroot.fullname" . }}-replicas{{- end }}

{{/* Where the database URL Secret and the key Secret are mounted. */}}
{{- define "meshroot.storeDir" -}}/var/run/secrets/meshroot/store{{- end }}
{{- define "meshroot.keysDir" -}}/var/run/secrets/meshroot/keys{{- end }}

{{/* DNS names of the Service, always in the server certificate, then config.serverSANs. */}}
{{- define "meshroot.serverSANs" -}}
{{- $fullname := include "meshroot.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- $sans := list $fullname (printf "%s.%s" $fullname $ns) (printf "%s.%s.svc" $fullname $ns) (printf "%s.%s.svc.cluster.local" $fullname $ns) }}
{{- if eq (include "meshroot.ha" .) "true" }}
{{- $r := include "meshroot.replicasService" . }}
{{- $sans = concat $sans (list $r (printf "%s.%s" $r $ns) (printf "%s.%s.svc" $r $ns) (printf "%s.%s.svc.cluster.local" $r $ns)) }}
{{- end }}
{{- range .Values.config.serverSANs }}
{{- $sans = append $sans . }}
{{- end }}
{{- toYaml (uniq $sans) }}
{{- end }}

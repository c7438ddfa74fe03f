{{- define "meshroot-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "meshroot-agent.fullname" -}}
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

{{- define "meshroot-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "meshroot-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "meshroot-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "meshroot-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
{{- end }}

{{- define "meshroot-agent.serviceAccountName" -}}
{{- default (include "meshroot-agent.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "meshroot-agent.cluster" -}}
{{- default .Release.Name .Values.cluster }}
{{- end }}

{{/* Refuses values the agent would refuse at run time. */}}
{{- define "meshroot-agent.validate" -}}
{{- if not (has .Values.mode (list "job" "deployment")) }}
{{- fail (printf "mode must be job or deployment, not %q" .Values.mode) }}
{{- end }}
{{- if not (has .Values.restartIstiod (list "auto" "always" "never")) }}
{{- fail (printf "restartIstiod must be auto, always or never, not %q" .Values.restartIstiod) }}
{{- end }}
{{- if not .Values.server }}
{{- fail "server (host:port of the meshroot server) is required" }}
{{- end }}
{{- if not .Values.serverCA.configMap }}
{{- fail "serverCA.configMap is required" }}
{{- end }}
{{- end }}

{{/*
The agent's pod spec. Call with (dict "ctx" $ "once" true|false).
*/}}
{{- define "meshroot-agent.podSpec" -}}
{{- $ := .ctx -}}
serviceAccountName: {{ include "meshroot-agent.serviceAccountName" $ }}
# The agent talks to this cluster's API (cacerts, istiod) with its
# ServiceAccount credentials.
automountServiceAccountToken: true
{{- with $.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if .once }}
restartPolicy: OnFailure
{{- end }}
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
containers:
  - name: agent
    image: {{ printf "%s:%s" $.Values.image.repository (default $.Chart.AppVersion $.Values.image.tag) | quote }}
    imagePullPolicy: {{ $.Values.image.pullPolicy }}
    # The lean agent binary (cmd/meshroot-agent): `meshroot agent` without
    # the CA's key backends, stores and cloud SDKs.
    command:
      - /meshroot-agent
    args:
      - --server
      - {{ $.Values.server | quote }}
      - --server-ca
      - /etc/meshroot-agent/server-ca/ca.crt
      - --cluster
      - {{ include "meshroot-agent.cluster" $ | quote }}
      - --token-file
      - /var/run/secrets/meshroot/token
      - --namespace
      - {{ $.Values.istioNamespace | quote }}
      - --restart-istiod
      - {{ $.Values.restartIstiod | quote }}
      {{- if .once }}
      - --once
      {{- end }}
      {{- with $.Values.extraArgs }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with $.Values.extraEnv }}
    env:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml $.Values.securityContext | nindent 6 }}
    {{- with $.Values.resources }}
    resources:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    volumeMounts:
      - name: meshroot-token
        mountPath: /var/run/secrets/meshroot
        readOnly: true
      - name: server-ca
        mountPath: /etc/meshroot-agent/server-ca
        readOnly: true
      - name: tmp
        mountPath: /tmp
volumes:
  # A token only the meshroot server accepts (audience {{ $.Values.token.audience }}),
  # refreshed by the kubelet; not the API token.
  - name: meshroot-token
    projected:
      sources:
        - serviceAccountToken:
            audience: {{ $.Values.token.audience | quote }}
            expirationSeconds: {{ $.Values.token.expirationSeconds }}
            path: token
  - name: server-ca
    configMap:
      name: {{ $.Values.serverCA.configMap }}
      items:
        - key: {{ $.Values.serverCA.key }}
          path: ca.crt
  - name: tmp
    emptyDir:
      sizeLimit: 16Mi
{{- with $.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "meshroot-agent.podMeta" -}}
labels:
  {{- include "meshroot-agent.selectorLabels" . | nindent 2 }}
  {{- with .Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- with .Values.podAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

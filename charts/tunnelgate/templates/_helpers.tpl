{{/*
Chart name, truncated to the 63 characters of a DNS label.
*/}}
{{- define "tunnelgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-<chart>" unless the release name already contains the chart name.
*/}}
{{- define "tunnelgate.fullname" -}}
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

{{/*
"<fullname>-<suffix>" within 63 characters: the full name is cut, never the suffix, so that names stay distinct.
Call with (list $ "suffix").
*/}}
{{- define "tunnelgate.suffixedName" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- $base := include "tunnelgate.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{- define "tunnelgate.proxyName" -}}
{{- include "tunnelgate.suffixedName" (list . "proxy") }}
{{- end }}

{{- define "tunnelgate.proxyHeadlessName" -}}
{{- include "tunnelgate.suffixedName" (list . "proxy-headless") }}
{{- end }}

{{- define "tunnelgate.leaseName" -}}
{{- include "tunnelgate.suffixedName" (list . "leader") }}
{{- end }}

{{/*
The Secret holding the proxy auth token: the user's, or the one the controller generates.
*/}}
{{- define "tunnelgate.authSecretName" -}}
{{- if .Values.proxy.authTokenSecretRef.name }}
{{- .Values.proxy.authTokenSecretRef.name }}
{{- else }}
{{- include "tunnelgate.suffixedName" (list . "proxy-auth-token") }}
{{- end }}
{{- end }}

{{- define "tunnelgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tunnelgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tunnelgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tunnelgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
Standard labels, without the component.
*/}}
{{- define "tunnelgate.labels" -}}
helm.sh/chart: {{ include "tunnelgate.chart" . }}
app.kubernetes.io/name: {{ include "tunnelgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | toString | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tunnelgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "tunnelgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tunnelgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tunnelgate.controller.selectorLabels" -}}
{{ include "tunnelgate.selectorLabels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "tunnelgate.controller.labels" -}}
{{ include "tunnelgate.labels" . }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "tunnelgate.proxy.selectorLabels" -}}
{{ include "tunnelgate.selectorLabels" . }}
app.kubernetes.io/component: proxy
{{- end }}

{{- define "tunnelgate.proxy.labels" -}}
{{ include "tunnelgate.labels" . }}
app.kubernetes.io/component: proxy
{{- end }}

{{/*
The grace period in seconds; an explicit null falls back to 30, while 0 is kept.
*/}}
{{- define "tunnelgate.proxy.gracePeriodSeconds" -}}
{{- $g := .Values.proxy.gracePeriodSeconds }}
{{- if kindIs "invalid" $g }}30{{ else }}{{ int64 $g }}{{ end }}
{{- end }}

{{/*
Fails when a CIDR list would open egress to the whole Internet. Call with (list "values.path" $list).
*/}}
{{- define "tunnelgate.checkCIDRs" -}}
{{- $path := index . 0 }}
{{- range (index . 1) }}
{{- if or (eq (toString .) "0.0.0.0/0") (eq (toString .) "::/0") }}
{{- fail (printf "%s must not contain %s: list the ranges to allow" $path .) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
PodDisruptionBudget spec body from a values block {minAvailable, maxUnavailable, unhealthyPodEvictionPolicy}.
Call with (list "values.path" $block).
*/}}
{{- define "tunnelgate.pdbSpec" -}}
{{- $path := index . 0 }}
{{- $pdb := index . 1 }}
{{- $min := $pdb.minAvailable }}
{{- $max := $pdb.maxUnavailable }}
{{- if and (not (kindIs "invalid" $min)) (not (kindIs "invalid" $max)) }}
{{- fail (printf "%s: set only one of minAvailable and maxUnavailable" $path) }}
{{- end }}
{{- if not (kindIs "invalid" $min) }}
minAvailable: {{ if kindIs "string" $min }}{{ $min | quote }}{{ else }}{{ int64 $min }}{{ end }}
{{- else if not (kindIs "invalid" $max) }}
maxUnavailable: {{ if kindIs "string" $max }}{{ $max | quote }}{{ else }}{{ int64 $max }}{{ end }}
{{- else }}
maxUnavailable: 1
{{- end }}
{{- with $pdb.unhealthyPodEvictionPolicy }}
unhealthyPodEvictionPolicy: {{ . }}
{{- end }}
{{- end }}

{{/*
An HTTP probe on a named port. Call with (list "path" "portName" $probeValues).
*/}}
{{- define "tunnelgate.httpProbe" -}}
{{- $p := index . 2 }}
httpGet:
  path: {{ index . 0 }}
  port: {{ index . 1 }}
{{- with $p.initialDelaySeconds }}
initialDelaySeconds: {{ int64 . }}
{{- end }}
periodSeconds: {{ int64 ($p.periodSeconds | default 10) }}
timeoutSeconds: {{ int64 ($p.timeoutSeconds | default 1) }}
failureThreshold: {{ int64 ($p.failureThreshold | default 3) }}
{{- with $p.successThreshold }}
successThreshold: {{ int64 . }}
{{- end }}
{{- end }}

{{/*
Value combinations that cannot work, failed at render time rather than as a crash-looping pod.
*/}}
{{- define "tunnelgate.validateValues" -}}
{{- if and (eq .Values.proxy.mode "tunnel") (not .Values.proxy.tunnelTokenSecretRef.name) }}
{{- fail "proxy.tunnelTokenSecretRef.name is required in tunnel mode: create a Secret holding the tunnel token and name it here (or set proxy.mode=standalone)" }}
{{- end }}
{{- if and .Values.cloudflare.sync (not .Values.cloudflare.apiTokenSecretRef.name) }}
{{- fail "cloudflare.sync requires cloudflare.apiTokenSecretRef.name: a Secret holding an API token with the \"Cloudflare Tunnel: Edit\" permission" }}
{{- end }}
{{- if and .Values.cloudflare.sync (ne .Values.proxy.mode "tunnel") (not (and .Values.cloudflare.accountId .Values.cloudflare.tunnelId)) }}
{{- fail "cloudflare.sync in standalone mode needs cloudflare.accountId and cloudflare.tunnelId: there is no tunnel token to read them from" }}
{{- end }}
{{- if and .Values.cloudflare.sync .Values.controller.networkPolicy.enabled (empty .Values.controller.networkPolicy.cloudflareApiCIDRs) }}
{{- fail "cloudflare.sync with controller.networkPolicy.enabled needs controller.networkPolicy.cloudflareApiCIDRs: without them the controller cannot reach api.cloudflare.com" }}
{{- end }}
{{- end }}

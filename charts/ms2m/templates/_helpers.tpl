{{/*
Names. With the release called "ms2m" (the documented install) every object
is "ms2m-<component>": the replay sidecars accept control calls only from
system:serviceaccount:ms2m-system:ms2m-manager unless told otherwise, and the
KubeSchedulerConfiguration example points at ms2m-scheduler-extender.
*/}}
{{- define "ms2m.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ms2m.fullname" -}}
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

{{- define "ms2m.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: ms2m
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: (dict "ctx" $ "component" "manager") */}}
{{- define "ms2m.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ms2m.name" .ctx }}-{{ .component }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Labels of a component's objects and pods: (dict "ctx" $ "component" "manager") */}}
{{- define "ms2m.componentLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: ms2m
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{ include "ms2m.selectorLabels" . }}
{{- end }}

{{- define "ms2m.managerName" -}}{{ include "ms2m.fullname" . }}-manager{{- end }}
{{- define "ms2m.agentName" -}}{{ include "ms2m.fullname" . }}-agent{{- end }}
{{- define "ms2m.webhookServiceName" -}}{{ include "ms2m.fullname" . }}-webhook{{- end }}
{{- define "ms2m.extenderServiceName" -}}{{ include "ms2m.fullname" . }}-scheduler-extender{{- end }}
{{- define "ms2m.certSecretName" -}}{{ include "ms2m.fullname" . }}-serving-cert{{- end }}
{{- define "ms2m.schedulerName" -}}{{ include "ms2m.fullname" . }}-scheduler{{- end }}

{{- define "ms2m.managerServiceAccountName" -}}
{{- default (include "ms2m.managerName" .) .Values.manager.serviceAccount.name }}
{{- end }}
{{- define "ms2m.agentServiceAccountName" -}}
{{- default (include "ms2m.agentName" .) .Values.agent.serviceAccount.name }}
{{- end }}

{{/* The one image: every binary is in /ms2m/. */}}
{{- define "ms2m.image" -}}
{{- $tag := default (printf "v%s" .Chart.AppVersion) .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "ms2m.sidecarImage" -}}
{{- default (include "ms2m.image" .) .Values.manager.sidecarImage }}
{{- end }}

{{/* "host:port" for a server inside a pod: the pod IP (see listenOnPodIP) or every address. */}}
{{- define "ms2m.bind" -}}
{{- if .ctx.Values.listenOnPodIP }}$(POD_IP):{{ .port }}{{ else }}:{{ .port }}{{ end }}
{{- end }}

{{/* DNS names the serving certificate covers: the webhook and extender Services. */}}
{{- define "ms2m.servingDNSNames" -}}
{{- $ns := .Release.Namespace }}
{{- $names := list }}
{{- range $svc := list (include "ms2m.webhookServiceName" .) (include "ms2m.extenderServiceName" .) }}
{{- $names = concat $names (list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns)) }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* The cert-manager Certificate's full name, for the cainjector annotation. */}}
{{- define "ms2m.certificateRef" -}}
{{ .Release.Namespace }}/{{ include "ms2m.fullname" . }}-serving-cert
{{- end }}

{{/*
ms2m.selfSignedCerts: the self-signed CA and serving certificate, as JSON
{"ca.crt","tls.crt","tls.key","renewAfter"}. Computed once per render (the
webhook configuration's caBundle and the Secret must agree). An existing
Secret is reused until its renewal time, so upgrades do not rotate the
certificates needlessly; after it, `helm upgrade` issues new ones (rotation).
`helm template` cannot look anything up and always generates.
*/}}
{{- define "ms2m.selfSignedCerts" -}}
{{- $cache := .Values._ms2mGenerated | default dict }}
{{- if not (hasKey $cache "certs") }}
{{- $certs := dict }}
{{- $secret := lookup "v1" "Secret" .Release.Namespace (include "ms2m.certSecretName" .) }}
{{- $renewAfter := "" }}
{{- if $secret }}
{{- $renewAfter = (index ($secret.metadata.annotations | default dict) "ms2m.io/renew-after") | default "" }}
{{- end }}
{{- if and $secret $renewAfter (lt (now | unixEpoch | int64) (atoi $renewAfter | int64)) (hasKey $secret.data "ca.crt") }}
{{- $certs = dict "ca.crt" (index $secret.data "ca.crt" | b64dec) "tls.crt" (index $secret.data "tls.crt" | b64dec) "tls.key" (index $secret.data "tls.key" | b64dec) "renewAfter" $renewAfter }}
{{- if hasKey $secret.data "ca.key" }}
{{- $_ := set $certs "ca.key" (index $secret.data "ca.key" | b64dec) }}
{{- end }}
{{- else }}
{{- $days := int .Values.certificates.selfSigned.validityDays }}
{{- $ca := genCA (printf "%s-ca" (include "ms2m.fullname" .)) (int .Values.certificates.selfSigned.caValidityDays) }}
{{- $cert := genSignedCert (printf "%s.%s.svc" (include "ms2m.webhookServiceName" .) .Release.Namespace) nil (include "ms2m.servingDNSNames" . | fromJsonArray) $days $ca }}
{{- $renewSeconds := mul (sub $days (int .Values.certificates.selfSigned.renewDaysBefore)) 86400 }}
{{- $certs = dict "ca.crt" $ca.Cert "ca.key" $ca.Key "tls.crt" $cert.Cert "tls.key" $cert.Key "renewAfter" (toString (add (now | unixEpoch | int64) $renewSeconds)) }}
{{- end }}
{{- $_ := set $cache "certs" $certs }}
{{- $_ := set .Values "_ms2mGenerated" $cache }}
{{- end }}
{{- toJson (get $cache "certs") }}
{{- end }}

{{/* caBundle of the webhook configurations: the self-signed CA, or empty for cert-manager's cainjector to fill. */}}
{{- define "ms2m.webhookCABundle" -}}
{{- if not .Values.certificates.certManager.enabled }}
caBundle: {{ index (include "ms2m.selfSignedCerts" . | fromJson) "ca.crt" | b64enc }}
{{- end }}
{{- end }}

{{/* Metadata of a generated webhook configuration: (dict "ctx" $ "name" "mutating-webhook-configuration") */}}
{{- define "ms2m.webhookMetadata" -}}
name: {{ include "ms2m.fullname" .ctx }}-{{ .name }}
labels:
  {{- include "ms2m.labels" .ctx | nindent 2 }}
{{- if .ctx.Values.certificates.certManager.enabled }}
annotations:
  cert-manager.io/inject-ca-from: {{ include "ms2m.certificateRef" .ctx }}
{{- end }}
{{- end }}

{{- define "ms2m.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "ms2m.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
Object names are fixed ("traffic-manager"): tp finds the manager by the Service name in the namespace
it was installed into. Cluster-scoped objects carry the namespace so two installs never collide.
*/}}
{{- define "tp.name" -}}traffic-manager{{- end -}}

{{- define "tp.clusterName" -}}tp-traffic-manager-{{ .Release.Namespace }}{{- end -}}

{{- define "tp.webhookService" -}}traffic-manager-webhook{{- end -}}

{{/* The session API's group (kube/annotations.ts sessionApiGroup). */}}
{{- define "tp.sessionApiGroup" -}}{{ .Release.Namespace }}.sessions.tp.dev{{- end -}}

{{- define "tp.labels" -}}
app.kubernetes.io/name: traffic-manager
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tp
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tp.selectorLabels" -}}
app.kubernetes.io/name: traffic-manager
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tp.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "tp.agentImage" -}}
{{- $repo := .Values.agent.image.repository | default .Values.image.repository -}}
{{- $tag := .Values.agent.image.tag | default .Values.image.tag | default .Chart.AppVersion -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}

{{/* "" when the manager watches every namespace, else the comma-separated list. */}}
{{- define "tp.managedNamespaces" -}}
{{- join "," .Values.managedNamespaces -}}
{{- end -}}

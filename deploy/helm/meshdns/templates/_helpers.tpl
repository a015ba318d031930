{{/* The image, its tag following the chart's appVersion unless set. */}}
{{- define "meshdns.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* Labels Helm adds to every object (the parity test with the Kustomize bases ignores these). */}}
{{- define "meshdns.helmLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Hub objects' labels. */}}
{{- define "meshdns.hubLabels" -}}
app.kubernetes.io/part-of: meshdns
{{ include "meshdns.helmLabels" . }}
{{- end }}

{{/* Member objects' labels. */}}
{{- define "meshdns.memberLabels" -}}
app.kubernetes.io/name: meshdns-syncer
app.kubernetes.io/part-of: meshdns
{{ include "meshdns.helmLabels" . }}
{{- end }}

{{/* Edge follower objects' labels. */}}
{{- define "meshdns.edgeLabels" -}}
app.kubernetes.io/name: meshdns-edge
app.kubernetes.io/component: edge
app.kubernetes.io/part-of: meshdns
{{ include "meshdns.helmLabels" . }}
{{- end }}

{{/* The security context of every container: the restricted Pod Security Standard. */}}
{{- define "meshdns.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end }}

{{/* Values that must be set together, checked once. */}}
{{- define "meshdns.check" -}}
{{- if eq .Values.mode "member" }}
{{- if not .Values.member.cluster }}{{ fail "member mode needs member.cluster: this cluster's name in the fleet" }}{{ end }}
{{- if not .Values.member.registries }}{{ fail "member mode needs member.registries: every hub replica's https://HOST:PORT" }}{{ end }}
{{- end }}
{{- end }}

{{/* Names and labels. */}}
{{- define "shipshape.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "shipshape.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "shipshape.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "shipshape.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "shipshape.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shipshape.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "shipshape.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "shipshape.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "shipshape.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "shipshape.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "shipshape.secretName" -}}
{{- default (include "shipshape.fullname" .) .Values.secrets.name }}
{{- end }}

{{- define "shipshape.image" -}}
{{- if eq .Values.image.tag "latest" }}
{{- fail "image.tag: latest is refused: give an immutable release tag (0.1.0, a git sha) or image.digest" }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "shipshape.baseUrl" -}}
{{- if .Values.baseUrl }}
{{- .Values.baseUrl }}
{{- else if .Values.ingress.enabled }}
{{- printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host }}
{{- else }}
{{- fail "baseUrl is required when ingress.enabled is false: the service's public URL" }}
{{- end }}
{{- end }}

{{/*
The settings the chart sets itself, from the values above `config` (the schema refuses
them in `config`). The migrations Job gets them inline: it runs before the ConfigMap exists.
*/}}
{{- define "shipshape.chartSettings" -}}
BASE_URL: {{ include "shipshape.baseUrl" . | quote }}
DB_HOST: {{ .Values.database.host | quote }}
DB_PORT: {{ .Values.database.port | quote }}
DB_NAME: {{ .Values.database.name | quote }}
DB_USER: {{ .Values.database.user | quote }}
REDIS_HOST: {{ .Values.redis.host | quote }}
REDIS_PORT: {{ .Values.redis.port | quote }}
DB_SSLMODE: {{ .Values.database.sslmode | quote }}
DB_SSL_ROOT_CERT: {{ ternary "/etc/shipshape/tls/database-ca.pem" "" (ne .Values.database.caSecret.name "") | quote }}
REDIS_TLS: {{ .Values.redis.tls | quote }}
REDIS_CA_FILE: {{ ternary "/etc/shipshape/tls/redis-ca.pem" "" (ne .Values.redis.caSecret.name "") | quote }}
PORT: {{ .Values.app.port | quote }}
FORWARDED_ALLOW_IPS: {{ include "shipshape.trustedProxies" . | quote }}
UPLOADS_DIR: "/app/uploads"
STORAGE_DIR: "/app/storage"
{{- /* The migrations Job migrates; the app's start does not (RUN_MIGRATIONS). */}}
RUN_MIGRATIONS: {{ (not .Values.migrations.enabled) | quote }}
{{- end }}

{{- define "shipshape.trustedProxies" -}}
{{- if ne .Values.trustedProxies "auto" }}
{{- .Values.trustedProxies }}
{{- else if .Values.networkPolicy.enabled }}
{{- "*" }}
{{- else }}
{{- fail "trustedProxies: with networkPolicy.enabled false any pod could claim any client address; give the ingress controller pods' addresses (a CIDR), or \"\" to believe no proxy" }}
{{- end }}
{{- end }}

{{/* All plain settings, as ConfigMap data. */}}
{{- define "shipshape.settings" -}}
{{ include "shipshape.chartSettings" . }}
{{- range $name, $value := .Values.config }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/*
The secret files of one kind of pod: `kind` is "app" (every key) or "worker" (not the
admin password or the metrics token, which only the app's start and /metrics read).
*/}}
{{- define "shipshape.secretFiles" -}}
{{- $files := list }}
{{- $scraped := and (eq .kind "worker") .root.Values.metrics.serviceMonitor.enabled }}
{{- range .root.Values.secrets.files }}
{{- if or (eq $.kind "app") (not (has . (list "admin_password" "metrics_token"))) }}
{{- $files = append $files . }}
{{- else if and $scraped (eq . "metrics_token") }}
{{- /* the worker's /metrics is scraped with the same token */}}
{{- $files = append $files . }}
{{- end }}
{{- end }}
{{- toJson $files }}
{{- end }}

{{/* <KEY>_FILE for each secret file: the only way a secret reaches the service. */}}
{{- define "shipshape.secretFileEnv" -}}
{{- range (include "shipshape.secretFiles" . | fromJsonArray) }}
- name: {{ printf "%s_FILE" (upper .) }}
  value: {{ printf "/run/secrets/%s" . | quote }}
{{- end }}
{{- end }}

{{- define "shipshape.secretVolume" -}}
- name: secrets
  secret:
    secretName: {{ include "shipshape.secretName" .root }}
    defaultMode: 0440
    items:
      {{- range (include "shipshape.secretFiles" . | fromJsonArray) }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}

{{/* The same hardening for every pod: uid/gid 10001 (the image's appuser). */}}
{{- define "shipshape.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "shipshape.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* checkov skips that hold for every workload of the chart, with the reason. */}}
{{- define "shipshape.checkovSkips" -}}
checkov.io/skip1: CKV_K8S_43=image.digest pins the image by digest, as docs/kubernetes.md recommends; a tag is the user's choice
checkov.io/skip2: CKV_K8S_15=IfNotPresent is right for a digest or a version tag; a moving tag needs image.digest or pullPolicy Always
{{- end }}

{{/* ingress-nginx's annotation naming the security headers' ConfigMap, when they are on. */}}
{{- define "shipshape.securityHeadersAnnotation" -}}
{{- if and .Values.ingress.securityHeaders.enabled (eq .Values.ingress.className "nginx") }}
nginx.ingress.kubernetes.io/custom-headers: {{ printf "%s/%s-security-headers" .Release.Namespace (include "shipshape.fullname" .) }}
{{- end }}
{{- end }}

{{/* The CA bundles of the database's and Redis's certificates, from their Secrets. */}}
{{- define "shipshape.tlsVolume" -}}
{{- if or .Values.database.caSecret.name .Values.redis.caSecret.name }}
- name: tls-ca
  projected:
    defaultMode: 0444
    sources:
      {{- range $store, $file := dict "database" "database-ca.pem" "redis" "redis-ca.pem" }}
      {{- with (index $.Values $store).caSecret }}
      {{- if .name }}
      - secret:
          name: {{ .name }}
          items:
            - key: {{ .key }}
              path: {{ $file }}
      {{- end }}
      {{- end }}
      {{- end }}
{{- end }}
{{- end }}

{{- define "shipshape.tlsMount" -}}
{{- if or .Values.database.caSecret.name .Values.redis.caSecret.name }}
- name: tls-ca
  mountPath: /etc/shipshape/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Writable paths: a small /tmp in memory, and the shared files volume. */}}
{{- define "shipshape.dataVolumes" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 64Mi
- name: files
  {{- if .Values.persistence.enabled }}
  persistentVolumeClaim:
    claimName: {{ default (printf "%s-files" (include "shipshape.fullname" .)) .Values.persistence.existingClaim }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- include "shipshape.tlsVolume" . }}
{{- end }}

{{- define "shipshape.dataMounts" -}}
- name: tmp
  mountPath: /tmp
- name: files
  mountPath: /app/uploads
  subPath: uploads
- name: files
  mountPath: /app/storage
  subPath: storage
- name: secrets
  mountPath: /run/secrets
  readOnly: true
{{- include "shipshape.tlsMount" . }}
{{- end }}

{{/* Pod template annotations: a changed setting or trial secret rolls the pods. */}}
{{- define "shipshape.podAnnotations" -}}
checksum/config: {{ include "shipshape.settings" . | sha256sum }}
{{- if .Values.secrets.create }}
checksum/secret: {{ toJson .Values.secrets.values | sha256sum }}
{{- end }}
{{- end }}

{{/*
What users of well-kept charts set on a pod, the same way for the app and the worker:
`component` is "app" or "worker", `root` the chart's context. Each reads the component's
values (podLabels, priorityClassName, extraEnv, extraVolumes, extraVolumeMounts,
initContainers, sidecars, podAntiAffinityPreset, topologySpread).
*/}}
{{- define "shipshape.componentLabels" -}}
{{ include "shipshape.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "shipshape.podLabels" -}}
{{ include "shipshape.componentLabels" . }}
{{- with (index .root.Values .component).podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The files volume can be mounted on one node only (ReadWriteOnce): every pod that
mounts it goes to that node. */}}
{{- define "shipshape.coScheduled" -}}
{{- if and .Values.persistence.enabled (not (has "ReadWriteMany" .Values.persistence.accessModes)) }}true{{ end }}
{{- end }}

{{/* Replicas spread over nodes, and over zones where the nodes carry one (not while they
share a ReadWriteOnce volume: they are on its node). */}}
{{- define "shipshape.topologySpread" -}}
{{- $values := index .root.Values .component }}
{{- $keys := list }}
{{- if not (include "shipshape.coScheduled" .root) }}
{{- if $values.topologySpread.nodes }}{{ $keys = append $keys "kubernetes.io/hostname" }}{{ end }}
{{- if $values.topologySpread.zones }}{{ $keys = append $keys "topology.kubernetes.io/zone" }}{{ end }}
{{- end }}
{{- range $keys }}
- maxSkew: 1
  topologyKey: {{ . }}
  whenUnsatisfiable: ScheduleAnyway
  labelSelector:
    matchLabels:
      {{- include "shipshape.componentLabels" $ | nindent 6 }}
{{- end }}
{{- end }}

{{/* `affinity` as given; or with a ReadWriteOnce files volume, every pod on the node of
the release's other pods; or the anti-affinity preset: soft prefers, hard requires, one
replica per node. */}}
{{- define "shipshape.affinity" -}}
{{- $values := index .root.Values .component }}
{{- if $values.affinity }}
{{- toYaml $values.affinity }}
{{- else if include "shipshape.coScheduled" .root }}
{{- if eq $values.podAntiAffinityPreset "hard" }}
{{- fail (printf "%s.podAntiAffinityPreset hard needs persistence.accessModes [ReadWriteMany]: with ReadWriteOnce every pod shares the volume's node" .component) }}
{{- end }}
podAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "shipshape.selectorLabels" .root | nindent 10 }}
        matchExpressions:
          - {key: app.kubernetes.io/component, operator: In, values: [app, worker]}
{{- else if eq $values.podAntiAffinityPreset "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "shipshape.componentLabels" . | nindent 10 }}
{{- else if eq $values.podAntiAffinityPreset "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "shipshape.componentLabels" . | nindent 12 }}
{{- end }}
{{- end }}

{{/* The pod spec's scheduling and extras, after `containers`. */}}
{{- define "shipshape.podExtras" -}}
{{- $values := index .root.Values .component }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with (include "shipshape.topologySpread" . | trim) }}
topologySpreadConstraints:
  {{- . | nindent 2 }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (include "shipshape.affinity" . | trim) }}
affinity:
  {{- . | nindent 2 }}
{{- end }}
{{- with $values.initContainers }}
initContainers:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

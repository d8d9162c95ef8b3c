{{/* Chart name. */}}
{{- define "shoal.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name. */}}
{{- define "shoal.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shoal.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "shoal.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "shoal.selectorLabels" -}}
app.kubernetes.io/name: {{ include "shoal.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "shoal.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* A zone's name as a DNS label suffix. */}}
{{- define "shoal.zoneSuffix" -}}
{{- . | lower | replace "_" "-" | replace "." "-" | trunc 20 | trimSuffix "-" -}}
{{- end -}}

{{- define "shoal.swarmKeySecret" -}}
{{- default (printf "%s-swarm-key" (include "shoal.fullname" .)) .Values.swarmKey.existingSecret -}}
{{- end -}}

{{- define "shoal.joinTokenSecret" -}}
{{- default (printf "%s-join-token" (include "shoal.fullname" .)) .Values.joinToken.existingSecret -}}
{{- end -}}

{{- define "shoal.joinEnabled" -}}
{{- if and .Values.manager.enabled (or .Values.joinToken.value .Values.joinToken.existingSecret) -}}true{{- end -}}
{{- end -}}

{{- define "shoal.managerUrl" -}}
{{- printf "http://%s-manager.%s.svc:%v" (include "shoal.fullname" .) .Release.Namespace .Values.manager.port -}}
{{- end -}}

{{/* The headless Service nodes and seeds bootstrap from. */}}
{{- define "shoal.peersService" -}}
{{- printf "%s-peers" (include "shoal.fullname" .) -}}
{{- end -}}

{{- define "shoal.bootstrap" -}}
{{- printf "dns:%s.%s.svc.cluster.local:%v" (include "shoal.peersService" .) .Release.Namespace .Values.seeds.ports.p2p -}}
{{- end -}}

{{/* The swarm key file, in `shoal swarm-key` format. */}}
{{- define "shoal.swarmKeyFile" -}}
{{- $v := .Values.swarmKey.value | trim -}}
{{- if $v -}}
{{- if regexMatch "^[0-9a-fA-F]{64}$" $v -}}
{{- printf "/key/swarm/psk/1.0.0/\n/base16/\n%s\n" (lower $v) -}}
{{- else if regexMatch "^/key/swarm/psk/1\\.0\\.0/\\s+/base16/\\s+[0-9a-fA-F]{64}$" $v -}}
{{- printf "%s\n" $v -}}
{{- else -}}
{{- fail "swarmKey.value must be the output of `shoal swarm-key` (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits) or just the 64 hex digits" -}}
{{- end -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "shoal.swarmKeySecret" .) -}}
{{- if and $existing $existing.data (hasKey $existing.data "swarm.key") -}}
{{- index $existing.data "swarm.key" | b64dec -}}
{{- else -}}
{{- printf "/key/swarm/psk/1.0.0/\n/base16/\n%s\n" (randAlphaNum 64 | sha256sum) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "shoal.metricsAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end -}}

{{/* Arguments common to nodes and seeds: logging, swarm key, bootstrap, joining the manager. */}}
{{- define "shoal.commonArgs" -}}
- --log={{ .Values.logLevel }}
- --log-format={{ .Values.logFormat }}
- --swarm-key=/etc/shoal/swarm/swarm.key
- --bootstrap={{ include "shoal.bootstrap" . }}
{{- if include "shoal.joinEnabled" . }}
- --manager={{ include "shoal.managerUrl" . }}
- --token-file=/etc/shoal/join/token
- --node-name=$(NODE_NAME)
{{- end }}
{{- end -}}

{{- define "shoal.commonVolumes" -}}
- name: swarm-key
  secret:
    secretName: {{ include "shoal.swarmKeySecret" . }}
    defaultMode: 0400
{{- if include "shoal.joinEnabled" . }}
- name: join-token
  secret:
    secretName: {{ include "shoal.joinTokenSecret" . }}
    defaultMode: 0400
{{- end }}
{{- end -}}

{{- define "shoal.commonMounts" -}}
- name: swarm-key
  mountPath: /etc/shoal/swarm
  readOnly: true
{{- if include "shoal.joinEnabled" . }}
- name: join-token
  mountPath: /etc/shoal/join
  readOnly: true
{{- end }}
{{- end -}}

{{- define "shoal.probes" -}}
livenessProbe:
  httpGet:
    path: /healthz
    port: admin
  initialDelaySeconds: 5
  periodSeconds: 10
  failureThreshold: 6
readinessProbe:
  httpGet:
    path: /readyz
    port: admin
  periodSeconds: 5
  failureThreshold: 3
{{- end -}}

{{/*
The node and its init containers write root-owned host directories (the data dir, containerd's
certs.d, registries.conf.d), so they run as root, the image's user being 65532. Root without
any capability still writes what root owns, and nothing else: no DAC override, no chown, no
privilege escalation, a read-only root filesystem.
*/}}
{{- define "shoal.hostConfigSecurityContext" -}}
securityContext:
  runAsUser: 0
  runAsGroup: 0
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
{{- end -}}

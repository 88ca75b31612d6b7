{{/*
Names, labels and the pieces every workload shares. The components are
ingest, sender, logwriter (Deployments) and topics (the hook Job).
*/}}

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<chart>, or the release name alone when it already holds the chart name; 53 characters leave room for -logwriter-metrics. */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 45 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of a component: dict "root" $ "component" "sender". */}}
{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every label of a component's resources: dict "root" $ "component" "sender". */}}
{{- define "sluice.labels" -}}
{{ include "sluice.selectorLabels" . }}
helm.sh/chart: {{ include "sluice.chart" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: sluice
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The image of a component: dict "root" $ "component" "sender". */}}
{{- define "sluice.image" -}}
{{- $img := .root.Values.image -}}
{{- printf "%s/sluice-%s:%s" (trimSuffix "/" $img.repository) .component (toString ($img.tag | default .root.Chart.AppVersion)) -}}
{{- end -}}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false: name the ServiceAccount the pods run as" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The ServiceAccount of the topics Job. A pre-install hook runs before the
release's own ServiceAccount exists, so the chart gives the Job one of its
own, created as a hook just before it; a ServiceAccount the user manages
(create: false) exists already and is used as is.
*/}}
{{- define "sluice.topicsServiceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- printf "%s-topics" (include "sluice.fullname" .) -}}
{{- else -}}
{{- include "sluice.serviceAccountName" . -}}
{{- end -}}
{{- end -}}

{{/*
Every secret item the chart knows, keyed by the key it has in the Secret the
chart creates when the value is given in values. "path" names the value
for error messages, "item" is {value, existingSecret: {name, key}}, "kafka"
marks what the topics Job needs, "file" is where the item is mounted (under
/etc/sluice/<volume>/), "env" the variable that takes it directly.
*/}}
{{- define "sluice.secretItems" -}}
{{- $v := .Values -}}
{{- $items := dict
  "kafka-ca.crt" (dict "path" "kafka.tls.ca" "item" $v.kafka.tls.ca "volume" "kafka" "file" "ca.crt" "var" "SLUICE_KAFKA_TLS_CA_FILE")
  "kafka-tls.crt" (dict "path" "kafka.tls.cert" "item" $v.kafka.tls.cert "volume" "kafka" "file" "tls.crt" "var" "SLUICE_KAFKA_TLS_CERT_FILE")
  "kafka-tls.key" (dict "path" "kafka.tls.key" "item" $v.kafka.tls.key "volume" "kafka" "file" "tls.key" "var" "SLUICE_KAFKA_TLS_KEY_FILE")
  "kafka-sasl-password" (dict "path" "kafka.sasl.password" "item" $v.kafka.sasl.password "volume" "kafka" "file" "sasl-password" "var" "SLUICE_KAFKA_SASL_PASSWORD_FILE")
  "kafka-oauth-token" (dict "path" "kafka.sasl.oauth.token" "item" $v.kafka.sasl.oauth.token "volume" "kafka" "file" "oauth-token" "var" "SLUICE_KAFKA_SASL_OAUTH_TOKEN_FILE")
  "clickhouse-ca.crt" (dict "path" "clickhouse.tls.ca" "item" $v.clickhouse.tls.ca "volume" "clickhouse" "file" "ca.crt" "var" "SLUICE_CLICKHOUSE_TLS_CA_FILE")
  "clickhouse-tls.crt" (dict "path" "clickhouse.tls.cert" "item" $v.clickhouse.tls.cert "volume" "clickhouse" "file" "tls.crt" "var" "SLUICE_CLICKHOUSE_TLS_CERT_FILE")
  "clickhouse-tls.key" (dict "path" "clickhouse.tls.key" "item" $v.clickhouse.tls.key "volume" "clickhouse" "file" "tls.key" "var" "SLUICE_CLICKHOUSE_TLS_KEY_FILE")
  "clickhouse-password" (dict "path" "clickhouse.password" "item" $v.clickhouse.password "volume" "clickhouse" "file" "password" "var" "SLUICE_CLICKHOUSE_PASSWORD_FILE")
  "secrets-key" (dict "path" "secretsKey" "item" $v.secretsKey "var" "SLUICE_SECRETS_KEY")
  "admin-key" (dict "path" "adminKey" "item" $v.adminKey "var" "SLUICE_ADMIN_KEY")
-}}
{{- toJson $items -}}
{{- end -}}

{{/*
Where a secret item comes from, as JSON {name, key}, or {} when it is not
set: dict "root" $ "id" "kafka-ca.crt" "secretName" <the chart's Secret>.
Setting both a value and an existing Secret is refused.
*/}}
{{- define "sluice.secretRef" -}}
{{- $d := get (include "sluice.secretItems" .root | fromJson) .id -}}
{{- $item := $d.item | default dict -}}
{{- $ex := $item.existingSecret | default dict -}}
{{- if and $item.value $ex.name -}}
{{- fail (printf "%s: set either value or existingSecret.name, not both (value makes the chart create the Secret; existingSecret uses yours)" $d.path) -}}
{{- else if $ex.name -}}
{{- dict "name" $ex.name "key" (required (printf "%s.existingSecret.key is required" $d.path) $ex.key) | toJson -}}
{{- else if $item.value -}}
{{- dict "name" .secretName "key" .id | toJson -}}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{/* The Secret the chart creates for values given inline, and the topics Job's hook copy of its Kafka items. */}}
{{- define "sluice.secretName" -}}
{{- include "sluice.fullname" . -}}
{{- end -}}
{{- define "sluice.topicsSecretName" -}}
{{- printf "%s-topics" (include "sluice.fullname" .) -}}
{{- end -}}

{{/* Whether a mechanism uses SASL at all. */}}
{{- define "sluice.saslMechanism" -}}
{{- $m := .Values.kafka.sasl.mechanism | default "none" -}}
{{- $m -}}
{{- end -}}

{{/*
The Kafka settings of a container (every component and the topics Job):
dict "root" $ "secretName" <Secret holding inline values>.
*/}}
{{- define "sluice.kafkaEnv" -}}
{{- $root := .root -}}
{{- $k := $root.Values.kafka -}}
{{- $items := include "sluice.secretItems" $root | fromJson -}}
- name: SLUICE_KAFKA_BROKERS
  value: {{ join "," $k.brokers | quote }}
- name: SLUICE_TOPIC_PREFIX
  value: {{ $k.topicPrefix | quote }}
{{- if $k.tls.enabled }}
- name: SLUICE_KAFKA_TLS
  value: "true"
{{- with $k.tls.serverName }}
- name: SLUICE_KAFKA_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- range $id := list "kafka-ca.crt" "kafka-tls.crt" "kafka-tls.key" "kafka-sasl-password" "kafka-oauth-token" }}
{{- $ref := include "sluice.secretRef" (dict "root" $root "id" $id "secretName" $.secretName) | fromJson }}
{{- if $ref.name }}
{{- $d := get $items $id }}
- name: {{ $d.var }}
  value: /etc/sluice/{{ $d.volume }}/{{ $d.file }}
{{- end }}
{{- end }}
{{- $m := include "sluice.saslMechanism" $root }}
{{- if ne $m "none" }}
- name: SLUICE_KAFKA_SASL_MECHANISM
  value: {{ $m | quote }}
{{- end }}
{{- if has $m (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512") }}
- name: SLUICE_KAFKA_SASL_USERNAME
  value: {{ $k.sasl.username | quote }}
{{- end }}
{{- if eq $m "OAUTHBEARER" }}
{{- if $k.sasl.oauth.projectedServiceAccountToken.enabled }}
- name: SLUICE_KAFKA_SASL_OAUTH_TOKEN_FILE
  value: /etc/sluice/kafka/oauth-token
{{- end }}
{{- with $k.sasl.oauth.extensions }}
- name: SLUICE_KAFKA_SASL_OAUTH_EXTENSIONS
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if and (eq $m "AWS_MSK_IAM") $k.aws.region }}
- name: AWS_REGION
  value: {{ $k.aws.region | quote }}
{{- end }}
{{- end -}}

{{/* The ClickHouse settings of ingest and the logwriter: dict "root" $ "secretName" <name>. */}}
{{- define "sluice.clickhouseEnv" -}}
{{- $root := .root -}}
{{- $c := $root.Values.clickhouse -}}
{{- $items := include "sluice.secretItems" $root | fromJson -}}
- name: SLUICE_CLICKHOUSE_ADDRS
  value: {{ join "," $c.addrs | quote }}
- name: SLUICE_CLICKHOUSE_DATABASE
  value: {{ $c.database | quote }}
- name: SLUICE_CLICKHOUSE_USERNAME
  value: {{ $c.username | quote }}
{{- if $c.tls.enabled }}
- name: SLUICE_CLICKHOUSE_TLS
  value: "true"
{{- with $c.tls.serverName }}
- name: SLUICE_CLICKHOUSE_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- range $id := list "clickhouse-ca.crt" "clickhouse-tls.crt" "clickhouse-tls.key" "clickhouse-password" }}
{{- $ref := include "sluice.secretRef" (dict "root" $root "id" $id "secretName" $.secretName) | fromJson }}
{{- if $ref.name }}
{{- $d := get $items $id }}
- name: {{ $d.var }}
  value: /etc/sluice/{{ $d.volume }}/{{ $d.file }}
{{- end }}
{{- end }}
{{- end -}}

{{/* An env entry read from a secret item, or nothing when the item is unset: dict "root" $ "id" <id> "secretName" <name>. */}}
{{- define "sluice.secretEnv" -}}
{{- $ref := include "sluice.secretRef" . | fromJson -}}
{{- if $ref.name -}}
{{- $d := get (include "sluice.secretItems" .root | fromJson) .id -}}
- name: {{ $d.var }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- end -}}
{{- end -}}

{{/*
The projected volumes holding the Kafka and ClickHouse files of a pod:
dict "root" $ "secretName" <name> "clickhouse" <bool>. Each item can come
from a different Secret (Strimzi keeps the cluster CA and the user's
credentials apart), so each is one source.
*/}}
{{- define "sluice.fileVolumes" -}}
{{- $root := .root -}}
{{- $items := include "sluice.secretItems" $root | fromJson -}}
{{- $volumes := list "kafka" -}}
{{- if .clickhouse }}{{- $volumes = append $volumes "clickhouse" -}}{{- end -}}
{{- range $vol := $volumes }}
{{- $sources := list -}}
{{- range $id, $d := $items }}
{{- if eq ($d.volume | default "") $vol }}
{{- $ref := include "sluice.secretRef" (dict "root" $root "id" $id "secretName" $.secretName) | fromJson }}
{{- if $ref.name }}
{{- $sources = append $sources (dict "secret" (dict "name" $ref.name "items" (list (dict "key" $ref.key "path" $d.file)))) -}}
{{- end }}
{{- end }}
{{- end }}
{{- $pt := $root.Values.kafka.sasl.oauth.projectedServiceAccountToken -}}
{{- if and (eq $vol "kafka") (eq (include "sluice.saslMechanism" $root) "OAUTHBEARER") $pt.enabled }}
{{- $sources = append $sources (dict "serviceAccountToken" (dict "audience" $pt.audience "expirationSeconds" (int $pt.expirationSeconds) "path" "oauth-token")) -}}
{{- end }}
{{- if $sources }}
- name: {{ $vol }}
  projected:
    # 0440: readable by the group (fsGroup 65532), not by others.
    defaultMode: 288
    sources:
      {{- toYaml $sources | nindent 6 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The mounts of those volumes: same argument. */}}
{{- define "sluice.fileMounts" -}}
{{- $vols := include "sluice.fileVolumes" . | fromYamlArray -}}
{{- range $vols }}
- name: {{ .name }}
  mountPath: /etc/sluice/{{ .name }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* The pods' security context: restricted Pod Security Standard, user 65532 of the images. */}}
{{- define "sluice.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "sluice.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* terminationGracePeriodSeconds: above the shutdown timeout plus the 5 s a process may take after it. */}}
{{- define "sluice.gracePeriod" -}}
{{- $timeout := int .Values.shutdownTimeoutSeconds -}}
{{- $grace := int .Values.terminationGracePeriodSeconds -}}
{{- if eq $grace 0 -}}
{{- add $timeout 10 -}}
{{- else if le $grace (add $timeout 5) -}}
{{- fail (printf "terminationGracePeriodSeconds %d must be above shutdownTimeoutSeconds + 5 = %d: a process may take the shutdown timeout and 5 s more to commit and exit, and Kubernetes kills it at the grace period" $grace (add $timeout 5)) -}}
{{- else -}}
{{- $grace -}}
{{- end -}}
{{- end -}}

{{/* The partitions a component's replicas share, the ceiling of its replicas. */}}
{{- define "sluice.partitionCeiling" -}}
{{- $p := .root.Values.topics.partitions -}}
{{- if eq .component "sender" -}}
{{- int $p.deliveries -}}
{{- else -}}
{{- add (int $p.attempts) (int $p.eventlog) -}}
{{- end -}}
{{- end -}}

{{/* The consumer group of a component: its SLUICE_GROUP setting or the default. */}}
{{- define "sluice.group" -}}
{{- $cfg := (get .root.Values .component).config | default dict -}}
{{- get $cfg "SLUICE_GROUP" | default (printf "sluice-%s" .component) -}}
{{- end -}}

{{/* A setting's value as an env string: whole numbers stay whole (YAML numbers arrive as floats, which print as 2.68435456e+08). */}}
{{- define "sluice.envValue" -}}
{{- if kindIs "float64" . -}}
{{- int64 . | toString | quote -}}
{{- else -}}
{{- toString . | quote -}}
{{- end -}}
{{- end -}}

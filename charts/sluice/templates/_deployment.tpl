{{/*
The Deployment of a component: dict "root" $ "component" "ingest|sender|logwriter".
The three differ only in their settings (the env below) and ports.
*/}}
{{- define "sluice.deployment" -}}
{{- $root := .root -}}
{{- $c := .component -}}
{{- $v := get $root.Values $c -}}
{{- $ctx := dict "root" $root "component" $c -}}
{{- $secretName := include "sluice.secretName" $root -}}
{{- $clickhouse := has $c (list "ingest" "logwriter") -}}
{{- $files := dict "root" $root "secretName" $secretName "clickhouse" $clickhouse -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "sluice.fullname" $root }}-{{ $c }}
  labels:
    {{- include "sluice.labels" $ctx | nindent 4 }}
spec:
  {{- if eq $v.autoscaling.mode "none" }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "sluice.selectorLabels" $ctx | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # A new pod must be ready before an old one goes, so the consumer
      # group never loses more than one member at a time.
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "sluice.selectorLabels" $ctx | nindent 8 }}
        app.kubernetes.io/part-of: sluice
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "sluice.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
      terminationGracePeriodSeconds: {{ include "sluice.gracePeriod" $root }}
      securityContext:
        {{- include "sluice.podSecurityContext" $root | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml $v.topologySpreadConstraints | nindent 8 }}
      {{- else if $root.Values.defaultTopologySpread }}
      topologySpreadConstraints:
        {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
        - maxSkew: 1
          topologyKey: {{ $key }}
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "sluice.selectorLabels" $ctx | nindent 14 }}
          # Counts only the pods of the same rollout, so a rolling update
          # is spread like the pods it replaces.
          matchLabelKeys:
            - pod-template-hash
        {{- end }}
      {{- end }}
      containers:
        - name: {{ $c }}
          image: {{ include "sluice.image" $ctx | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          securityContext:
            {{- include "sluice.containerSecurityContext" $root | nindent 12 }}
          ports:
            {{- if eq $c "ingest" }}
            - name: http
              containerPort: {{ $root.Values.apiPort }}
              protocol: TCP
            {{- end }}
            - name: ops
              containerPort: {{ $root.Values.opsPort }}
              protocol: TCP
          env:
            - name: SLUICE_OPS_ADDR
              value: ":{{ $root.Values.opsPort }}"
            - name: SLUICE_SHUTDOWN_TIMEOUT
              value: "{{ int $root.Values.shutdownTimeoutSeconds }}s"
            {{- include "sluice.kafkaEnv" (dict "root" $root "secretName" $secretName) | nindent 12 }}
            {{- if eq $c "ingest" }}
            - name: SLUICE_API_ADDR
              value: ":{{ $root.Values.apiPort }}"
            {{- include "sluice.secretEnv" (dict "root" $root "id" "admin-key" "secretName" $secretName) | nindent 12 }}
            {{- end }}
            {{- if has $c (list "ingest" "sender") }}
            {{- include "sluice.secretEnv" (dict "root" $root "id" "secrets-key" "secretName" $secretName) | nindent 12 }}
            {{- end }}
            {{- if $clickhouse }}
            {{- include "sluice.clickhouseEnv" (dict "root" $root "secretName" $secretName) | nindent 12 }}
            {{- end }}
            {{- range $name, $value := $v.config }}
            - name: {{ $name }}
              value: {{ include "sluice.envValue" $value }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          # /healthz fails only when a stage is stuck, never while Kafka or
          # ClickHouse are awaited, so liveness restarts wedged pods only.
          # The start-up probe gives the process 60 s to listen at all.
          startupProbe:
            httpGet:
              path: /healthz
              port: ops
            periodSeconds: 2
            failureThreshold: 30
            timeoutSeconds: 2
          livenessProbe:
            httpGet:
              path: /healthz
              port: ops
            periodSeconds: 10
            failureThreshold: 3
            timeoutSeconds: 3
          # /readyz: every stage runs and its dependencies answer; 503
          # "draining" from SIGTERM on.
          readinessProbe:
            httpGet:
              path: /readyz
              port: ops
            periodSeconds: 5
            failureThreshold: 2
            timeoutSeconds: 3
          {{- with $v.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- $mounts := include "sluice.fileMounts" $files | fromYamlArray }}
          {{- $mounts = concat $mounts ($v.extraVolumeMounts | default list) }}
          {{- with $mounts }}
          volumeMounts:
            {{- toYaml . | nindent 12 }}
          {{- end }}
      {{- $volumes := include "sluice.fileVolumes" $files | fromYamlArray }}
      {{- $volumes = concat $volumes ($v.extraVolumes | default list) }}
      {{- with $volumes }}
      volumes:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

{{/* The kafka trigger's connection metadata, from the kafka values. */}}
{{- define "sluice.kedaKafkaMetadata" -}}
{{- $k := .Values.kafka -}}
{{- $m := include "sluice.saslMechanism" . -}}
{{- if $k.tls.enabled }}
tls: enable
{{- end }}
{{- if eq $m "PLAIN" }}
sasl: plaintext
{{- else if eq $m "SCRAM-SHA-256" }}
sasl: scram_sha256
{{- else if eq $m "SCRAM-SHA-512" }}
sasl: scram_sha512
{{- else if eq $m "AWS_MSK_IAM" }}
sasl: oauthbearer
saslTokenProvider: aws_msk_iam
awsRegion: {{ required "kafka.aws.region is required for KEDA with AWS_MSK_IAM: the scaler signs its requests for that region" $k.aws.region | quote }}
{{- end }}
{{- end -}}

{{/* "true" when the kafka triggers need a TriggerAuthentication: TLS files or SASL. */}}
{{- define "sluice.kedaAuthNeeded" -}}
{{- $k := .Values.kafka -}}
{{- if or (ne (include "sluice.saslMechanism" .) "none") $k.tls.ca.value $k.tls.ca.existingSecret.name $k.tls.cert.value $k.tls.cert.existingSecret.name -}}
true
{{- end -}}
{{- end -}}

{{/*
The TriggerAuthentication of the kafka triggers, built from the same Secrets
the pods mount: the CA, client certificate and key, the SASL password; the
user name is read from the scaled Deployment's SLUICE_KAFKA_SASL_USERNAME.
AWS MSK IAM authenticates as the workload's own IAM identity.
*/}}
{{- define "sluice.triggerAuthentication" -}}
{{- $secretName := include "sluice.secretName" . -}}
{{- $m := include "sluice.saslMechanism" . -}}
{{- $refs := list -}}
{{- range $id, $param := dict "kafka-ca.crt" "ca" "kafka-tls.crt" "cert" "kafka-tls.key" "key" "kafka-sasl-password" "password" -}}
{{- $ref := include "sluice.secretRef" (dict "root" $ "id" $id "secretName" $secretName) | fromJson -}}
{{- if $ref.name -}}
{{- $refs = append $refs (dict "parameter" $param "name" $ref.name "key" $ref.key) -}}
{{- end -}}
{{- end -}}
apiVersion: keda.sh/v1alpha1
kind: TriggerAuthentication
metadata:
  name: {{ include "sluice.fullname" . }}-kafka
  labels:
    {{- include "sluice.labels" (dict "root" . "component" "sluice") | nindent 4 }}
spec:
  {{- with $refs }}
  secretTargetRef:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if has $m (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512") }}
  env:
    - parameter: username
      name: SLUICE_KAFKA_SASL_USERNAME
  {{- end }}
  {{- if eq $m "AWS_MSK_IAM" }}
  podIdentity:
    provider: aws
    identityOwner: workload
  {{- end }}
{{- end -}}

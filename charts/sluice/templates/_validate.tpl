{{/*
Checks across values that values.schema.json cannot express, each failing
with what to change. templates/validate.yaml runs it once per render.
*/}}
{{- define "sluice.validate" -}}
{{- $v := .Values -}}
{{- if not $v.kafka.brokers -}}
{{- fail "kafka.brokers is required: list the bootstrap servers, e.g. [my-cluster-kafka-bootstrap.kafka:9093]" -}}
{{- end -}}
{{- if not $v.clickhouse.addrs -}}
{{- fail "clickhouse.addrs is required: list the native-protocol addresses, e.g. [clickhouse.clickhouse:9000]" -}}
{{- end -}}

{{- /* Every secret item: never both a value and an existing Secret. */ -}}
{{- $items := include "sluice.secretItems" . | fromJson -}}
{{- range $id, $_ := $items -}}
{{- $_ := include "sluice.secretRef" (dict "root" $ "id" $id "secretName" "x") -}}
{{- end -}}
{{- if not (or $v.secretsKey.value $v.secretsKey.existingSecret.name) -}}
{{- fail "secretsKey is required: set secretsKey.existingSecret.name (and .key) to a Secret holding 32 random bytes in base64 (openssl rand -base64 32), or secretsKey.value" -}}
{{- end -}}
{{- with $v.secretsKey.value -}}
{{- if ne (len (b64dec .)) 32 -}}
{{- fail "secretsKey.value must be 32 random bytes in base64 (openssl rand -base64 32)" -}}
{{- end -}}
{{- end -}}
{{- with $v.adminKey.value -}}
{{- if lt (len .) 32 -}}
{{- fail (printf "adminKey.value must be at least 32 characters, got %d" (len .)) -}}
{{- end -}}
{{- end -}}

{{- /* Kafka TLS. */ -}}
{{- $kt := $v.kafka.tls -}}
{{- range $name := list "ca" "cert" "key" -}}
{{- $it := get $kt $name -}}
{{- if and (or $it.value $it.existingSecret.name) (not $kt.enabled) -}}
{{- fail (printf "kafka.tls.%s is set but kafka.tls.enabled is false: enable TLS or remove it" $name) -}}
{{- end -}}
{{- end -}}
{{- if ne (not (or $kt.cert.value $kt.cert.existingSecret.name)) (not (or $kt.key.value $kt.key.existingSecret.name)) -}}
{{- fail "kafka.tls.cert and kafka.tls.key go together: a client certificate needs its key (mTLS), so give both or neither" -}}
{{- end -}}

{{- /* Kafka SASL. */ -}}
{{- $s := $v.kafka.sasl -}}
{{- $m := include "sluice.saslMechanism" . -}}
{{- if not (has $m (list "none" "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512" "OAUTHBEARER" "AWS_MSK_IAM")) -}}
{{- fail (printf "kafka.sasl.mechanism %q is not one of none, PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, AWS_MSK_IAM" $m) -}}
{{- end -}}
{{- $hasPassword := or $s.password.value $s.password.existingSecret.name -}}
{{- $hasToken := or $s.oauth.token.value $s.oauth.token.existingSecret.name -}}
{{- if has $m (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512") -}}
{{- if not $s.username -}}
{{- fail (printf "kafka.sasl.username is required with SASL %s" $m) -}}
{{- end -}}
{{- if not $hasPassword -}}
{{- fail (printf "kafka.sasl.password is required with SASL %s: set password.existingSecret (Strimzi: the KafkaUser's Secret, key password) or password.value" $m) -}}
{{- end -}}
{{- else if $hasPassword -}}
{{- fail (printf "kafka.sasl.password is set but kafka.sasl.mechanism is %s, which takes no password" $m) -}}
{{- end -}}
{{- if eq $m "OAUTHBEARER" -}}
{{- if eq (not $hasToken) (not $s.oauth.projectedServiceAccountToken.enabled) -}}
{{- fail "SASL OAUTHBEARER needs exactly one token source: kafka.sasl.oauth.token (a Secret) or kafka.sasl.oauth.projectedServiceAccountToken.enabled" -}}
{{- end -}}
{{- if and $s.oauth.projectedServiceAccountToken.enabled (not $s.oauth.projectedServiceAccountToken.audience) -}}
{{- fail "kafka.sasl.oauth.projectedServiceAccountToken.audience is required: the audience your brokers' OAuth validation expects" -}}
{{- end -}}
{{- if lt (int $s.oauth.projectedServiceAccountToken.expirationSeconds) 600 -}}
{{- fail "kafka.sasl.oauth.projectedServiceAccountToken.expirationSeconds must be at least 600 (Kubernetes' minimum)" -}}
{{- end -}}
{{- else if or $hasToken $s.oauth.projectedServiceAccountToken.enabled $s.oauth.extensions -}}
{{- fail (printf "kafka.sasl.oauth is set but kafka.sasl.mechanism is %s, not OAUTHBEARER" $m) -}}
{{- end -}}
{{- if and (eq $m "AWS_MSK_IAM") (not $kt.enabled) -}}
{{- fail "SASL AWS_MSK_IAM needs kafka.tls.enabled: true (MSK's IAM listener, port 9098, is TLS only)" -}}
{{- end -}}
{{- if and $v.kafka.aws.region (ne $m "AWS_MSK_IAM") -}}
{{- fail (printf "kafka.aws.region is set but kafka.sasl.mechanism is %s, not AWS_MSK_IAM" $m) -}}
{{- end -}}

{{- /* ClickHouse TLS. */ -}}
{{- $ct := $v.clickhouse.tls -}}
{{- range $name := list "ca" "cert" "key" -}}
{{- $it := get $ct $name -}}
{{- if and (or $it.value $it.existingSecret.name) (not $ct.enabled) -}}
{{- fail (printf "clickhouse.tls.%s is set but clickhouse.tls.enabled is false: enable TLS or remove it" $name) -}}
{{- end -}}
{{- end -}}
{{- if ne (not (or $ct.cert.value $ct.cert.existingSecret.name)) (not (or $ct.key.value $ct.key.existingSecret.name)) -}}
{{- fail "clickhouse.tls.cert and clickhouse.tls.key go together: give both or neither" -}}
{{- end -}}

{{- /* Shutdown and grace period. */ -}}
{{- $_ := include "sluice.gracePeriod" . -}}

{{- /* Autoscaling: one mode per workload, and the partition ceiling. */ -}}
{{- range $c := list "ingest" "sender" "logwriter" -}}
{{- $cv := get $v $c -}}
{{- $a := $cv.autoscaling -}}
{{- $modes := list "none" "hpa" "keda" -}}
{{- if eq $c "ingest" }}{{ $modes = list "none" "hpa" }}{{ end -}}
{{- if not (has $a.mode $modes) -}}
{{- fail (printf "%s.autoscaling.mode %q is not one of %s" $c $a.mode (join ", " $modes)) -}}
{{- end -}}
{{- if and (ne $a.mode "none") (gt (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- fail (printf "%s.autoscaling.minReplicas %d is above maxReplicas %d" $c (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- if ne $c "ingest" -}}
{{- $ceiling := include "sluice.partitionCeiling" (dict "root" $ "component" $c) | int -}}
{{- $what := "topics.partitions.deliveries" -}}
{{- if eq $c "logwriter" }}{{ $what = "topics.partitions.attempts + topics.partitions.eventlog" }}{{ end -}}
{{- if and (ne $a.mode "none") (gt (int $a.maxReplicas) $ceiling) -}}
{{- fail (printf "%s.autoscaling.maxReplicas %d is above the %d partitions its consumer group shares (%s): replicas beyond one per partition get no partition and do nothing. Lower maxReplicas or create the topics with more partitions" $c (int $a.maxReplicas) $ceiling $what) -}}
{{- end -}}
{{- if and (eq $a.mode "none") (gt (int $cv.replicas) $ceiling) -}}
{{- fail (printf "%s.replicas %d is above the %d partitions its consumer group shares (%s): replicas beyond one per partition get no partition and do nothing" $c (int $cv.replicas) $ceiling $what) -}}
{{- end -}}
{{- if and (eq $a.mode "keda") (eq $m "OAUTHBEARER") (not $a.keda.authenticationRef.name) -}}
{{- fail (printf "%s.autoscaling.mode keda with SASL OAUTHBEARER: KEDA's kafka scaler cannot use a token file, so name a TriggerAuthentication of your own in %s.autoscaling.keda.authenticationRef.name, or use mode hpa" $c $c) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- /* The topics Job. */ -}}
{{- $t := $v.topics -}}
{{- if gt (int $t.minInsyncReplicas) (int $t.replicationFactor) -}}
{{- fail (printf "topics.minInsyncReplicas %d is above topics.replicationFactor %d: every acks=all write would be refused" (int $t.minInsyncReplicas) (int $t.replicationFactor)) -}}
{{- end -}}
{{- if le (int $t.activeDeadlineSeconds) (int $t.kafkaWaitSeconds) -}}
{{- fail (printf "topics.activeDeadlineSeconds %d must be above topics.kafkaWaitSeconds %d, or the Job is killed while still waiting for Kafka" (int $t.activeDeadlineSeconds) (int $t.kafkaWaitSeconds)) -}}
{{- end -}}

{{- /* Monitoring. */ -}}
{{- if and $v.metrics.podMonitor.enabled $v.metrics.serviceMonitor.enabled -}}
{{- fail "metrics.podMonitor and metrics.serviceMonitor are both enabled: choose one, or Prometheus scrapes every pod twice" -}}
{{- end -}}
{{- end -}}

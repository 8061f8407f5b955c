{{/* The five services, in the order of shared/settings.py SERVICE_NAMES. */}}
{{- define "kaiten.services" -}}
watcher planner provisioner deployer tuner
{{- end }}

{{- define "kaiten.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's name prefix; service names are appended (at most 63 characters in all). */}}
{{- define "kaiten.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kaiten.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; call with (dict "root" $ "component" "watcher"). */}}
{{- define "kaiten.labels" -}}
helm.sh/chart: {{ include "kaiten.chart" .root }}
{{ include "kaiten.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: kaiten
{{- end }}

{{- define "kaiten.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kaiten.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "kaiten.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* --- connections ------------------------------------------------------------------------ */}}

{{- define "kaiten.connectionSecret" -}}
{{- printf "%s-connection" (include "kaiten.fullname" .) }}
{{- end }}

{{- define "kaiten.natsHost" -}}
{{- printf "%s-nats" (include "kaiten.fullname" .) }}
{{- end }}

{{- define "kaiten.postgresHost" -}}
{{- printf "%s-postgres" (include "kaiten.fullname" .) }}
{{- end }}

{{- define "kaiten.postgresSecret" -}}
{{- printf "%s-postgres" (include "kaiten.fullname" .) }}
{{- end }}

{{/* The NATS URL the chart stores in its connection Secret ("" when an existing Secret has it). */}}
{{- define "kaiten.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "nats://%s:4222" (include "kaiten.natsHost" .) }}
{{- else if not .Values.nats.existingSecret }}
{{- required "set nats.url, nats.existingSecret or nats.enabled=true: Kaiten's services talk through NATS JetStream" .Values.nats.url }}
{{- end }}
{{- end }}

{{/* The DATABASE_URL the chart stores in a Secret ("" when an existing Secret has it, or when
the bundled server's URL is composed in the pod from its password). */}}
{{- define "kaiten.databaseUrl" -}}
{{- if and (not .Values.postgres.enabled) (not .Values.postgres.existingSecret) }}
{{- required "set postgres.url, postgres.existingSecret or postgres.enabled=true: Kaiten keeps its state in PostgreSQL" .Values.postgres.url }}
{{- end }}
{{- end }}

{{/* NATS_URL and DATABASE_URL: secretKeyRefs (the bundled server's URL is composed from its
password with Kubernetes' $(VAR) expansion). Call with (dict "root" $ "secret" NAME), where
NAME is the Secret that holds the chart's own URLs. */}}
{{- define "kaiten.connectionEnv" -}}
{{- $root := .root -}}
- name: NATS_URL
  valueFrom:
    secretKeyRef:
      {{- if and (not $root.Values.nats.enabled) $root.Values.nats.existingSecret }}
      name: {{ $root.Values.nats.existingSecret }}
      key: {{ $root.Values.nats.existingSecretKey }}
      {{- else }}
      name: {{ include "kaiten.connectionSecret" $root }}
      key: nats-url
      {{- end }}
{{ include "kaiten.databaseEnv" . }}
{{- end }}

{{- define "kaiten.databaseEnv" -}}
{{- $root := .root -}}
{{- if $root.Values.postgres.enabled -}}
- name: POSTGRES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "kaiten.postgresSecret" $root }}
      key: password
- name: DATABASE_URL
  value: {{ printf "postgresql://%s:$(POSTGRES_PASSWORD)@%s:5432/%s" $root.Values.postgres.username (include "kaiten.postgresHost" $root) $root.Values.postgres.database | quote }}
{{- else -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if $root.Values.postgres.existingSecret }}
      name: {{ $root.Values.postgres.existingSecret }}
      key: {{ $root.Values.postgres.existingSecretKey }}
      {{- else }}
      name: {{ .secret }}
      key: database-url
      {{- end }}
{{- end }}
{{- end }}

{{/* --- the provisioner's backend and the webhook ---------------------------------------- */}}

{{- define "kaiten.provisionerBackend" -}}
{{- $backend := .Values.provisioner.backend }}
{{- if not (has $backend (list "karpenter" "azure" "byo")) }}
{{- fail (printf "provisioner.backend %q: choose karpenter, azure or byo (simulated registers fake nodes and is for the development cluster only)" $backend) }}
{{- end }}
{{- if .Values.settings.nodeAutoProvisioning }}{{ $backend }}{{ else }}byo{{ end }}
{{- end }}

{{- define "kaiten.webhookService" -}}
{{- printf "%s-webhook" (include "kaiten.fullname" .) }}
{{- end }}

{{- define "kaiten.webhookSecret" -}}
{{- default (printf "%s-webhook-tls" (include "kaiten.fullname" .)) .Values.webhook.certificate.existingSecret }}
{{- end }}

{{- define "kaiten.webhookSelfRegister" -}}
{{- if not (has .Values.webhook.registration (list "chart" "self-register")) }}
{{- fail (printf "webhook.registration %q: choose chart or self-register" .Values.webhook.registration) }}
{{- end }}
{{- if and .Values.webhook.enabled (eq .Values.webhook.registration "self-register") }}true{{ end }}
{{- end }}

{{- define "kaiten.webhookUrl" -}}
{{- $svc := include "kaiten.webhookService" . }}
{{- default (printf "https://%s.%s.svc:%d/validate" $svc .Release.Namespace (int .Values.webhook.servicePort)) .Values.webhook.url }}
{{- end }}

{{/* Env entries from a map, sorted by name; values are quoted strings. */}}
{{- define "kaiten.envFromMap" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{/* --- one service's settings ----------------------------------------------------------- */}}

{{/* The KAITEN_* (and Azure) variables of one service, as a map: env and <service>.env override
them (they are one list, without duplicates). Call with (dict "root" $ "service" NAME). */}}
{{- define "kaiten.serviceEnv" -}}
{{- $root := .root }}
{{- $service := .service }}
{{- $values := index $root.Values $service }}
{{- $env := dict }}
{{- /* The health server must answer the kubelet, not only the pod's loopback. */}}
{{- $_ := set $env "KAITEN_HEALTH_HOST" "0.0.0.0" }}
{{- $_ = set $env "KAITEN_HEALTH_PORT" ($values.healthPort | toString) }}
{{- $_ = set $env "KAITEN_CLOUD_PROVIDER" $root.Values.settings.cloudProvider }}
{{- $_ = set $env "KAITEN_NODE_AUTO_PROVISIONING" ($root.Values.settings.nodeAutoProvisioning | toString) }}
{{- $_ = set $env "KAITEN_LOG_LEVEL" $root.Values.settings.logLevel }}
{{- $_ = set $env "KAITEN_LOG_FORMAT" $root.Values.settings.logFormat }}
{{- /* Nothing may write to the image: ~ (the kubeconfig lookup, SDK caches) is the emptyDir. */}}
{{- $_ = set $env "HOME" "/tmp" }}
{{- if eq $service "watcher" }}
{{- $_ = set $env "KAITEN_WATCHER_NAMESPACES" $values.namespaces }}
{{- $_ = set $env "KAITEN_WEBHOOK_ENABLED" ($root.Values.webhook.enabled | toString) }}
{{- if $root.Values.webhook.enabled }}
{{- $_ = set $env "KAITEN_WEBHOOK_HOST" "0.0.0.0" }}
{{- $_ = set $env "KAITEN_WEBHOOK_PORT" ($root.Values.webhook.port | toString) }}
{{- $_ = set $env "KAITEN_WEBHOOK_CERT_DIR" "/etc/kaiten/webhook" }}
{{- $selfRegister := include "kaiten.webhookSelfRegister" $root }}
{{- $_ = set $env "KAITEN_WEBHOOK_SELF_REGISTER" (ternary "true" "false" (eq $selfRegister "true")) }}
{{- if $selfRegister }}
{{- $_ = set $env "KAITEN_WEBHOOK_URL" (include "kaiten.webhookUrl" $root) }}
{{- end }}
{{- end }}
{{- end }}
{{- if eq $service "planner" }}
{{- with $values.vllmImage }}{{ $_ = set $env "KAITEN_PLANNER_VLLM_IMAGE" . }}{{ end }}
{{- with $values.transformersImage }}{{ $_ = set $env "KAITEN_PLANNER_TRANSFORMERS_IMAGE" . }}{{ end }}
{{- end }}
{{- if eq $service "provisioner" }}
{{- $backend := include "kaiten.provisionerBackend" $root }}
{{- $_ = set $env "KAITEN_PROVISIONER_BACKEND" $backend }}
{{- if eq $backend "azure" }}
{{- $azure := $values.azure }}
{{- $_ = set $env "ARM_SUBSCRIPTION_ID" (required "provisioner.azure.subscriptionId is required by the azure backend" $azure.subscriptionId) }}
{{- $_ = set $env "ARM_RESOURCE_GROUP" (required "provisioner.azure.resourceGroup is required by the azure backend" $azure.resourceGroup) }}
{{- $_ = set $env "AZURE_CLUSTER_NAME" (required "provisioner.azure.clusterName is required by the azure backend" $azure.clusterName) }}
{{- with $azure.location }}{{ $_ = set $env "LOCATION" . }}{{ end }}
{{- end }}
{{- end }}
{{- range $name, $value := merge (dict) ($values.env | default dict) ($root.Values.env | default dict) }}
{{- $_ = set $env $name (toString $value) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/* --- one service's Deployment ----------------------------------------------------------- */}}

{{/* Call with (dict "root" $ "service" NAME "annotations" MAP): the Deployment running
`kaiten run NAME`. The watcher also gets the webhook's port, settings and certificate. */}}
{{- define "kaiten.deployment" -}}
{{- $root := .root }}
{{- $service := .service }}
{{- $values := index $root.Values $service }}
{{- $ctx := dict "root" $root "component" $service }}
{{- $webhook := and (eq $service "watcher") $root.Values.webhook.enabled }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "kaiten.fullname" $root }}-{{ $service }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kaiten.labels" $ctx | nindent 4 }}
spec:
  replicas: {{ $values.replicas }}
  selector:
    matchLabels:
      {{- include "kaiten.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "kaiten.labels" $ctx | nindent 8 }}
        {{- with merge (dict) $values.podLabels $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with merge (dict) (.annotations | default dict) $values.podAnnotations $root.Values.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "kaiten.fullname" $root }}-{{ $service }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      terminationGracePeriodSeconds: {{ $root.Values.terminationGracePeriodSeconds }}
      containers:
        - name: {{ $service }}
          image: {{ include "kaiten.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          command: ["kaiten"]
          args: ["run", {{ $service | quote }}]
          env:
            {{- include "kaiten.connectionEnv" (dict "root" $root "secret" (include "kaiten.connectionSecret" $root)) | nindent 12 }}
            {{- include "kaiten.envFromMap" (include "kaiten.serviceEnv" . | fromYaml) | trim | nindent 12 }}
          ports:
            - name: health
              containerPort: {{ $values.healthPort }}
              protocol: TCP
            {{- if $webhook }}
            - name: webhook
              containerPort: {{ $root.Values.webhook.port }}
              protocol: TCP
            {{- end }}
          # /healthz: the process answers; /readyz: NATS connected and PostgreSQL answers
          # (shared/health.py), and 503 while draining on SIGTERM.
          livenessProbe:
            httpGet:
              path: /healthz
              port: health
            initialDelaySeconds: 10
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: health
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          resources:
            {{- toYaml (default $root.Values.resources $values.resources) | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $webhook }}
            - name: webhook-certificate
              mountPath: /etc/kaiten/webhook
              readOnly: true
            {{- end }}
      volumes:
        # The only writable place: the root filesystem is read-only.
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- if $webhook }}
        # tls.crt, tls.key and ca.crt (KAITEN_WEBHOOK_CERT_DIR): the watcher uses a mounted
        # certificate as it is and generates none (services/watcher/webhook.py).
        - name: webhook-certificate
          secret:
            secretName: {{ include "kaiten.webhookSecret" $root }}
            defaultMode: 0440
        {{- end }}
      {{- with merge (dict) ($values.nodeSelector | default dict) $root.Values.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- if and $root.Values.podDisruptionBudget.enabled (gt (int $values.replicas) 1) }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "kaiten.fullname" $root }}-{{ $service }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kaiten.labels" $ctx | nindent 4 }}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      {{- include "kaiten.selectorLabels" $ctx | nindent 6 }}
{{- end }}
{{- end }}

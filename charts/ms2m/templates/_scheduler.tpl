{{/*
The extender stanza of a KubeSchedulerConfiguration, the same as
examples/kube-scheduler-config.yaml (docs/scheduler.md): (dict "ctx" $ "caFile" PATH)
*/}}
{{- define "ms2m.extenderStanza" -}}
- urlPrefix: https://{{ include "ms2m.extenderServiceName" .ctx }}.{{ .ctx.Release.Namespace }}.svc:{{ .ctx.Values.schedulerExtender.port }}
  filterVerb: filter
  prioritizeVerb: prioritize
  weight: {{ .ctx.Values.schedulerExtender.weight }}
  nodeCacheCapable: true
  enableHTTPS: true
  tlsConfig:
    caFile: {{ .caFile }}
  httpTimeout: {{ .ctx.Values.schedulerExtender.httpTimeout }}
  ignorable: false
  managedResources:
    - name: ms2m.io/checkpoint-restore
      ignoredByScheduler: true
{{- end }}

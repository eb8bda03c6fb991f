# ms2m itself, from the chart in this repository (docs/install.md).

resource "helm_release" "ms2m" {
  name      = "ms2m"
  chart     = local.chart_path
  namespace = kubernetes_namespace_v1.ms2m.metadata[0].name

  # The manager's webhook must be up before Terraform reports success, so
  # the first migratable pods get their sidecar.
  wait    = true
  timeout = 600

  values = [yamlencode({
    image = {
      repository = var.ms2m_image_repository
      tag        = var.ms2m_image_tag
    }
    checkpointImageRepository = local.checkpoint_image_repository
    schedulerExtender = {
      # GKE's kube-scheduler cannot be configured: ms2m runs a second
      # scheduler with the extender, and migratable workloads set
      # spec.schedulerName: ms2m-scheduler.
      secondaryScheduler = {
        enabled = true
      }
    }
    agent = {
      nodeSelector = local.node_pool_label
      kubelet = {
        insecureTLS = var.kubelet_insecure_tls
      }
      registryAuth = {
        existingSecret = kubernetes_secret_v1.registry_auth.metadata[0].name
      }
    }
  })]

  depends_on = [kubernetes_daemon_set_v1.node_setup]
}

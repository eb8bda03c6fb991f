# ms2m itself, from the chart in this repository (docs/install.md).

locals {
  release_name = "ms2m"
  # The agent's and the manager's ServiceAccounts as the chart names them:
  # <fullname>-agent and <fullname>-manager, and the fullname of a release
  # whose name contains "ms2m" is the release name. The Workload Identity
  # bindings (registry.tf) name them.
  agent_service_account   = "${local.release_name}-agent"
  manager_service_account = "${local.release_name}-manager"
}

resource "helm_release" "ms2m" {
  name      = local.release_name
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
    manager = {
      # The manager deletes checkpoint images no pod runs from as the
      # deleter (registry.tf), with tokens from the GKE metadata server.
      serviceAccount = {
        annotations = {
          "iam.gke.io/gcp-service-account" = google_service_account.checkpoint_deleter.email
        }
      }
    }
    agent = {
      nodeSelector = local.node_pool_label
      kubelet = {
        insecureTLS = var.kubelet_insecure_tls
      }
      # The agent pushes checkpoint images as the pusher (registry.tf),
      # with tokens from the GKE metadata server: no registry Secret.
      serviceAccount = {
        annotations = {
          "iam.gke.io/gcp-service-account" = google_service_account.checkpoint_pusher.email
        }
      }
    }
  })]

  # The agent can push from its first migration on, and the manager
  # delete from its first cleanup on.
  depends_on = [
    kubernetes_daemon_set_v1.node_setup,
    google_service_account_iam_member.agent_workload_identity,
    google_artifact_registry_repository_iam_member.checkpoint_pusher,
    google_service_account_iam_member.manager_workload_identity,
    google_artifact_registry_repository_iam_member.checkpoint_deleter,
  ]
}

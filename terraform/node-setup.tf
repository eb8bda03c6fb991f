# GKE does not run startup scripts on its nodes, so the checkpoint/restore
# pool is prepared by a DaemonSet: a privileged init container runs
# scripts/enable-checkpoint-restore.sh on the host (CRIU, containerd's
# restore switches as the ms2m agent checks them), then a pause container
# keeps the pod, so the script runs again only when the node restarts.

resource "kubernetes_namespace_v1" "ms2m" {
  metadata {
    name = "ms2m-system"
    labels = {
      # The agent mounts the kubelet's checkpoint directory (hostPath) and
      # the node setup is privileged: the baseline level forbids both.
      "pod-security.kubernetes.io/enforce" = "privileged"
    }
  }
  depends_on = [google_container_node_pool.checkpoint_restore]
}

resource "kubernetes_daemon_set_v1" "node_setup" {
  metadata {
    name      = "ms2m-node-setup"
    namespace = kubernetes_namespace_v1.ms2m.metadata[0].name
    labels    = { "app.kubernetes.io/name" = "ms2m-node-setup" }
  }

  spec {
    selector {
      match_labels = { "app.kubernetes.io/name" = "ms2m-node-setup" }
    }

    template {
      metadata {
        labels = { "app.kubernetes.io/name" = "ms2m-node-setup" }
      }

      spec {
        host_pid      = true
        node_selector = local.node_pool_label
        toleration {
          operator = "Exists"
        }

        init_container {
          name    = "enable-checkpoint-restore"
          image   = var.node_setup_image
          command = ["/bin/sh", "-c", file("${path.module}/scripts/enable-checkpoint-restore.sh")]
          env {
            name  = "CRIU_APT_SOURCE"
            value = var.criu_apt_source
          }
          env {
            name  = "CRIU_TCP_CLOSE"
            value = tostring(var.criu_tcp_close)
          }
          security_context {
            privileged = true
          }
        }

        container {
          name  = "pause"
          image = "registry.k8s.io/pause:3.10"
          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            run_as_user                = 65535
            capabilities {
              drop = ["ALL"]
            }
          }
        }
      }
    }
  }

  # The pods run until the node goes away; Terraform need not wait for the
  # rollout.
  wait_for_rollout = false
}

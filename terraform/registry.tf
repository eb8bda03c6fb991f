# Checkpoint images: an Artifact Registry repository that forgets them after
# checkpoint_image_ttl_days, and a service account that may push there and
# nowhere else. The agents push with its key; the nodes pull with their own
# identity (roles/artifactregistry.reader).

resource "google_artifact_registry_repository" "checkpoints" {
  repository_id = "${var.cluster_name}-checkpoints"
  location      = var.region
  format        = "DOCKER"
  description   = "ms2m checkpoint images: whole process memory of migrated pods (docs/security.md)."

  cleanup_policy_dry_run = false
  cleanup_policies {
    id     = "delete-old-checkpoints"
    action = "DELETE"
    condition {
      older_than = "${var.checkpoint_image_ttl_days * 86400}s"
    }
  }
}

resource "google_service_account" "checkpoint_pusher" {
  account_id   = "${var.cluster_name}-ckpt-push"
  display_name = "ms2m agent: pushes checkpoint images"
}

resource "google_artifact_registry_repository_iam_member" "checkpoint_pusher" {
  repository = google_artifact_registry_repository.checkpoints.name
  location   = google_artifact_registry_repository.checkpoints.location
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.checkpoint_pusher.email}"
}

# The agent's registry client reads a Docker config.json; Artifact Registry
# accepts a service account key as the password of the user _json_key. The
# key is in the Terraform state: keep the state private.
resource "google_service_account_key" "checkpoint_pusher" {
  service_account_id = google_service_account.checkpoint_pusher.name
}

locals {
  registry_host                 = "${var.region}-docker.pkg.dev"
  checkpoint_image_repository   = "${local.registry_host}/${var.project_id}/${google_artifact_registry_repository.checkpoints.repository_id}/images"
  checkpoint_pusher_credentials = base64decode(google_service_account_key.checkpoint_pusher.private_key)
}

resource "kubernetes_secret_v1" "registry_auth" {
  metadata {
    name      = "ms2m-checkpoint-registry"
    namespace = kubernetes_namespace_v1.ms2m.metadata[0].name
  }
  type = "kubernetes.io/dockerconfigjson"
  data = {
    ".dockerconfigjson" = jsonencode({
      auths = {
        (local.registry_host) = {
          username = "_json_key"
          password = local.checkpoint_pusher_credentials
          auth     = base64encode("_json_key:${local.checkpoint_pusher_credentials}")
        }
      }
    })
  }
}

# Checkpoint images: an Artifact Registry repository that forgets them after
# checkpoint_image_ttl_days, a Google service account that may push there
# and nowhere else, and one that may delete there and do nothing else. The
# agents push as the pusher; the manager deletes a checkpoint image (its
# manifest by digest, through the Docker registry API) as the deleter
# once no pod runs from it. Both act through Workload Identity (short-lived
# tokens from the GKE metadata server: no key, nothing in the Terraform
# state); the nodes pull with their own identity
# (roles/artifactregistry.reader).

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

# What a push needs and no more. Artifact Registry has no predefined
# push-only role: roles/artifactregistry.writer also lists and reads
# everything in the repository (images, tags, versions, files, packages).
# Reading cannot be left out: the agent's client (go-containerregistry,
# like docker) asks the registry's token service for the scope "push,pull"
# and checks with a HEAD whether each blob is already there before
# uploading it, and Artifact Registry grants pull only with
# downloadArtifacts. tags.create/update: the image is pushed under a tag
# (<pod>-<migration UID>), which a retried push sets again.
resource "google_project_iam_custom_role" "checkpoint_push" {
  role_id     = "${replace(var.cluster_name, "-", "_")}_checkpointPush"
  title       = "ms2m checkpoint image push"
  description = "Push (and the reads a Docker push makes) checkpoint images into one Artifact Registry repository; granted on that repository only."
  permissions = [
    "artifactregistry.repositories.uploadArtifacts",
    "artifactregistry.repositories.downloadArtifacts",
    "artifactregistry.tags.create",
    "artifactregistry.tags.update",
  ]
}

# On the checkpoint repository only, not the project.
resource "google_artifact_registry_repository_iam_member" "checkpoint_pusher" {
  repository = google_artifact_registry_repository.checkpoints.name
  location   = google_artifact_registry_repository.checkpoints.location
  role       = google_project_iam_custom_role.checkpoint_push.name
  member     = "serviceAccount:${google_service_account.checkpoint_pusher.email}"
}

# Workload Identity: the agent's Kubernetes ServiceAccount, and no other,
# may act as the pusher. The chart's ServiceAccount carries the annotation
# iam.gke.io/gcp-service-account (ms2m.tf).
resource "google_service_account_iam_member" "agent_workload_identity" {
  service_account_id = google_service_account.checkpoint_pusher.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${google_container_cluster.ms2m.workload_identity_config[0].workload_pool}[${kubernetes_namespace_v1.ms2m.metadata[0].name}/${local.agent_service_account}]"
}

resource "google_service_account" "checkpoint_deleter" {
  account_id   = "${var.cluster_name}-ckpt-del"
  display_name = "ms2m manager: deletes checkpoint images no pod runs from"
}

# What the manager's delete needs and no more: go-containerregistry's
# remote.Delete, an HTTP DELETE of /v2/<repo>/manifests/<digest> (the
# image's tag goes with it, hence tags.delete). Artifact Registry has no predefined
# delete-only role (roles/artifactregistry.repoAdmin also reads and
# writes everything in the repository). These permissions were chosen
# from Artifact Registry's permission reference without a cloud to try
# them against (unverified here): deleteArtifacts for a delete through the Docker API, tags.delete
# for the tag, versions.delete for the manifest. The role grants no read:
# no downloadArtifacts, as the manager never reads a process's memory, so
# a compromised manager can destroy checkpoint images but not copy them.
# (remote.Delete asks the registry's token service for the scope
# "push,pull,delete"; should Artifact Registry refuse that token without
# downloadArtifacts, the delete fails with "denied" and this role, not
# the manager, is what to revisit.)
resource "google_project_iam_custom_role" "checkpoint_delete" {
  role_id     = "${replace(var.cluster_name, "-", "_")}_checkpointDelete"
  title       = "ms2m checkpoint image delete"
  description = "Delete checkpoint images (tag and manifest, through the Docker API) from one Artifact Registry repository, without reading them; granted on that repository only."
  permissions = [
    "artifactregistry.repositories.deleteArtifacts",
    "artifactregistry.tags.delete",
    "artifactregistry.versions.delete",
  ]
}

# On the checkpoint repository only, not the project.
resource "google_artifact_registry_repository_iam_member" "checkpoint_deleter" {
  repository = google_artifact_registry_repository.checkpoints.name
  location   = google_artifact_registry_repository.checkpoints.location
  role       = google_project_iam_custom_role.checkpoint_delete.name
  member     = "serviceAccount:${google_service_account.checkpoint_deleter.email}"
}

# Workload Identity: the manager's Kubernetes ServiceAccount, and no other,
# may act as the deleter. The chart's ServiceAccount carries the annotation
# iam.gke.io/gcp-service-account (ms2m.tf).
resource "google_service_account_iam_member" "manager_workload_identity" {
  service_account_id = google_service_account.checkpoint_deleter.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${google_container_cluster.ms2m.workload_identity_config[0].workload_pool}[${kubernetes_namespace_v1.ms2m.metadata[0].name}/${local.manager_service_account}]"
}

locals {
  registry_host               = "${var.region}-docker.pkg.dev"
  checkpoint_image_repository = "${local.registry_host}/${var.project_id}/${google_artifact_registry_repository.checkpoints.repository_id}/images"
}

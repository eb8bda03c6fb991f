# A GKE cluster whose nodes can checkpoint and restore containers, with ms2m
# installed from charts/ms2m. See docs/install.md.

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_client_config" "current" {}

locals {
  # The node pool's label: the agent and the node setup run only there.
  node_pool_label = { "ms2m.io/node-pool" = "checkpoint-restore" }
  chart_path      = var.chart_path != "" ? var.chart_path : "${path.module}/../charts/ms2m"
  endpoint        = "https://${google_container_cluster.ms2m.endpoint}"
  cluster_ca      = base64decode(google_container_cluster.ms2m.master_auth[0].cluster_ca_certificate)
}

resource "google_compute_network" "ms2m" {
  name                    = var.cluster_name
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "ms2m" {
  name          = var.cluster_name
  network       = google_compute_network.ms2m.id
  region        = var.region
  ip_cidr_range = "10.10.0.0/20"

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = "10.20.0.0/14"
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = "10.30.0.0/20"
  }
}

# The nodes' own identity: logs, metrics and pulling images (including the
# checkpoint images a restore starts from), nothing else.
resource "google_service_account" "nodes" {
  account_id   = "${var.cluster_name}-nodes"
  display_name = "ms2m GKE nodes"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/artifactregistry.reader",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "ms2m" {
  name                = var.cluster_name
  location            = var.location
  network             = google_compute_network.ms2m.id
  subnetwork          = google_compute_subnetwork.ms2m.id
  min_master_version  = var.kubernetes_version
  deletion_protection = var.deletion_protection

  # Node pools are managed below; GKE insists on creating a default one.
  remove_default_node_pool = true
  initial_node_count       = 1

  release_channel {
    channel = var.release_channel
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }
}

resource "google_container_node_pool" "checkpoint_restore" {
  name       = "checkpoint-restore"
  cluster    = google_container_cluster.ms2m.id
  location   = var.location
  node_count = var.node_count

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    # containerd on Ubuntu: CRIU can be installed, and containerd's restore
    # switched on, by the node setup DaemonSet (node-setup.tf).
    image_type      = var.node_image_type
    machine_type    = var.machine_type
    labels          = local.node_pool_label
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    shielded_instance_config {
      enable_secure_boot = true
    }
  }
}

provider "kubernetes" {
  host                   = local.endpoint
  token                  = data.google_client_config.current.access_token
  cluster_ca_certificate = local.cluster_ca
}

provider "helm" {
  kubernetes {
    host                   = local.endpoint
    token                  = data.google_client_config.current.access_token
    cluster_ca_certificate = local.cluster_ca
  }
}

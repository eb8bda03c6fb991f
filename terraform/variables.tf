variable "project_id" {
  description = "Google Cloud project the cluster, its network and the checkpoint registry are created in."
  type        = string
}

variable "region" {
  description = "Region of the network and the Artifact Registry repository for checkpoint images."
  type        = string
  default     = "europe-west1"
}

variable "location" {
  description = "Where the cluster runs: a zone (one control plane, cheapest) or a region (nodes in every zone of it)."
  type        = string
  default     = "europe-west1-b"
}

variable "cluster_name" {
  description = "Name of the GKE cluster; also prefixes the network, service accounts and registry."
  type        = string
  default     = "ms2m"

  validation {
    # It prefixes service account ids, which are at most 30 characters:
    # the longest, "<cluster_name>-ckpt-push" (registry.tf), leaves 20.
    condition     = can(regex("^[a-z][-a-z0-9]{0,19}$", var.cluster_name))
    error_message = "cluster_name must be a lowercase name of at most 20 characters (it prefixes service account ids, which are at most 30)."
  }
}

variable "kubernetes_version" {
  description = "Minimum Kubernetes version of the control plane (and nodes), e.g. \"1.33\". 1.30 or later: the kubelet's checkpoint API (ContainerCheckpoint) is on by default from 1.30, and GKE does not let node pools set kubelet feature gates. Restore also needs the nodes' containerd to be 2.1 to 2.3, and GKE picks it by version (1.33 nodes run containerd 2.0, which cannot restore): the node setup warns, and the agent labels such nodes ms2m.io/checkpoint-restore=false."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.(3[0-9]|[4-9][0-9])(\\..*)?$", var.kubernetes_version))
    error_message = "kubernetes_version must be 1.30 or later: older kubelets have the ContainerCheckpoint feature gate off."
  }
}

variable "release_channel" {
  description = "GKE release channel (RAPID, REGULAR, STABLE): how the cluster is upgraded past kubernetes_version."
  type        = string
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "node_count" {
  description = "Nodes in the checkpoint/restore node pool (per zone of location). A migration needs at least two: the source and the target."
  type        = number
  default     = 3

  validation {
    condition     = var.node_count >= 2
    error_message = "node_count must be at least 2: a pod migrates to another node."
  }
}

variable "machine_type" {
  description = "Machine type of the checkpoint/restore nodes. Checkpointing briefly needs memory and disk for a copy of the process's memory."
  type        = string
  default     = "e2-standard-4"
}

variable "node_image_type" {
  description = "Node image of the checkpoint/restore pool. Only UBUNTU_CONTAINERD: the node setup installs CRIU with apt, and Container-Optimized OS (COS_CONTAINERD) has no package manager and a read-only root filesystem."
  type        = string
  default     = "UBUNTU_CONTAINERD"

  validation {
    condition     = var.node_image_type == "UBUNTU_CONTAINERD"
    error_message = "node_image_type must be UBUNTU_CONTAINERD: CRIU cannot be installed on COS_CONTAINERD nodes."
  }
}

variable "criu_apt_source" {
  description = "Where the node setup installs CRIU from: an Ubuntu PPA (the CRIU project's own, newer than Ubuntu's) or \"ubuntu\" for the distribution's package."
  type        = string
  default     = "ppa:criu/ppa"
}

variable "criu_tcp_close" {
  description = "Whether the node setup adds tcp-close to /etc/criu/runc.conf: a checkpoint may then hold connected TCP sockets, restored closed (the app sees them drop), where CRIU refuses such a checkpoint by default. Apps that close their connections on the sidecar's quiesce call (ms2m.io/app-quiesce-path) need neither. The agent labels each node with what its CRIU configuration does (ms2m.io/criu-connected-tcp)."
  type        = bool
  default     = true
}

variable "node_setup_image" {
  description = "Image of the node setup DaemonSet's init container, which needs only a shell and nsenter: it installs CRIU on the node and enables restore in containerd's config.toml (enable_experimental_restore_via_create, enable_criu), then restarts containerd. Every command, awk included, runs on the host."
  type        = string
  default     = "gke.gcr.io/debian-base:bookworm-v1.0.0-gke.1"
}

variable "ms2m_image_repository" {
  description = "Repository of the ms2m image (manager, agent and replay sidecar)."
  type        = string
  default     = "ghcr.io/ms2m/ms2m"
}

variable "ms2m_image_tag" {
  description = "Tag of the ms2m image; empty: the chart's appVersion (v0.1.0)."
  type        = string
  default     = ""
}

variable "chart_path" {
  description = "Path of the ms2m Helm chart; empty: charts/ms2m of this repository."
  type        = string
  default     = ""
}

variable "kubelet_insecure_tls" {
  description = "Have the agent skip verifying its kubelet's serving certificate (the chart's agent.kubelet.insecureTLS). The agent only calls its own node's kubelet. Set false where the kubelets' serving certificates are signed by the cluster CA."
  type        = bool
  default     = true
}

variable "checkpoint_image_ttl_days" {
  description = "Artifact Registry deletes checkpoint images older than this many days. A checkpoint image holds the whole memory of the migrated process (docs/security.md): keep it short."
  type        = number
  default     = 1

  validation {
    condition     = var.checkpoint_image_ttl_days >= 1
    error_message = "checkpoint_image_ttl_days must be at least 1."
  }
}

variable "deletion_protection" {
  description = "Protect the cluster from `terraform destroy`. Off by default: this is a quick-start cluster."
  type        = bool
  default     = false
}

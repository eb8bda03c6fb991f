output "cluster_name" {
  description = "Name of the GKE cluster."
  value       = google_container_cluster.ms2m.name
}

output "get_credentials" {
  description = "Command that adds the cluster to your kubeconfig (needs gcloud and gke-gcloud-auth-plugin)."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.ms2m.name} --location ${var.location} --project ${var.project_id}"
}

output "kubeconfig" {
  description = "A kubeconfig for the cluster; authenticates with gke-gcloud-auth-plugin (your gcloud login), so it holds no secret. terraform output -raw kubeconfig > ms2m.kubeconfig"
  value = yamlencode({
    apiVersion        = "v1"
    kind              = "Config"
    "current-context" = var.cluster_name
    clusters = [{
      name = var.cluster_name
      cluster = {
        server                       = local.endpoint
        "certificate-authority-data" = google_container_cluster.ms2m.master_auth[0].cluster_ca_certificate
      }
    }]
    contexts = [{
      name    = var.cluster_name
      context = { cluster = var.cluster_name, user = var.cluster_name, namespace = "default" }
    }]
    users = [{
      name = var.cluster_name
      user = {
        exec = {
          apiVersion         = "client.authentication.k8s.io/v1beta1"
          command            = "gke-gcloud-auth-plugin"
          provideClusterInfo = true
          installHint        = "Install gke-gcloud-auth-plugin: gcloud components install gke-gcloud-auth-plugin"
        }
      }
    }]
  })
}

output "checkpoint_image_repository" {
  description = "Where the agents push checkpoint images (the chart's checkpointImageRepository)."
  value       = local.checkpoint_image_repository
}

output "scheduler_name" {
  description = "spec.schedulerName for migratable workloads: the second kube-scheduler that consults the ms2m extender."
  value       = "ms2m-scheduler"
}

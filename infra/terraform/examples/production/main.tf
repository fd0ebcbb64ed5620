# Example root: the whole stack in one project and region.
#   terraform init && terraform validate && terraform plan -var-file=production.tfvars

terraform {
  required_version = ">= 1.5"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 5.30"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

module "envelope_router" {
  source = "../../modules/envelope-router"

  project_id         = var.project_id
  region             = var.region
  image              = var.image
  network            = var.network
  subnetwork         = var.subnetwork
  firestore_location = var.firestore_location
  fcm_project_id     = var.fcm_project_id
  mqtt_url           = var.mqtt_url
}

output "edge_url" {
  description = "Where clients connect."
  value       = module.envelope_router.edge_url
}

variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the services and Memorystore."
  type        = string
  default     = "europe-west1"
}

variable "image" {
  description = "The envelope-router image (Artifact Registry)."
  type        = string
}

variable "network" {
  description = "VPC network for Direct VPC egress to Memorystore."
  type        = string
  default     = "default"
}

variable "subnetwork" {
  description = "Subnetwork of var.network in var.region."
  type        = string
  default     = "default"
}

variable "firestore_location" {
  description = "Firestore location for device tokens."
  type        = string
  default     = "eur3"
}

variable "fcm_project_id" {
  description = "Firebase project id; empty disables FCM."
  type        = string
  default     = ""
}

variable "mqtt_url" {
  description = "MQTT broker URL; empty disables the MQTT ingestor."
  type        = string
  default     = ""
}

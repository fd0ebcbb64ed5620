variable "project_id" {
  description = "Google Cloud project that hosts every resource."
  type        = string
}

variable "region" {
  description = "Region of the Cloud Run services and the Memorystore instance (e.g. europe-west1)."
  type        = string
}

variable "image" {
  description = "Container image built from infra/docker/Dockerfile (Artifact Registry URL with tag or digest)."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource name, so several environments can share a project."
  type        = string
  default     = "envelope-router"
}

variable "network" {
  description = "Self link or name of the VPC network Cloud Run egresses into (Direct VPC egress) to reach Memorystore."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork in var.region for Cloud Run's Direct VPC egress."
  type        = string
}

variable "redis_memory_size_gb" {
  description = "Memorystore for Redis capacity in GiB."
  type        = number
  default     = 5
}

variable "redis_tier" {
  description = "Memorystore tier: STANDARD_HA (replicated, recommended) or BASIC."
  type        = string
  default     = "STANDARD_HA"
}

variable "firestore_location" {
  description = "Location of the Firestore database that holds device tokens (e.g. eur3, nam5, or a region)."
  type        = string
}

variable "create_firestore_database" {
  description = "Create the (default) Firestore database; set false when the project already has one."
  type        = bool
  default     = true
}

variable "edge_min_instances" {
  description = "Minimum instances of the api+delivery service (WebSocket edge)."
  type        = number
  default     = 1
}

variable "edge_max_instances" {
  description = "Maximum instances of the api+delivery service."
  type        = number
  default     = 20
}

variable "processor_min_instances" {
  description = "Minimum instances of the processor; at least 1, so the ingress subscription is always consumed."
  type        = number
  default     = 1
  validation {
    condition     = var.processor_min_instances >= 1
    error_message = "The processor needs at least one instance: nothing else consumes envelope-ingress."
  }
}

variable "processor_max_instances" {
  description = "Maximum instances of the processor."
  type        = number
  default     = 10
}

variable "mqtt_url" {
  description = "Broker URL of the MQTT ingestor (mqtt:// or mqtts://); empty disables the ingest-mqtt service."
  type        = string
  default     = ""
}

variable "fcm_project_id" {
  description = "Firebase project id for FCM wake-ups; empty disables FCM."
  type        = string
  default     = ""
}

variable "apns" {
  description = "APNs settings: key id, team id, bundle id (topic) and environment (production or sandbox); null disables APNs. The .p8 key goes into the apns-key secret."
  type = object({
    key_id      = string
    team_id     = string
    topic       = string
    environment = string
  })
  default = null
}

variable "max_delivery_attempts" {
  description = "Delivery attempts of an envelope on envelope-ingress before it is parked on the dead-letter topic."
  type        = number
  default     = 5
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}

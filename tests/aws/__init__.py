"""AWS provisioning roles and playbooks against a real moto server."""

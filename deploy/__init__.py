"""Deployment: the local stack (`make up`), gunicorn settings, and the Docker image."""

"""Deployment files and their renderer: one settings table (settings.py) renders the Nuclio function
configs, the compose override and the Kubernetes manifests (render.py)."""

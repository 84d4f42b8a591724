"""Talking to CVAT: its REST API (client, auth), datasets exported from it, and annotations sent back."""

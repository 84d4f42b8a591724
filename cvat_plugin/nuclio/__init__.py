"""Talking to Nuclio: its dashboard API, and publishing a model as a detector function."""

"""Small helpers for the project's shell scripts."""

"""The annotation stage."""

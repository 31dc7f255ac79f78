"""The validation stage."""

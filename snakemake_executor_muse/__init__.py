"""Placeholder while the plugin is written."""

"""Integrations of spargering.attention into model libraries (`integrations.transformers`)."""

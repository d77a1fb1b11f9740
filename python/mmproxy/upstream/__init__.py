"""Clients for upstream providers."""

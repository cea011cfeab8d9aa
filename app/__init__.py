"""Shipshape."""

"""Tests for the bridge building blocks."""

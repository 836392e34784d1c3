"""Stress scripts run on demand, and the machinery they share with the tests."""

"""Segments: saved audiences chosen by rules over contacts and their funnel history."""

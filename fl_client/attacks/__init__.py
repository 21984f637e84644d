"""Simulated malicious clients: data attacks (before local training) and update attacks (after it)."""

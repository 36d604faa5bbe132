"""Derived events: patterns in the clicks and links (milestones, spikes, suspicious traffic, failing and blocked links)."""

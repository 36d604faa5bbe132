"""Derived events: milestones, spikes, suspicious traffic, failing and blocked links (docs/webhooks.md)."""

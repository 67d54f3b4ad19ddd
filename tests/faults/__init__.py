"""A randomized, seeded fault campaign against the whole order stack (see campaign.py)."""

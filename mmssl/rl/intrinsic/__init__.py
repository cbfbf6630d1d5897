"""Intrinsic rewards, registered in ``mmssl.registry.INTRINSIC_REWARDS`` (watch → compute → update)."""

"""SimBridge: the relay between a host phone holding SIM cards and its paired clients."""

__version__ = "0.1.0"

"""A simulated phone: a host that answers commands like an Android phone, and a small client."""

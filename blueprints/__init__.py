"""One blueprint per area of the API; each module exposes `bp`, registered by `create_app`."""

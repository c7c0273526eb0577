"""Use-cases: what the blueprints ask for. They raise `simbridge.errors`, never import Sanic."""

"""HTTP glue shared by the blueprints: authentication, body parsing, errors, app lifecycle."""

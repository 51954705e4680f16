"""The web layer: Flask views, their input checks, and the streamed response (the relay)."""

"""``python -m ingest``: the ingest stage alone (same as ``citysense ingest``)."""

from citysense.cli import app

if __name__ == "__main__":
    app(["ingest"])

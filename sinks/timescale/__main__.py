"""``python -m sinks.timescale``: the sink stage alone (same as ``citysense sink``)."""

from citysense.cli import app

if __name__ == "__main__":
    app(["sink"])

"""The canonical measurement as plain JSON data (``citysense decode`` and the simulator)."""

from __future__ import annotations

from typing import Any

from decoders._model import Decoded

__all__ = ["decoded_as_json"]


def decoded_as_json(decoded: Decoded) -> dict[str, Any]:
    """``{"codec", "kind", "values", "counts", "regions", "partial"}`` (+ ``observed_at``)."""
    data: dict[str, Any] = {
        "codec": decoded.codec,
        "kind": decoded.kind,
        "values": dict(decoded.values),
        "counts": [
            {
                "line": c.line,
                "direction": c.direction,
                "class": c.traffic_class,
                "count": c.count,
                "cumulative": c.cumulative,
            }
            for c in decoded.counts
        ],
        "regions": [{"region": r.region, "count": r.count} for r in decoded.regions],
        "partial": decoded.partial,
    }
    if decoded.observed_at is not None:
        data["observed_at"] = decoded.observed_at.isoformat()
    return data

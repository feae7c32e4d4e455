"""One module per payload format; each registers its codec on import."""

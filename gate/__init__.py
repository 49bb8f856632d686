"""facegate streaming gate: cameras → faces → tracks → best frame per track → Redis Streams."""

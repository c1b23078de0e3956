"""From text to scores: checkpoint resolution, pair encoding, length-aware batching."""

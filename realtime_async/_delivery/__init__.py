"""The delivery side, inside each web server: the fan-out hub, its pub/sub fast path, feeds and limits."""

"""What the web pages show: display rules and the shared HTTP answers."""
